"""schemathesis against the running mock: every operation keeps to the merged OpenAPI contract.

One `schemathesis run` subprocess tests every operation of the mock's
GET /openapi.json in four phases: the contract's examples, coverage
(boundary and invalid values of each parameter and body), fuzzing, and
stateful sequences that feed one response into the next request. It runs
once per module against its own mock, whose quotas are lifted so that no
generated request is throttled, and writes a JUnit report. Each operation
is then its own test, which fails with schemathesis' account of that
operation: the failed check, the response and a curl command to reproduce it.

tests/schemathesis_hooks.py sends a machine token to every API that accepts
one and a user token to the others. The token endpoint gets no bearer
token, because its clients authenticate with their id and secret.

schemathesis reads a copy of the served document with two changes: LINKS
for the stateful phase, and the bearer token described as an http bearer
scheme (see `_use_http_bearer`). The copy, the config file, the reports and
schemathesis' whole output stay in pytest's temporary folder.

Generation is repeatable: one seed, one worker, no example database and no
cache from earlier runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from mockflock.config import DEMO_CONFIG, parse_config
from mockflock.openapi import load_openapi
from mockflock.server import MockServer, ServerOptions

SEED = 20240611
# Examples per operation in the fuzzing phase. The coverage phase sends as
# many requests as each operation's boundary values need, independent of this.
MAX_EXAMPLES = 50
# Hypothesis examples of the stateful phase, and requests in each. A run
# completes fewer scenarios than this: 73 when only the stateful phase ran,
# and fewer when it meets a failure that an earlier phase already reported.
STATEFUL_MAX_EXAMPLES = 400
STATEFUL_MAX_STEPS = 20
REQUEST_TIMEOUT = 10
RUN_TIMEOUT = 900
PHASES = ("examples", "coverage", "fuzzing", "stateful")

HOOKS_MODULE = "schemathesis_hooks"
MACHINE_CLIENT = {
    "client_id": "demo-machine",
    "client_secret": "demo-machine-secret",
    "audience": "com.flocksafety.integrations",
}
USER_CLIENT = {"client_id": "demo-user-app", "client_secret": "demo-user-secret"}
USER_LOGIN = "demo-admin"
REDIRECT_URI = "http://127.0.0.1:8400/callback"
USER_SCOPE = "plate-reads:search"
OAUTH_SCHEME = "flockOAuth"
BEARER_SCHEME = "flockBearer"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# positive_data_acceptance expects a schema-valid request to get one of
# these statuses: 404 and 409 because generated ids rarely exist and may
# collide. 401 and 403 are not accepted, because every request carries a
# valid token, and neither is 429, because quotas are lifted.
POSITIVE_ACCEPTED = ["2xx", 404, 409]
# Per operation, the statuses that its contract documents for a rule that a
# JSON Schema cannot state. positive_data_acceptance accepts them too.
SEMANTIC_REJECTIONS: dict[str, list[int]] = {
    # A generated client (401), audience (403), code, refresh token or
    # scope (400) is never valid.
    "requestToken": [400, 401, 403],
    # The area filter needs latitude, longitude and radius together.
    "listDevices": [422],
    # cursor must be the nextPage of an earlier page.
    "listHotlistEntries": [400],
    # An explicit end must not be before start.
    "listCadEvents": [400],
    # subjectId must name a tracked subject.
    "createAlert": [400],
    # As for createAlert: subjectId must name a tracked subject, and an
    # alert without one needs a location.
    "updateAlert": [400],
    # The subject's type and subtype must be registered under /geo/types.
    "upsertSubject": [400],
    # A range whose start is after its end.
    "lookupReads": [422],
    # A network id that the user may not access (403), a range whose start
    # is after its end (422).
    "searchReads": [403, 422],
}

# Operations whose test fails for a known reason, which the reason names.
# Their tests are strict xfails, so an entry must go once its cause is fixed.
KNOWN_FAILURES: dict[str, str] = {}

# OpenAPI links for the stateful phase, added to the test's copy of the
# contract: a created record's id goes into the operations that take it.
# (operation, response status, target operation, {path parameter: runtime expression})
LINKS: list[tuple[str, str, str, dict[str, str]]] = [
    *[
        ("createHotlist", "201", target, {"hotlistId": "$response.body#/id"})
        for target in (
            "getHotlist", "updateHotlist", "deleteHotlist",
            "listHotlistEntries", "addHotlistEntries", "deleteHotlistEntries",
        )
    ],
    *[
        ("createDevice", "201", target, {"deviceId": "$response.body#/id"})
        for target in ("getDevice", "updateDevice", "decommissionDevice", "uploadVehicleImages")
    ],
    *[
        ("createAlert", "200", target, {"alertId": "$response.body#/id"})
        for target in ("getAlert", "updateAlert", "closeAlert")
    ],
    *[
        ("createSubscription", "201", target, {"id": "$response.body#/id"})
        for target in ("getSubscription", "deleteSubscription")
    ],
    *[
        ("upsertCadEvent", "200", target, {"externalId": "$response.body#/externalId"})
        for target in ("getCadEvent", "openCadEvent", "closeCadEvent", "appendCadNarrative")
    ],
    *[
        ("upsertSubject", "200", target, {"externalSubjectId": "$response.body#/externalId"})
        for target in ("getSubject", "disableSubject")
    ],
    ("createSubjectType", "200", "deleteSubjectType", {"typeId": "$response.body#/id"}),
    ("lookupReads", "200", "getLookupPage", {"pageId": "$response.body#/nextPageId"}),
]

# Values that reach the demo organization's seeded license plate reads
# (mockflock/seed.yaml), so that lookups and searches return reads, and a
# lookup returns page ids, instead of empty pages. schemathesis picks a
# value from the dictionary with the given probability.
DICTIONARIES = {
    "demo-plates": ["DEMO123", "DEMO128", "8HRB442", "6TRK908", "FNA579"],
    "demo-plate-patterns": ["DEMO12*", "DEMO123", "*442", "6TRK*"],
    "wide-range-start": ["2000-01-01T00:00:00Z"],
    "wide-range-end": ["2100-01-01T00:00:00Z"],
}
DATE_RANGE = {
    "body.startDate": {"dictionary": "wide-range-start", "probability": 0.7},
    "body.endDate": {"dictionary": "wide-range-end", "probability": 0.7},
}
PARAMETERS: dict[str, dict[str, Any]] = {
    "lookupReads": {"body.plate": {"dictionary": "demo-plates", "probability": 0.5}, **DATE_RANGE},
    "searchReads": {"body.plate": {"dictionary": "demo-plate-patterns", "probability": 0.5}, **DATE_RANGE},
}


def _operation_labels() -> list[str]:
    document = load_openapi([{"url": "http://127.0.0.1"}])
    return sorted(
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in HTTP_METHODS
        if method in item
    )


OPERATION_LABELS = _operation_labels()


@dataclass
class Outcome:
    """The failures and errors that the JUnit report records for one label, usually an operation."""

    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Run:
    returncode: int
    output_path: Path
    report: dict[str, Any]
    outcomes: dict[str, Outcome]


@pytest.fixture(scope="module")
def contract_server() -> Iterator[MockServer]:
    """A mock of its own for schemathesis, with quotas lifted so that no generated request is throttled."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    raw["quotas"] = {"enabled": False}
    config = parse_config(raw, source="the demo configuration with quotas lifted")
    options = ServerOptions(ports={"production": 0, "development": 0}, log_level="warning")
    mock = MockServer(config=config, options=options).start()
    yield mock
    mock.stop()


def _machine_token(base_url: str) -> str:
    form = {"grant_type": "client_credentials", **MACHINE_CLIENT}
    response = httpx.post(base_url + "/oauth/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _user_token(base_url: str) -> str:
    """Fetch a user token through /authorize (headless: login_hint and auto-consent) and the code grant, with PKCE."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": USER_CLIENT["client_id"],
        "redirect_uri": REDIRECT_URI,
        "scope": USER_SCOPE,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "login_hint": USER_LOGIN,
    }
    redirect = httpx.get(base_url + "/authorize", params=query)
    assert redirect.status_code == 302, redirect.text
    answer = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert answer.get("state") == [state], answer
    assert "code" in answer, answer

    form = {
        "grant_type": "authorization_code",
        "code": answer["code"][0],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **USER_CLIENT,
    }
    response = httpx.post(base_url + "/oauth/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _add_links(document: dict[str, Any]) -> None:
    operations = {
        operation["operationId"]: operation
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }
    for source, status, target, parameters in LINKS:
        response = operations[source]["responses"][status]
        assert "$ref" not in response, f"{source} {status} is a reference; add its links where it is defined"
        response.setdefault("links", {})[target] = {"operationId": target, "parameters": parameters}


def _use_http_bearer(document: dict[str, Any]) -> None:
    """Describe the bearer token as an http bearer scheme instead of oauth2, in the test's copy.

    schemathesis' ignored_auth check (4.32) probes only apiKey and http
    schemes and passes oauth2 operations without sending a probe. Both
    schemes send the same Authorization: Bearer header.
    """
    document["components"]["securitySchemes"][BEARER_SCHEME] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for item in document["paths"].values():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            operation["security"] = [
                {BEARER_SCHEME: []} if OAUTH_SCHEME in requirement else requirement
                for requirement in operation.get("security", [])
            ]


def _toml(value: Any) -> str:
    """Return `value` as a TOML value. Strings, numbers, lists and inline tables are all that the config needs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(key)} = {_toml(item)}" for key, item in value.items()) + " }"
    return json.dumps(value)


def _config_file(path: Path) -> Path:
    lines = [
        f"seed = {SEED}",
        "workers = 1",
        f"request-timeout = {REQUEST_TIMEOUT}",
        "[cache]",
        "enabled = false",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        'database = "none"',
        "[phases.stateful]",
        f"max-steps = {STATEFUL_MAX_STEPS}",
        "[phases.stateful.generation]",
        f"max-examples = {STATEFUL_MAX_EXAMPLES}",
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {_toml(POSITIVE_ACCEPTED)}",
    ]
    for name, values in DICTIONARIES.items():
        lines += [f"[dictionaries.{name}]", f"values = {_toml(values)}"]
    for operation_id in sorted(SEMANTIC_REJECTIONS.keys() | PARAMETERS.keys()):
        lines += ["[[operations]]", f"include-operation-id = {_toml(operation_id)}"]
        if operation_id in SEMANTIC_REJECTIONS:
            statuses = POSITIVE_ACCEPTED + SEMANTIC_REJECTIONS[operation_id]
            lines.append(f"checks.positive_data_acceptance.expected-statuses = {_toml(statuses)}")
        if operation_id in PARAMETERS:
            lines.append(f"parameters = {_toml(PARAMETERS[operation_id])}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read_junit(path: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome = outcomes.setdefault(case.get("name", ""), Outcome())
        outcome.failures += [element.text or element.get("message", "") for element in case.findall("failure")]
        outcome.errors += [element.text or element.get("message", "") for element in case.findall("error")]
    return outcomes


@pytest.fixture(scope="module")
def run(contract_server: MockServer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("schemathesis")
    base_url = contract_server.url("production")
    document = httpx.get(base_url + "/openapi.json").json()
    _add_links(document)
    _use_http_bearer(document)
    schema_path = folder / "openapi.json"
    schema_path.write_text(json.dumps(document), encoding="utf-8")

    tokens = {"machine": _machine_token(base_url), "user": _user_token(base_url)}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
        "SCHEMATHESIS_HOOKS": HOOKS_MODULE,
        "MOCKFLOCK_SCHEMATHESIS_TOKENS": json.dumps(tokens),
        "MOCKFLOCK_SCHEMATHESIS_CLIENT": json.dumps(MACHINE_CLIENT),
        "NO_PROXY": "127.0.0.1",
    }
    junit_path = folder / "junit.xml"
    json_path = folder / "report.json"
    command = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(_config_file(folder / "schemathesis.toml")),
        "run", str(schema_path),
        "--url", base_url,
        "--checks", "all",
        "--phases", ",".join(PHASES),
        "--no-color",
        "--report", "junit,json",
        "--report-junit-path", str(junit_path),
        "--report-json-path", str(json_path),
    ]
    completed = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    output_path = folder / "output.txt"
    output_path.write_text(completed.stdout + completed.stderr, encoding="utf-8")
    assert json_path.exists(), f"schemathesis wrote no report; its output:\n{completed.stdout}\n{completed.stderr}"
    return Run(
        returncode=completed.returncode,
        output_path=output_path,
        report=json.loads(json_path.read_text(encoding="utf-8")),
        outcomes=_read_junit(junit_path),
    )


def test_run_tests_every_operation(run: Run) -> None:
    report = run.report
    # Exit code 0 means no failure and 1 means failures, which the tests below report. Others are errors.
    assert run.returncode in (0, 1), f"schemathesis exited with {run.returncode}; see {run.output_path}"
    assert report["complete"], f"the run stopped early ({report['stop_reason']}); see {run.output_path}"
    assert report["errors"] == [], f"errors during the run; see {run.output_path}"
    assert report["operations"]["tested"] == len(OPERATION_LABELS)
    for phase in PHASES:
        assert report["phases"][phase]["status"] in ("success", "failure"), (phase, report["phases"][phase])


def _operation_params() -> list[Any]:
    return [
        pytest.param(label, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[label], strict=True))
        if label in KNOWN_FAILURES
        else label
        for label in OPERATION_LABELS
    ]


@pytest.mark.parametrize("label", _operation_params())
def test_operation_keeps_contract(run: Run, label: str) -> None:
    outcome = run.outcomes.get(label, Outcome())
    where = f"schemathesis' whole output: {run.output_path}"
    if outcome.errors:
        pytest.fail(f"schemathesis could not test {label}. {where}\n\n" + "\n\n".join(outcome.errors), pytrace=False)
    if outcome.failures:
        pytest.fail(f"{label} breaks its contract. {where}\n\n" + "\n\n".join(outcome.failures), pytrace=False)


def test_no_failure_outside_operations(run: Run) -> None:
    """Check the labels that are not operations, such as the "Stateful tests" of the JUnit report."""
    others = {
        label: outcome
        for label, outcome in run.outcomes.items()
        if label not in OPERATION_LABELS and (outcome.failures or outcome.errors)
    }
    if others:
        text = "\n\n".join(f"{label}:\n" + "\n\n".join(o.failures + o.errors) for label, o in others.items())
        pytest.fail(f"schemathesis' whole output: {run.output_path}\n\n{text}", pytrace=False)
