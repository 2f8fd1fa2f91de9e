"""Rules a Flock client should follow, checked over the request journal.

Each rule has a stable id and finds the journal entries where a client
broke it. It returns `Violation`s that state in one sentence what the
client did, list the requests involved and name the fix. `evaluate` runs the rules;
`format_report` turns the result into the text that `assert_no_violations`
and `mockflock verify` print.

Retry rules look only within one step of the journal (see
`Journal.begin_step`): the client checker starts a step before each call
of the app, so two calls that both fail are never taken for a retry loop.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mockflock.config import AppConfig
from mockflock.contracts import Matrix, load_matrix

if TYPE_CHECKING:
    from mockflock.server import MockServer

logger = logging.getLogger(__name__)

Entry = dict[str, Any]

# A token fetched while the client held one of the same scopes with more
# than this share of its lifetime left counts as a needless fetch. Clients
# that renew early (say at 90% of the lifetime) stay well clear of it.
REFETCH_REMAINING_SHARE = 0.5
# Consecutive 401s on one request that make a retry loop: the call and one
# retry are expected, a third attempt is not.
MAX_401_ATTEMPTS = 2
# Slack when comparing a request's arrival with a Retry-After deadline,
# for clock reads a few microseconds apart.
RETRY_AFTER_SLACK_SECONDS = 0.001
# 401 causes that a new token cannot cure: each has its own rule or fix.
NOT_REFRESHABLE = frozenset({
    "wrong_environment", "wrong_audience", "wrong_issuer", "malformed", "missing_token", "wrong_scheme",
    "several_authorization_headers", "token_in_url", "unknown_user",
})
CREDENTIAL_ENDPOINTS = frozenset({"token", "revoke", "introspect"})
LEVEL_OF_GRANT = {"client_credentials": "machine", "authorization_code": "user", "refresh_token": "user"}
MAX_LISTED_REQUESTS = 6


@dataclass(frozen=True)
class Violation:
    """One broken rule: what the client did, the requests involved, and the fix."""

    rule: str
    title: str
    message: str
    fix: str
    requests: tuple[int, ...]
    environment: str | None = None
    client_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "title": self.title, "message": self.message, "fix": self.fix,
            "requests": list(self.requests), "environment": self.environment, "client_id": self.client_id,
        }


@dataclass(frozen=True)
class RuleContext:
    """The facts the rules need besides the journal: audiences, registered apps and the access matrix."""

    audiences: dict[str, str]
    apps: dict[tuple[str, str], AppConfig]
    matrix: Matrix
    # Scopes the app's operations need, by client id ("*" for every client).
    needed_scopes: dict[str, frozenset[str]] = field(default_factory=dict)

    def app(self, environment: str | None, client_id: str | None) -> AppConfig | None:
        if environment is None or client_id is None:
            return None
        return self.apps.get((environment, client_id))

    def needed_for(self, client_id: str | None) -> frozenset[str] | None:
        if client_id in self.needed_scopes:
            return self.needed_scopes[client_id]
        return self.needed_scopes.get("*")


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    summary: str
    check: Callable[[list[Entry], RuleContext], Iterator[Violation]]


RULES: dict[str, Rule] = {}


def rule(rule_id: str, title: str, summary: str) -> Callable[[Callable[..., Iterator[Violation]]], Callable[..., Iterator[Violation]]]:
    def register(check: Callable[..., Iterator[Violation]]) -> Callable[..., Iterator[Violation]]:
        RULES[rule_id] = Rule(rule_id, title, summary, check)
        return check

    return register


def build_context(server: MockServer, *, needed_scopes: Mapping[str, Iterable[str]] | None = None) -> RuleContext:
    """Collect the audiences and current app registrations of a running server."""
    apps = {
        (env.name, app.client_id): app
        for env in server.environments.values()
        for app in env.clients.all()
    }
    return RuleContext(
        audiences={name: env.audience for name, env in server.environments.items()},
        apps=apps,
        matrix=load_matrix(),
        needed_scopes={client: frozenset(scopes) for client, scopes in (needed_scopes or {}).items()},
    )


def evaluate(entries: list[Entry], context: RuleContext, *, ignore: Iterable[str] = ()) -> list[Violation]:
    """Run every rule not in `ignore` and return the violations in journal order."""
    ignored = set(ignore)
    unknown = ignored - set(RULES)
    if unknown:
        raise ValueError(f"Unknown rule ids {sorted(unknown)}; the rules are {', '.join(RULES)}")
    found: list[Violation] = []
    for current in RULES.values():
        if current.id not in ignored:
            found.extend(current.check(entries, context))
    return sorted(found, key=lambda v: (v.requests[0] if v.requests else 0, v.rule))


# -- helpers ---------------------------------------------------------------


def _requests(entries: list[Entry]) -> list[Entry]:
    return [entry for entry in entries if entry["endpoint"] != "control"]


def _api(entries: list[Entry]) -> list[Entry]:
    return [entry for entry in entries if entry["endpoint"] == "api"]


def _client(entry: Entry) -> str:
    return entry.get("client_id") or "an unidentified client"


def _scopes(values: Iterable[str]) -> str:
    return " ".join(sorted(values)) or "(none)"


def _group(entries: Iterable[Entry], key: Callable[[Entry], Any]) -> dict[Any, list[Entry]]:
    groups: dict[Any, list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[key(entry)].append(entry)
    return groups


def _seqs(entries: Iterable[Entry]) -> tuple[int, ...]:
    return tuple(entry["seq"] for entry in entries)


def _operation_name(entry: Entry) -> str:
    return f"{entry['method']} {entry['path']}"


def _api_of(entry: Entry, matrix: Matrix) -> Any:
    api_id = entry.get("api")
    if api_id is None and entry.get("operation"):
        try:
            api_id = matrix.operation(entry["operation"]).api
        except KeyError:
            return None
    return matrix.apis.get(api_id) if api_id else None


def _same_call(entry: Entry) -> tuple[Any, ...]:
    return (entry["step"], entry["environment"], entry.get("client_id"), entry["method"], entry["path"])


# -- the rules ---------------------------------------------------------------


@rule("wrong-audience", "Wrong audience for the environment",
      "A token request names an audience other than the environment's own.")
def _wrong_audience(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    def misdirected(entry: Entry) -> bool:
        expected = context.audiences.get(entry["environment"])
        if entry["endpoint"] != "token" or expected is None:
            return False
        if entry.get("grant_type") == "client_credentials":
            return entry.get("audience") != expected
        return entry.get("audience") is not None and entry["audience"] != expected

    wrong = [entry for entry in _requests(entries) if misdirected(entry)]
    for (env, client, audience), group in _group(wrong, lambda e: (e["environment"], e.get("client_id"), e.get("audience"))).items():
        expected = context.audiences[env]
        other = next((name for name, aud in context.audiences.items() if aud == audience), None)
        if audience is None:
            what = "without an audience"
        elif other:
            what = f"with audience={audience}, which is the audience of the {other} environment"
        else:
            what = f"with audience={audience!r}, which no Flock environment uses"
        all_audiences = ", ".join(f"{name}: {aud}" for name, aud in context.audiences.items())
        yield Violation(
            rule="wrong-audience", title=RULES["wrong-audience"].title,
            message=f"{client or 'A client'} asked the {env} environment for a token {what} ({len(group)} request(s)).",
            fix=f"Send audience={expected} to the {env} token endpoint. Keep the audience next to the base URL in "
                f"the client's per-environment settings ({all_audiences}), so that one cannot change without the other.",
            requests=_seqs(group), environment=env, client_id=client,
        )


@rule("cross-environment-token", "Token of one environment sent to the other",
      "An API request carries a token that the other environment issued.")
def _cross_environment(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    def crossed(entry: Entry) -> bool:
        token = entry.get("token") or {}
        issued_by = token.get("environment")
        return entry.get("reason") == "wrong_environment" or (issued_by is not None and issued_by != entry["environment"])

    wrong = [entry for entry in _api(entries) if crossed(entry)]
    for (env, client, source), group in _group(wrong, lambda e: (e["environment"], e.get("client_id"), (e.get("token") or {}).get("environment"))).items():
        yield Violation(
            rule="cross-environment-token", title=RULES["cross-environment-token"].title,
            message=f"{client or 'A client'} sent a token issued by the {source or 'other'} environment to the "
                    f"{env} environment's API ({len(group)} request(s), first {_operation_name(group[0])}).",
            fix=f"Keep one token cache per environment, keyed by base URL and audience, and call the {env} API only "
                f"with tokens from the {env} token endpoint (audience {context.audiences.get(env)}).",
            requests=_seqs(group), environment=env, client_id=client,
        )


@rule("wrong-token-level", "Wrong token level for the API",
      "An API request carries a machine token where only user tokens work, or the reverse.")
def _wrong_level(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    def mismatched(entry: Entry) -> bool:
        if entry.get("reason") == "wrong_level":
            return True
        level = (entry.get("token") or {}).get("level")
        api = _api_of(entry, context.matrix)
        return bool(level and api and entry.get("status") in (401, 403) and not api.accepts(level))

    wrong = [entry for entry in _api(entries) if mismatched(entry)]
    for (env, client, api_id, level), group in _group(
        wrong, lambda e: (e["environment"], e.get("client_id"), e.get("api") or _api_id(e, context), (e.get("token") or {}).get("level"))
    ).items():
        api = context.matrix.apis.get(api_id) if api_id else None
        accepted = api.accepted_levels() if api else []
        name = api.name if api else "the API"
        how = {
            "user": "a user-level token from the authorization code flow, on behalf of a signed-in user",
            "machine": "a machine-level token from the client credentials grant",
        }
        fix_how = " or ".join(how[lvl] for lvl in accepted) or "no token yet: the API accepts none"
        yield Violation(
            rule="wrong-token-level", title=RULES["wrong-token-level"].title,
            message=f"{client or 'A client'} called the {name} with a {level}-level token; it accepts "
                    f"{', '.join(accepted) or 'no'}-level tokens ({len(group)} request(s), first {_operation_name(group[0])}).",
            fix=f"Call the {name} with {fix_how}. Choose the token by the API called, not one token for every API.",
            requests=_seqs(group), environment=env, client_id=client,
        )


def _api_id(entry: Entry, context: RuleContext) -> str | None:
    api = _api_of(entry, context.matrix)
    return api.id if api else None


def _requested_scopes(entry: Entry) -> frozenset[str] | None:
    if entry["endpoint"] == "token" or (entry["endpoint"] == "authorize" and entry.get("response_type")):
        return entry.get("scope")
    return None


@rule("scope-not-registered", "Scope beyond the app's registration",
      "A token or authorization request asks for a scope that the app is not registered for.")
def _scope_not_registered(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    findings: dict[tuple[str, str, frozenset[str]], list[Entry]] = defaultdict(list)
    for entry in _requests(entries):
        requested = _requested_scopes(entry)
        app = context.app(entry["environment"], entry.get("client_id"))
        if not requested or app is None:
            continue
        unknown = requested - app.scopes
        if unknown:
            findings[(entry["environment"], app.client_id, frozenset(unknown))].append(entry)
    for (env, client, unknown), group in findings.items():
        registered = context.apps[(env, client)].scopes
        yield Violation(
            rule="scope-not-registered", title=RULES["scope-not-registered"].title,
            message=f"{client} requested {_scopes(unknown)} in the {env} environment, but the app is registered "
                    f"only for {_scopes(registered)} ({len(group)} request(s)).",
            fix=f"Leave {_scopes(unknown)} out of the scope parameter, or ask Flock to add it to the app's "
                f"registration in {env} if the app really needs it.",
            requests=_seqs(group), environment=env, client_id=client,
        )


@rule("scope-not-needed", "Scope beyond what the operations need",
      "A client asks for scopes that none of the operations it calls requires.")
def _scope_not_needed(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    requests = _requests(entries)
    used: dict[tuple[str, str | None, str | None], set[str]] = defaultdict(set)
    for entry in _api(requests):
        if entry.get("operation"):
            try:
                scope = context.matrix.operation(entry["operation"]).scope
            except KeyError:
                continue
            used[(entry["environment"], entry.get("client_id"), (entry.get("token") or {}).get("level"))].add(scope)

    findings: dict[tuple[str, str | None, str | None], tuple[set[str], list[Entry]]] = {}
    for entry in requests:
        requested = _requested_scopes(entry)
        if not requested:
            continue
        level = "user" if entry["endpoint"] == "authorize" else LEVEL_OF_GRANT.get(entry.get("grant_type") or "")
        key = (entry["environment"], entry.get("client_id"), level)
        declared = context.needed_for(entry.get("client_id"))
        needed = declared if declared is not None else used.get(key)
        if needed is None:
            continue  # The client called no operation yet: nothing to compare with.
        app = context.app(entry["environment"], entry.get("client_id"))
        extra = requested - needed - ((requested - app.scopes) if app else set())
        if extra:
            scopes, group = findings.setdefault(key, (set(), []))
            scopes |= extra
            group.append(entry)
    for (env, client, level), (extra, group) in findings.items():
        declared = context.needed_for(client)
        needed = declared if declared is not None else used.get((env, client, level), set())
        source = "the operations declared for it" if declared is not None else "the operations it called"
        yield Violation(
            rule="scope-not-needed", title=RULES["scope-not-needed"].title,
            message=f"{client or 'A client'} requested {_scopes(extra)} in the {env} environment, which none of "
                    f"{source} requires; they need only {_scopes(needed)}.",
            fix=f"Request scope={_scopes(needed)} and nothing more, so that a leaked {level or ''} token can do "
                f"only what the app does.".replace("  ", " "),
            requests=_seqs(group), environment=env, client_id=client,
        )


@rule("token-refetched-while-valid", "New token fetched while a valid one was held",
      "A client fetches or refreshes a token although it holds a valid one with the same scopes.")
def _refetched(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    held: dict[tuple[Any, ...], list[tuple[Entry, dict[str, Any]]]] = defaultdict(list)
    invalid: set[str] = set()
    findings: dict[tuple[Any, ...], list[tuple[Entry, Entry]]] = defaultdict(list)
    # Refresh token fingerprint -> scopes of the access token issued with it: the grant a refresh renews.
    grant_scopes: dict[str, frozenset[str]] = {}
    for entry in entries:
        if entry["endpoint"] == "control":
            _invalidate_on_control(entry, held, invalid)
            continue
        token = entry.get("token")
        if entry["endpoint"] == "api" and token and token.get("environment") == entry["environment"] and _refreshable_401(entry):
            invalid.add(token["jti"])
            continue
        issued = entry.get("issued") if entry["endpoint"] == "token" else None
        if issued and entry.get("refresh_issued"):
            grant_scopes[entry["refresh_issued"]] = grant_scopes.get(entry.get("refresh_presented") or "", issued["scopes"])
        if not issued or entry.get("grant_type") not in ("client_credentials", "refresh_token"):
            if issued:
                held[_holder(entry, issued)].append((entry, issued))
            continue
        key = _holder(entry, issued)
        wanted = _wanted_scopes(entry, context, grant_scopes)
        for earlier, token in held[key]:
            if token["jti"] in invalid or not _comfortably_valid(token, entry["t"]):
                continue
            if wanted is None or wanted <= token["scopes"]:
                findings[key].append((earlier, entry))
                break
        held[key].append((entry, issued))

    for (env, client, level, _subject), pairs in findings.items():
        earlier, later = pairs[0]
        token = earlier["issued"]
        left = token["expires_at"] - later["t"]
        seqs = sorted({seq for pair in pairs for seq in _seqs(pair)})
        grant = "refreshed" if later.get("grant_type") == "refresh_token" else "fetched"
        yield Violation(
            rule="token-refetched-while-valid", title=RULES["token-refetched-while-valid"].title,
            message=f"{client or 'A client'} {grant} a new {level}-level token in the {env} environment "
                    f"{len(pairs)} time(s) while it held a valid one with the same scopes (the first time with "
                    f"{int(left)} s of {int(token['expires_at'] - token['issued_at'])} s left).",
            fix="Cache the token with its expiry (expires_in) and reuse it for every call; fetch a new one only "
                "shortly before it expires or after a 401. Share one cache between threads and client instances.",
            requests=tuple(seqs), environment=env, client_id=client,
        )


def _holder(entry: Entry, issued: dict[str, Any]) -> tuple[Any, ...]:
    level = issued.get("level")
    return (entry["environment"], entry.get("client_id"), level, issued.get("subject") if level == "user" else None)


def _wanted_scopes(entry: Entry, context: RuleContext, grant_scopes: Mapping[str, frozenset[str]]) -> frozenset[str] | None:
    """Return the scopes a token request asked for, or None when they cannot be known.

    A refresh without `scope` asks for the scopes of the grant it renews
    (RFC 6749 6): those of the token first issued in its family, else
    those of the token this refresh returned.
    """
    if entry.get("scope"):
        return entry["scope"]
    if entry.get("grant_type") == "refresh_token":
        family = grant_scopes.get(entry.get("refresh_presented") or "")
        if family is not None:
            return family
        return (entry.get("issued") or {}).get("scopes")
    app = context.app(entry["environment"], entry.get("client_id"))
    return app.scopes if app else None


def _comfortably_valid(token: dict[str, Any], now: float) -> bool:
    issued, expires = token.get("issued_at"), token.get("expires_at")
    if not isinstance(issued, (int, float)) or not isinstance(expires, (int, float)) or expires <= issued:
        return False
    return expires - now > (expires - issued) * REFETCH_REMAINING_SHARE


def _invalidate_on_control(entry: Entry, held: dict[tuple[Any, ...], list[tuple[Entry, dict[str, Any]]]], invalid: set[str]) -> None:
    action = entry.get("action")
    if action == "revoke":
        invalid.update(entry.get("jtis") or ())
        for key, tokens in held.items():
            env, client, _level, subject = key
            if entry.get("environment") not in (None, env):
                continue
            if client == entry.get("client_id") or (subject and subject == entry.get("subject")):
                invalid.update(token["jti"] for _, token in tokens)
    elif action == "rotate_keys" and not entry.get("keep_old", True):
        for key, tokens in held.items():
            if entry.get("environment") in (None, key[0]):
                invalid.update(token["jti"] for _, token in tokens)


@rule("no-retry-after-401", "No retry after 401",
      "After a 401 for an expired, revoked or unverifiable token, the client did not fetch a new token and retry once.")
def _no_retry(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    requests = _requests(entries)
    previous: dict[tuple[Any, ...], Entry] = {}
    for index, entry in enumerate(requests):
        if entry["endpoint"] != "api":
            continue
        call = _same_call(entry)
        before = previous.get(call)
        previous[call] = entry
        if not _refreshable_401(entry) or (before is not None and before.get("status") == 401):
            continue  # A 401 on a retry needs no further retry.
        later = [
            other for other in requests[index + 1:]
            if other["step"] == entry["step"] and other["environment"] == entry["environment"]
            and other.get("client_id") == entry.get("client_id")
        ]
        retry = next((other for other in later if other["endpoint"] == "api" and _same_call(other) == call), None)
        token_requests = [other for other in later if other["endpoint"] == "token" and (retry is None or other["seq"] < retry["seq"])]
        jti = (entry.get("token") or {}).get("jti")
        if retry is not None and (retry.get("token") or {}).get("jti") == jti:
            what, involved = "sent the rejected token again instead of fetching a new one", [entry, retry]
        elif retry is not None:
            continue
        elif any(other.get("outcome") != "ok" for other in token_requests):
            continue  # It tried, and the token endpoint failed.
        elif token_requests:
            what, involved = "fetched a new token but did not retry the request", [entry, *token_requests]
        else:
            what, involved = "gave up without fetching a new token and retrying", [entry]
        yield Violation(
            rule="no-retry-after-401", title=RULES["no-retry-after-401"].title,
            message=f"{_client(entry)} got 401 ({entry.get('reason') or entry.get('error')}) on "
                    f"{_operation_name(entry)} in the {entry['environment']} environment and {what}.",
            fix="On a 401 with error=invalid_token, drop the cached token, fetch a new one (refresh a user "
                "token with its refresh token) and retry the request once.",
            requests=_seqs(involved), environment=entry["environment"], client_id=entry.get("client_id"),
        )


def _refreshable_401(entry: Entry) -> bool:
    return (
        entry.get("status") == 401 and entry.get("error") == "invalid_token"
        and entry.get("reason") not in NOT_REFRESHABLE and bool(entry.get("token"))
    )


@rule("repeated-retry-after-401", "Repeated retries after 401",
      "A client retries a request more than once after 401s, instead of retrying once and reporting the error.")
def _repeated_401(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    for run in _runs(_api(entries), lambda e: e.get("status") == 401):
        if len(run) > MAX_401_ATTEMPTS:
            first = run[0]
            yield Violation(
                rule="repeated-retry-after-401", title=RULES["repeated-retry-after-401"].title,
                message=f"{_client(first)} sent {_operation_name(first)} {len(run)} times in a row in the "
                        f"{first['environment']} environment, each rejected with 401.",
                fix="After a 401, fetch a new token and retry once. If the retry is rejected too, stop and "
                    "report the error: looping cannot fix credentials, and it burns the rate limit.",
                requests=_seqs(run), environment=first["environment"], client_id=first.get("client_id"),
            )


@rule("retry-after-403", "Retry after 403",
      "A client repeats a request rejected with 403 without a token of other scopes or level.")
def _retry_403(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    by_call = _group(_api(entries), _same_call)
    for calls in by_call.values():
        chain: list[Entry] = []
        for entry in calls:
            if chain and chain[-1].get("status") == 403 and _same_authority(chain[-1], entry):
                chain.append(entry)
                continue
            yield from _report_403(chain)
            chain = [entry] if entry.get("status") == 403 else []
        yield from _report_403(chain)


def _same_authority(first: Entry, second: Entry) -> bool:
    a, b = first.get("token") or {}, second.get("token") or {}
    if not a or not b:
        return False
    return a.get("jti") == b.get("jti") or (a.get("scopes") == b.get("scopes") and a.get("level") == b.get("level"))


def _report_403(chain: list[Entry]) -> Iterator[Violation]:
    if len(chain) < 2:
        return
    first = chain[0]
    yield Violation(
        rule="retry-after-403", title=RULES["retry-after-403"].title,
        message=f"{_client(first)} repeated {_operation_name(first)} {len(chain) - 1} time(s) after a 403 "
                f"({first.get('error')}) in the {first['environment']} environment, with the same token scopes and level.",
        fix="Treat 403 as final: a new token with the same scopes cannot succeed. Report the error, and read "
            "error_description for the missing scope, level or role to fix in the app's registration or the request.",
        requests=_seqs(chain), environment=first["environment"], client_id=first.get("client_id"),
    )


def _runs(entries: list[Entry], predicate: Callable[[Entry], bool]) -> Iterator[list[Entry]]:
    """Yield maximal runs of consecutive entries of one call that match `predicate`."""
    for calls in _group(entries, _same_call).values():
        run: list[Entry] = []
        for entry in calls:
            if predicate(entry):
                run.append(entry)
            else:
                if run:
                    yield run
                run = []
        if run:
            yield run


@rule("refresh-token-reused", "Rotated refresh token reused",
      "A client presents a refresh token that an earlier refresh already replaced.")
def _refresh_reused(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    rotated: dict[str, Entry] = {}
    for entry in _requests(entries):
        presented = entry.get("refresh_presented") if entry["endpoint"] == "token" else None
        if not presented:
            continue
        first = rotated.get(presented)
        reused_reason = "reuse" in (entry.get("reason") or "") or "reused" in (entry.get("reason") or "")
        if (first is not None and entry["t"] >= first["t_end"]) or reused_reason:
            involved = [first, entry] if first is not None else [entry]
            yield Violation(
                rule="refresh-token-reused", title=RULES["refresh-token-reused"].title,
                message=f"{_client(entry)} refreshed with a refresh token that request #{first['seq'] if first else '?'} "
                        f"had already exchanged for a new one, in the {entry['environment']} environment.",
                fix="Store the refresh_token of every refresh response, replacing the old one, before using the "
                    "new access token. Flock rotates refresh tokens; presenting an old one revokes the whole family.",
                requests=_seqs(involved), environment=entry["environment"], client_id=entry.get("client_id"),
            )
        if entry.get("status") == 200 and entry.get("refresh_issued") not in (None, presented):
            rotated.setdefault(presented, entry)


@rule("retry-after-ignored", "Retry-After ignored",
      "A client sends its next request before the Retry-After time of a 429 or 503 has passed. "
      "After a 429 of a user's own quota, only that user's next request counts.")
def _retry_after_ignored(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    requests = _requests(entries)
    for index, entry in enumerate(requests):
        wait = entry.get("retry_after")
        if wait is None:
            continue
        target = _target_class(entry)
        actor = _quota_actor(entry)
        next_request = next(
            (
                other for other in requests[index + 1:]
                if other["environment"] == entry["environment"] and other.get("client_id") == entry.get("client_id")
                and _target_class(other) == target and other["t"] >= entry["t_end"]
                and (actor is None or _quota_actor(other, user_quota=True) == actor)
            ),
            None,
        )
        if next_request is None or next_request["t"] + RETRY_AFTER_SLACK_SECONDS >= entry["t_end"] + wait:
            continue
        waited = max(0.0, next_request["t"] - entry["t_end"])
        yield Violation(
            rule="retry-after-ignored", title=RULES["retry-after-ignored"].title,
            message=f"{_client(entry)} got {entry['status']} with Retry-After: {wait:g} on {_operation_name(entry)} "
                    f"in the {entry['environment']} environment and sent {_operation_name(next_request)} "
                    f"{waited:.2f} s later.",
            fix=f"Wait at least the Retry-After time ({wait:g} s here) before the next request to the "
                f"{target}, and back off when there is none.",
            requests=_seqs([entry, next_request]), environment=entry["environment"], client_id=entry.get("client_id"),
        )


def _quota_actor(entry: Entry, *, user_quota: bool = False) -> str | None:
    """Return the user whose own quota a 429 used up, or None when the Retry-After binds the whole app.

    With `user_quota`, return the user of any request made with a user token.
    """
    token = entry.get("token") or {}
    if not (user_quota or entry.get("reason") == "user_quota_exceeded") or token.get("level") != "user":
        return None
    return token.get("subject")


def _target_class(entry: Entry) -> str:
    return "token endpoint" if entry["endpoint"] in CREDENTIAL_ENDPOINTS else (
        "API" if entry["endpoint"] == "api" else f"{entry['endpoint']} endpoint"
    )


@rule("credentials-in-two-places", "Client credentials sent in two places",
      "A request carries the client secret both in the Authorization header and in the body.")
def _two_places(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    both = [entry for entry in _requests(entries) if entry.get("auth_method") == "both"]
    for (env, client), group in _group(both, lambda e: (e["environment"], e.get("client_id"))).items():
        yield Violation(
            rule="credentials-in-two-places", title=RULES["credentials-in-two-places"].title,
            message=f"{client or 'A client'} sent its secret both in an Authorization: Basic header and as "
                    f"client_secret in the body of {_operation_name(group[0])} ({len(group)} request(s)).",
            fix="Use one client authentication method per request (RFC 6749 2.3.1): either the Basic header "
                "(client_secret_basic) or client_id and client_secret in the form body (client_secret_post).",
            requests=_seqs(group), environment=env, client_id=client,
        )


@rule("secret-in-url", "Secret in a URL",
      "A client secret, token or PKCE verifier appears in a request's query string.")
def _secret_in_url(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    leaked = [entry for entry in _requests(entries) if entry.get("secret_in_url")]
    for (env, client, endpoint, names), group in _group(
        leaked, lambda e: (e["environment"], e.get("client_id"), e["endpoint"], tuple(e["secret_in_url"]))
    ).items():
        yield Violation(
            rule="secret-in-url", title=RULES["secret-in-url"].title,
            message=f"{client or 'A client'} put {', '.join(names)} in the URL of {_operation_name(group[0])} "
                    f"({len(group)} request(s)), where proxies, browsers and server logs keep it.",
            fix=_secret_in_url_fix(endpoint, names),
            requests=_seqs(group), environment=env, client_id=client,
        )


def _secret_in_url_fix(endpoint: str, names: tuple[str, ...]) -> str:
    never = "never in the query string (RFC 6749 2.3.1, RFC 6750 2.3)"
    if endpoint != "api":
        return f"Send {', '.join(names)} in the POST form body, {never}."
    fixes = []
    if "access_token" in names:
        fixes.append(f"Send the access token in an Authorization: Bearer header, {never}.")
    others = [name for name in names if name != "access_token"]
    if others:
        fixes.append(f"Send {', '.join(others)} only to the token endpoint, in the Authorization header or the "
                     "POST form body; an API request needs nothing but the bearer token.")
    return " ".join(fixes)


def _authorization_requests(entries: list[Entry]) -> list[Entry]:
    return [e for e in _requests(entries) if e["endpoint"] == "authorize" and e.get("response_type")]


@rule("authorize-without-state", "Authorization request without state",
      "An authorization request carries no state parameter.")
def _no_state(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    missing = [entry for entry in _authorization_requests(entries) if not entry.get("state")]
    for (env, client), group in _group(missing, lambda e: (e["environment"], e.get("client_id"))).items():
        yield Violation(
            rule="authorize-without-state", title=RULES["authorize-without-state"].title,
            message=f"{client or 'A client'} sent the user to /authorize without a state parameter "
                    f"({len(group)} request(s)) in the {env} environment.",
            fix="Send a fresh, unguessable state with every authorization request, keep it in the user's "
                "session and reject a redirect whose state differs (RFC 6749 10.12, CSRF protection).",
            requests=_seqs(group), environment=env, client_id=client,
        )


@rule("authorize-without-pkce-s256", "Authorization request without PKCE S256",
      "An authorization request has no code_challenge, or uses the plain method.")
def _no_pkce(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    weak = [entry for entry in _authorization_requests(entries) if entry.get("pkce") != "S256"]
    for (env, client, method), group in _group(weak, lambda e: (e["environment"], e.get("client_id"), e.get("pkce"))).items():
        what = "without a code_challenge" if method is None else f"with code_challenge_method={method}"
        yield Violation(
            rule="authorize-without-pkce-s256", title=RULES["authorize-without-pkce-s256"].title,
            message=f"{client or 'A client'} sent an authorization request {what} ({len(group)} request(s)) "
                    f"in the {env} environment.",
            fix="Make a random code_verifier (43-128 characters) per login, send code_challenge=BASE64URL(SHA-256("
                "verifier)) with code_challenge_method=S256, and send the verifier in the code exchange (RFC 7636, RFC 9700 2.1.1).",
            requests=_seqs(group), environment=env, client_id=client,
        )


@rule("unregistered-redirect-uri", "Unregistered redirect_uri",
      "An authorization or code exchange request names a redirect_uri that the app did not register.")
def _unregistered_redirect(entries: list[Entry], context: RuleContext) -> Iterator[Violation]:
    wrong = [entry for entry in _requests(entries) if entry.get("redirect_uri_registered") is False]
    for (env, client, uri), group in _group(wrong, lambda e: (e["environment"], e.get("client_id"), e.get("redirect_uri"))).items():
        app = context.app(env, client)
        registered = ", ".join(app.redirect_uris) if app and app.redirect_uris else "none"
        yield Violation(
            rule="unregistered-redirect-uri", title=RULES["unregistered-redirect-uri"].title,
            message=f"{client or 'A client'} used redirect_uri={uri!r}, which is not registered for the app in the "
                    f"{env} environment ({len(group)} request(s)).",
            fix=f"Send exactly one of the registered redirect URIs ({registered}), character for character, in "
                f"both the authorization request and the code exchange; register new ones with Flock first.",
            requests=_seqs(group), environment=env, client_id=client,
        )


# -- the report ----------------------------------------------------------------


def format_report(found: list[Violation], entries: list[Entry], summary: Mapping[str, int]) -> str:
    """Return a plain-text report: one paragraph per violation, with its requests and fix."""
    by_seq = {entry["seq"]: entry for entry in entries}
    requests = sum(1 for entry in entries if entry["endpoint"] != "control")
    if not found:
        head = f"mockflock: no violations in {requests} journaled request(s)."
    else:
        head = f"mockflock found {len(found)} violation(s) in {requests} journaled request(s):"
    lines = [head]
    if summary.get("dropped"):
        lines.append(
            f"NOTE: the journal dropped its {summary['dropped']} oldest entries (it keeps {summary.get('max_entries')}); "
            f"rules saw only the rest."
        )
    for number, violation in enumerate(found, 1):
        lines.append("")
        lines.append(f"{number}. [{violation.rule}] {violation.title}")
        lines.append(f"   {violation.message}")
        for seq in violation.requests[:MAX_LISTED_REQUESTS]:
            entry = by_seq.get(seq)
            lines.append(f"     {describe_entry(entry) if entry else f'#{seq} (no longer in the journal)'}")
        if len(violation.requests) > MAX_LISTED_REQUESTS:
            lines.append(f"     ... and {len(violation.requests) - MAX_LISTED_REQUESTS} more")
        lines.append(f"   Fix: {violation.fix}")
    return "\n".join(lines)


def describe_entry(entry: Entry) -> str:
    """Describe one journal entry in a line: number, request, environment and outcome."""
    if entry["endpoint"] == "control":
        return f"#{entry['seq']} control: {entry.get('action')}"
    if entry["status"] is None:
        outcome = "connection dropped"
    else:
        outcome = str(entry["status"])
        if entry.get("error"):
            outcome += f" {entry['error']}"
        if entry.get("reason"):
            outcome += f" ({entry['reason']})"
        if entry.get("retry_after") is not None:
            outcome += f", Retry-After {entry['retry_after']:g}"
    fault = f" [injected: {entry['fault']}]" if entry.get("fault") else ""
    token = entry.get("token") or entry.get("issued")
    token_text = f" token {token.get('level')} jti={str(token.get('jti'))[:8]}" if token else ""
    return f"#{entry['seq']} {entry['method']} {entry['path']} ({entry['environment']}){token_text} -> {outcome}{fault}"
