"""Merge the OpenAPI documents under contracts/openapi/ into one document.

`_common.yaml` is the frame of the merged document: info, security schemes,
the error envelope and the schemas that several APIs share. Every other file
contains one API, or the token endpoint, and names one relative server URL:
`/api/v3` for a v3 API, `/` for the token endpoint. The merger prefixes each
file's paths with that URL and copies its components and tags as they are,
so every `$ref` stays a reference into `#/components` of the merged document.

The OAuth flow URLs are the one thing the loader rewrites: `_common.yaml`
gives them relative to the host, and the OpenAPI 3.1 meta-schema requires
absolute URLs, so `load_openapi` joins them to the first server URL.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from mockflock.config import load_environment_specs
from mockflock.contracts import contracts_dir
from mockflock.errors import ContractError

logger = logging.getLogger(__name__)

COMMON_FILE = "_common.yaml"
OPENAPI_VERSION_PREFIX = "3.1."
# Top-level keys that an API file may have. The merger drops info and
# servers, and rejects any other key rather than lose it silently.
API_FILE_KEYS = frozenset({"openapi", "info", "servers", "tags", "paths", "components"})
FLOW_URL_KEYS = ("authorizationUrl", "tokenUrl", "refreshUrl")


def load_openapi(servers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return the merged OpenAPI 3.1 document of mockflock's contracts.

    `servers` becomes the document's server list, `default_servers()` when it
    is None. The first server needs an absolute URL, because the OAuth flow
    URLs are joined to it. Every call returns a new dict, so the caller may
    change it.
    """
    document = json.loads(_merged_json(contracts_dir() / "openapi"))
    document["servers"] = json.loads(json.dumps(default_servers() if servers is None else servers))
    _join_flow_urls(document)
    return document


def default_servers() -> list[dict[str, str]]:
    """Return one server per environment, at its default local port, in the order of environments.yaml."""
    return [
        {
            "url": f"http://127.0.0.1:{spec.default_port}",
            "description": f"mockflock's {spec.name} environment on its default port (audience {spec.audience})",
        }
        for spec in load_environment_specs().values()
    ]


def _join_flow_urls(document: dict[str, Any]) -> None:
    """Make the host-relative OAuth flow URLs absolute, based on the first server URL."""
    servers = document["servers"]
    base = str(servers[0].get("url", "")) if servers and isinstance(servers[0], dict) else ""
    if urlsplit(base).scheme not in ("http", "https"):
        raise ValueError(
            f"The first server URL {base!r} is not absolute. Pass an absolute http(s) URL "
            f"such as http://127.0.0.1:8080, because the OAuth flow URLs are joined to it."
        )
    for scheme in document["components"].get("securitySchemes", {}).values():
        for flow in scheme.get("flows", {}).values():
            for key in FLOW_URL_KEYS:
                if str(flow.get(key, "")).startswith("/"):
                    flow[key] = base.rstrip("/") + flow[key]


@functools.cache
def _merged_json(folder: Path) -> str:
    return json.dumps(merge_openapi(folder))


def merge_openapi(folder: Path) -> dict[str, Any]:
    """Merge `_common.yaml` and every other `*.yaml` in `folder`, raising `ContractError` on any flaw.

    The result has no servers and host-relative OAuth flow URLs, so it is not
    valid OpenAPI 3.1 until `load_openapi` adds both.
    """
    merged = _read(folder / COMMON_FILE)
    merged.setdefault("paths", {})
    merged.setdefault("tags", [])
    merged.setdefault("components", {})
    origins: dict[tuple[str, str], str] = {}

    api_files = sorted(path for path in folder.glob("*.yaml") if path.name != COMMON_FILE)
    if not api_files:
        raise ContractError(f"No OpenAPI documents besides {COMMON_FILE} in {folder}")
    for path in api_files:
        _merge_file(merged, _read(path), path.name, origins)

    _check_references(merged)
    logger.debug("Merged %d OpenAPI documents from %s into %d paths", len(api_files), folder, len(merged["paths"]))
    return merged


def _read(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"Cannot read the OpenAPI document {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ContractError(f"The OpenAPI document {path} is not a mapping")
    version = str(document.get("openapi", ""))
    if not version.startswith(OPENAPI_VERSION_PREFIX):
        raise ContractError(f"{path.name} has openapi={version!r}, expected an OpenAPI 3.1 version such as 3.1.0")
    _check_json_values(document, path.name)
    # The JSON round trip gives every YAML alias its own copy, so that a
    # change to one place of the merged document cannot show up in another.
    return json.loads(json.dumps(document))


def _check_json_values(node: Any, where: str) -> None:
    """Raise `ContractError` on YAML values that JSON cannot represent, such as an unquoted status code key."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise ContractError(
                    f"{where}: the key {key!r} is a {type(key).__name__}, not a string. Quote it in the YAML."
                )
            _check_json_values(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _check_json_values(item, f"{where}[{index}]")
    elif node is not None and not isinstance(node, (str, int, float, bool)):
        raise ContractError(
            f"{where}: the value {node!r} is a {type(node).__name__}, which JSON cannot represent. Quote it in the YAML."
        )


def _merge_file(merged: dict[str, Any], document: dict[str, Any], name: str, origins: dict[tuple[str, str], str]) -> None:
    unknown = sorted(set(document) - API_FILE_KEYS)
    if unknown:
        raise ContractError(
            f"{name} has top-level keys {unknown} that the merger does not copy. Move them into paths or components."
        )

    prefix = _path_prefix(document, name)
    for template, item in (document.get("paths") or {}).items():
        if not template.startswith("/"):
            raise ContractError(f"{name}: the path {template!r} does not start with '/'")
        full_path = prefix + template
        if full_path in merged["paths"]:
            raise ContractError(f"{name}: the path {full_path} is already defined by another document")
        merged["paths"][full_path] = item

    for section, entries in (document.get("components") or {}).items():
        target = merged["components"].setdefault(section, {})
        for entry_name, entry in entries.items():
            key = (section, entry_name)
            if entry_name in target:
                first = origins.get(key, COMMON_FILE)
                raise ContractError(
                    f"{name}: components.{section}.{entry_name} is already defined in {first}. "
                    f"Define it once, in {COMMON_FILE} if several documents use it."
                )
            target[entry_name] = entry
            origins[key] = name

    known_tags = {tag["name"] for tag in merged["tags"]}
    for tag in document.get("tags") or []:
        if tag["name"] in known_tags:
            raise ContractError(f"{name}: the tag {tag['name']!r} is already defined by another document")
        merged["tags"].append(tag)
        known_tags.add(tag["name"])


def _path_prefix(document: dict[str, Any], name: str) -> str:
    """Return the path of the file's one relative server URL, without a trailing '/'."""
    servers = document.get("servers")
    if not isinstance(servers, list) or len(servers) != 1 or not isinstance(servers[0], dict):
        raise ContractError(f"{name} must name exactly one server, such as `servers: [{{url: /api/v3}}]`")
    url = str(servers[0].get("url", ""))
    if not url.startswith("/"):
        raise ContractError(f"{name} has the server URL {url!r}, expected a path on the host such as /api/v3")
    return url.rstrip("/")


def _check_references(document: dict[str, Any]) -> None:
    missing = sorted({ref for ref in _references(document) if not _resolves(document, ref)})
    if missing:
        raise ContractError(f"The merged OpenAPI document has unresolved references: {', '.join(missing)}")


def _references(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.append(ref)
        for value in node.values():
            found.extend(_references(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_references(item))
    return found


def _resolves(document: dict[str, Any], ref: str) -> bool:
    """Return whether `ref` is a JSON pointer into `document` that leads to a value."""
    if not ref.startswith("#/"):
        return False
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or token not in node:
            return False
        node = node[token]
    return True
