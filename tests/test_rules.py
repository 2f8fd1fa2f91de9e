"""The violation rules, over hand-made journals: each rule fires on its mistake and stays quiet otherwise."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from mockflock.config import load_config
from mockflock.contracts import load_matrix
from mockflock.violations import RULES, RuleContext, Violation, evaluate, format_report

PRODUCTION = "com.flocksafety.integrations"
DEVELOPMENT = "com.flocksafety.integrations.dev"
HOTLIST_SCOPES = frozenset({"custom-hotlists:read", "custom-hotlists:write"})


class Journal:
    """Builds journal entries the way JournalMiddleware writes them, with increasing seq and time."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._seq = itertools.count(1)
        self.t = 1_000_000.0
        self.step = 0

    def add(self, **fields: Any) -> dict[str, Any]:
        self.t += fields.pop("after", 0.01)
        entry = {
            "seq": next(self._seq), "step": self.step, "t": self.t, "t_end": self.t + 0.001,
            "environment": "production", "method": "GET", "path": "/", "endpoint": "other", "status": 200,
            "outcome": "ok", "error": None, "reason": None, "retry_after": None, "fault": None,
            "request_id": None, "client_id": "demo-hotlists", "secret_in_url": (),
        }
        entry.update(fields)
        self.entries.append(entry)
        return entry

    def token(self, *, scope: frozenset[str] | None = None, audience: str = PRODUCTION, status: int = 200,
              grant_type: str = "client_credentials", level: str = "machine", lifetime: int = 86400,
              **fields: Any) -> dict[str, Any]:
        issued = None
        if status == 200:
            issued = summary(level=level, scopes=scope or HOTLIST_SCOPES, issued_at=self.t, lifetime=lifetime,
                             environment=fields.get("environment", "production"))
        values = {
            "method": "POST", "path": "/oauth/token", "endpoint": "token", "status": status, "auth_method": "basic",
            "grant_type": grant_type, "audience": audience, "scope": scope, "issued": issued, "refresh_issued": None,
            "refresh_presented": None, "redirect_uri_registered": None,
        }
        values.update(fields)
        return self.add(**values)

    def api(self, token: dict[str, Any] | None, *, path: str = "/api/v3/hotlists", operation: str = "listHotlists",
            status: int = 200, **fields: Any) -> dict[str, Any]:
        return self.add(path=path, endpoint="api", status=status, operation=operation, api=fields.pop("api", None),
                        token=token, **fields)

    def control(self, action: str, **details: Any) -> dict[str, Any]:
        return self.add(endpoint="control", action=action, environment=details.pop("environment", None), **details)

    def new_step(self) -> None:
        self.step += 1

    def authorize(self, **fields: Any) -> dict[str, Any]:
        values = {"response_type": "code", "state": True, "pkce": "S256", "redirect_uri_registered": True,
                  "scope": frozenset({"plate-reads:search"}), "client_id": "demo-user-app", "status": 302}
        values.update(fields)
        return self.add(path="/authorize", endpoint="authorize", **values)


_jti = itertools.count(1)


def summary(*, level: str = "machine", scopes: frozenset[str] = HOTLIST_SCOPES, issued_at: float = 1_000_000.0,
            lifetime: int = 86400, environment: str = "production", jti: str | None = None,
            client_id: str = "demo-hotlists") -> dict[str, Any]:
    return {
        "kid": "kid-1", "jti": jti or f"jti-{next(_jti)}", "level": level,
        "audience": PRODUCTION if environment == "production" else DEVELOPMENT,
        "scopes": scopes, "client_id": client_id, "subject": client_id if level == "machine" else "demo-admin",
        "issued_at": issued_at, "expires_at": issued_at + lifetime, "environment": environment,
    }


@pytest.fixture(scope="module")
def context() -> RuleContext:
    config = load_config()
    apps = {(env, client_id): app for client_id, app in config.apps.items() for env in app.environments}
    return RuleContext(audiences={"production": PRODUCTION, "development": DEVELOPMENT}, apps=apps, matrix=load_matrix())


def found(journal: Journal, context: RuleContext, rule: str) -> list[Violation]:
    return [v for v in evaluate(journal.entries, context) if v.rule == rule]


def test_every_rule_has_id_title_and_summary() -> None:
    assert len(RULES) == 16
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id
        assert rule.title
        assert rule.summary.endswith(".")


def test_well_behaved_machine_client_breaks_no_rule(context: RuleContext) -> None:
    journal = Journal()
    fetched = journal.token(scope=frozenset({"custom-hotlists:read"}))
    for _ in range(3):
        journal.new_step()
        journal.api(fetched["issued"])
    assert evaluate(journal.entries, context) == []


def test_wrong_audience_names_other_environment(context: RuleContext) -> None:
    journal = Journal()
    journal.token(audience=DEVELOPMENT, status=403, error="access_denied", reason="other_environment_audience")
    [violation] = found(journal, context, "wrong-audience")
    assert "audience of the development environment" in violation.message
    assert f"audience={PRODUCTION}" in violation.fix
    assert violation.requests == (1,)


def test_missing_audience_is_wrong_audience(context: RuleContext) -> None:
    journal = Journal()
    journal.token(audience=None, status=403)
    [violation] = found(journal, context, "wrong-audience")
    assert "without an audience" in violation.message


def test_user_grant_without_audience_is_fine(context: RuleContext) -> None:
    journal = Journal()
    journal.token(audience=None, grant_type="authorization_code", level="user", client_id="demo-user-app")
    assert found(journal, context, "wrong-audience") == []


def test_token_of_other_environment_is_reported(context: RuleContext) -> None:
    journal = Journal()
    token = summary(environment="development")
    journal.api(token, status=401, error="invalid_token", reason="wrong_environment")
    [violation] = found(journal, context, "cross-environment-token")
    assert "issued by the development environment" in violation.message
    assert "one token cache per environment" in violation.fix


def test_machine_token_on_user_only_api(context: RuleContext) -> None:
    journal = Journal()
    journal.api(summary(), path="/api/v3/reads/search", operation="searchReads", method="POST", status=403,
                error="insufficient_token_level", reason="wrong_level", api="lpr-search")
    [violation] = found(journal, context, "wrong-token-level")
    assert "LPR Search API with a machine-level token" in violation.message
    assert "user-level token" in violation.fix


def test_unregistered_scope_is_reported(context: RuleContext) -> None:
    journal = Journal()
    journal.token(scope=frozenset({"custom-hotlists:read", "devices:read"}), status=400, error="invalid_scope")
    [violation] = found(journal, context, "scope-not-registered")
    assert "devices:read" in violation.message
    assert "custom-hotlists:read" not in violation.message.split("requested")[1].split("in the")[0]


def test_scope_beyond_called_operations(context: RuleContext) -> None:
    journal = Journal()
    fetched = journal.token(scope=HOTLIST_SCOPES)
    journal.api(fetched["issued"])
    [violation] = found(journal, context, "scope-not-needed")
    assert "custom-hotlists:write" in violation.message
    assert "scope=custom-hotlists:read" in violation.fix


def test_scope_beyond_declared_operations(context: RuleContext) -> None:
    journal = Journal()
    journal.token(scope=HOTLIST_SCOPES)
    declared = RuleContext(context.audiences, context.apps, context.matrix,
                           needed_scopes={"demo-hotlists": frozenset({"custom-hotlists:read"})})
    [violation] = found(journal, declared, "scope-not-needed")
    assert "declared" in violation.message


def test_default_scope_request_is_not_greedy(context: RuleContext) -> None:
    journal = Journal()
    fetched = journal.token(scope=None)
    journal.api(fetched["issued"])
    assert found(journal, context, "scope-not-needed") == []


def test_token_per_call_is_reported(context: RuleContext) -> None:
    journal = Journal()
    for _ in range(3):
        fetched = journal.token()
        journal.api(fetched["issued"])
    [violation] = found(journal, context, "token-refetched-while-valid")
    assert "2 time(s)" in violation.message
    assert "Cache the token" in violation.fix


def test_renewal_near_expiry_is_fine(context: RuleContext) -> None:
    journal = Journal()
    first = journal.token(lifetime=100)
    journal.api(first["issued"])
    journal.token(lifetime=100, after=95)
    assert found(journal, context, "token-refetched-while-valid") == []


def test_refetch_after_revocation_is_fine(context: RuleContext) -> None:
    journal = Journal()
    first = journal.token()
    journal.control("revoke", jtis=[first["issued"]["jti"]], client_id="demo-hotlists", environment="production")
    journal.token()
    assert found(journal, context, "token-refetched-while-valid") == []


def test_refetch_after_401_is_fine(context: RuleContext) -> None:
    journal = Journal()
    first = journal.token()
    journal.api(first["issued"], status=401, error="invalid_token", reason="unknown_key")
    second = journal.token()
    journal.api(second["issued"])
    assert found(journal, context, "token-refetched-while-valid") == []


def test_refetch_with_other_scopes_is_fine(context: RuleContext) -> None:
    journal = Journal()
    journal.token(scope=frozenset({"custom-hotlists:read"}))
    journal.token(scope=frozenset({"custom-hotlists:write"}))
    assert found(journal, context, "token-refetched-while-valid") == []


def test_401_without_retry(context: RuleContext) -> None:
    journal = Journal()
    token = summary()
    journal.api(token, status=401, error="invalid_token", reason="expired")
    [violation] = found(journal, context, "no-retry-after-401")
    assert "gave up without fetching a new token" in violation.message


def test_401_retried_with_same_token(context: RuleContext) -> None:
    journal = Journal()
    token = summary()
    journal.api(token, status=401, error="invalid_token", reason="revoked")
    journal.api(token, status=401, error="invalid_token", reason="revoked")
    [violation] = found(journal, context, "no-retry-after-401")
    assert "sent the rejected token again" in violation.message
    assert violation.requests == (1, 2)


def test_401_then_new_token_and_retry_is_fine(context: RuleContext) -> None:
    journal = Journal()
    journal.api(summary(), status=401, error="invalid_token", reason="expired")
    fetched = journal.token()
    journal.api(fetched["issued"])
    assert found(journal, context, "no-retry-after-401") == []


def test_401_when_token_endpoint_fails_is_fine(context: RuleContext) -> None:
    journal = Journal()
    journal.api(summary(), status=401, error="invalid_token", reason="expired")
    journal.token(status=503, outcome="fault", fault="503")
    assert found(journal, context, "no-retry-after-401") == []


def test_401_in_earlier_step_is_not_retried_later(context: RuleContext) -> None:
    journal = Journal()
    token = summary()
    journal.api(token, status=401, error="invalid_token", reason="expired")
    journal.new_step()
    journal.api(token, status=401, error="invalid_token", reason="expired")
    violations = found(journal, context, "no-retry-after-401")
    assert [v.requests for v in violations] == [(1,), (2,)]


def test_wrong_environment_401_needs_no_retry(context: RuleContext) -> None:
    journal = Journal()
    journal.api(summary(environment="development"), status=401, error="invalid_token", reason="wrong_environment")
    assert found(journal, context, "no-retry-after-401") == []


def test_three_401s_in_a_row_are_a_loop(context: RuleContext) -> None:
    journal = Journal()
    for _ in range(3):
        fetched = journal.token()
        journal.api(fetched["issued"], status=401, error="invalid_token", reason="unknown_key")
    [violation] = found(journal, context, "repeated-retry-after-401")
    assert "3 times in a row" in violation.message
    assert "retry once" in violation.fix


def test_one_retry_after_401_is_not_a_loop(context: RuleContext) -> None:
    journal = Journal()
    journal.api(summary(), status=401, error="invalid_token", reason="expired")
    journal.api(summary(), status=401, error="invalid_token", reason="expired")
    assert found(journal, context, "repeated-retry-after-401") == []


def test_retry_after_403_with_same_scopes(context: RuleContext) -> None:
    journal = Journal()
    first = journal.token()
    journal.api(first["issued"], path="/api/v3/devices", operation="listDevices", status=403, error="insufficient_scope")
    second = journal.token()
    journal.api(second["issued"], path="/api/v3/devices", operation="listDevices", status=403, error="insufficient_scope")
    [violation] = found(journal, context, "retry-after-403")
    assert "repeated GET /api/v3/devices 1 time(s)" in violation.message
    assert "Treat 403 as final" in violation.fix


def test_retry_after_403_with_new_scopes_is_fine(context: RuleContext) -> None:
    journal = Journal()
    journal.api(summary(), path="/api/v3/devices", operation="listDevices", status=403, error="insufficient_scope")
    journal.api(summary(scopes=frozenset({"devices:read"})), path="/api/v3/devices", operation="listDevices")
    assert found(journal, context, "retry-after-403") == []


def test_same_403_call_in_two_steps_is_fine(context: RuleContext) -> None:
    journal = Journal()
    token = summary()
    journal.api(token, path="/api/v3/devices", operation="listDevices", status=403, error="insufficient_scope")
    journal.new_step()
    journal.api(token, path="/api/v3/devices", operation="listDevices", status=403, error="insufficient_scope")
    assert found(journal, context, "retry-after-403") == []


def test_rotated_refresh_token_reused(context: RuleContext) -> None:
    journal = Journal()
    journal.token(grant_type="refresh_token", level="user", refresh_presented="fp-1", refresh_issued="fp-2",
                  client_id="demo-user-app")
    journal.token(grant_type="refresh_token", level="user", refresh_presented="fp-1", status=400,
                  error="invalid_grant", reason="refresh_reused", client_id="demo-user-app")
    [violation] = found(journal, context, "refresh-token-reused")
    assert "request #1" in violation.message
    assert "Store the refresh_token" in violation.fix


def test_refresh_chain_is_fine(context: RuleContext) -> None:
    journal = Journal()
    journal.token(grant_type="refresh_token", level="user", refresh_presented="fp-1", refresh_issued="fp-2")
    journal.token(grant_type="refresh_token", level="user", refresh_presented="fp-2", refresh_issued="fp-3")
    assert found(journal, context, "refresh-token-reused") == []


def test_request_before_retry_after(context: RuleContext) -> None:
    journal = Journal()
    token = summary()
    journal.api(token, status=429, retry_after=5.0, fault="429 Retry-After 5", outcome="fault")
    journal.api(token, after=1.0)
    [violation] = found(journal, context, "retry-after-ignored")
    assert "Retry-After: 5" in violation.message
    assert "(5 s here)" in violation.fix


def test_request_after_retry_after(context: RuleContext) -> None:
    journal = Journal()
    token = summary()
    journal.api(token, status=429, retry_after=5.0)
    journal.api(token, after=5.01)
    assert found(journal, context, "retry-after-ignored") == []


def test_retry_after_applies_per_endpoint(context: RuleContext) -> None:
    journal = Journal()
    journal.token(status=429, retry_after=5.0)
    journal.api(summary())
    assert found(journal, context, "retry-after-ignored") == []


def test_secret_in_header_and_body(context: RuleContext) -> None:
    journal = Journal()
    journal.token(auth_method="both", status=400)
    [violation] = found(journal, context, "credentials-in-two-places")
    assert "client_secret_basic" in violation.fix


def test_secret_in_query_string(context: RuleContext) -> None:
    journal = Journal()
    journal.token(secret_in_url=("client_secret",), status=400)
    journal.api(summary(), secret_in_url=("access_token",), status=400)
    violations = found(journal, context, "secret-in-url")
    assert len(violations) == 2
    assert "POST form body" in violations[0].fix
    assert "Authorization: Bearer header" in violations[1].fix


def test_authorize_without_state(context: RuleContext) -> None:
    journal = Journal()
    journal.authorize(state=False)
    [violation] = found(journal, context, "authorize-without-state")
    assert "without a state parameter" in violation.message


def test_authorize_with_plain_pkce(context: RuleContext) -> None:
    journal = Journal()
    journal.authorize(pkce="plain")
    journal.authorize(pkce=None)
    violations = found(journal, context, "authorize-without-pkce-s256")
    messages = " ".join(v.message for v in violations)
    assert "code_challenge_method=plain" in messages
    assert "without a code_challenge" in messages


def test_login_page_post_is_no_authorization_request(context: RuleContext) -> None:
    journal = Journal()
    journal.authorize(method="POST", response_type=None, state=False, pkce=None)
    assert found(journal, context, "authorize-without-state") == []
    assert found(journal, context, "authorize-without-pkce-s256") == []


def test_unregistered_redirect_uri(context: RuleContext) -> None:
    journal = Journal()
    journal.authorize(redirect_uri_registered=False, redirect_uri="http://evil.example/cb", status=400)
    [violation] = found(journal, context, "unregistered-redirect-uri")
    assert "http://evil.example/cb" in violation.message
    assert "http://127.0.0.1:8400/callback" in violation.fix


def test_ignore_skips_rules(context: RuleContext) -> None:
    journal = Journal()
    journal.token(auth_method="both")
    assert evaluate(journal.entries, context, ignore=["credentials-in-two-places"]) == []


def test_ignore_rejects_unknown_rule(context: RuleContext) -> None:
    with pytest.raises(ValueError, match="no-such-rule"):
        evaluate([], context, ignore=["no-such-rule"])


def test_report_lists_requests_and_fix(context: RuleContext) -> None:
    journal = Journal()
    journal.token(audience=DEVELOPMENT, status=403, error="access_denied", reason="other_environment_audience")
    violations = evaluate(journal.entries, context)
    report = format_report(violations, journal.entries, {"entries": 1, "dropped": 0, "max_entries": 10})
    assert "1 violation(s) in 1 journaled request(s)" in report
    assert "[wrong-audience]" in report
    assert "#1 POST /oauth/token (production) -> 403 access_denied (other_environment_audience)" in report
    assert "Fix: Send audience=" in report


def test_report_mentions_dropped_entries(context: RuleContext) -> None:
    report = format_report([], [], {"entries": 0, "dropped": 7, "max_entries": 10})
    assert "no violations" in report
    assert "dropped its 7 oldest entries" in report


def test_refresh_of_other_family_is_not_a_refetch(context: RuleContext) -> None:
    journal = Journal()
    journal.token(grant_type="authorization_code", level="user", client_id="demo-user-app",
                  scope=frozenset({"plate-reads:search"}), refresh_issued="fp-a")
    journal.token(grant_type="authorization_code", level="user", client_id="demo-user-app",
                  scope=frozenset({"custom-hotlists:read"}), refresh_issued="fp-b", lifetime=100)
    journal.token(grant_type="refresh_token", level="user", client_id="demo-user-app", after=60,
                  scope=None, refresh_presented="fp-b", refresh_issued="fp-c")
    assert found(journal, context, "token-refetched-while-valid") == []


def test_refresh_while_own_family_token_is_valid(context: RuleContext) -> None:
    journal = Journal()
    journal.token(grant_type="authorization_code", level="user", client_id="demo-user-app",
                  scope=frozenset({"custom-hotlists:read"}), refresh_issued="fp-a")
    journal.token(grant_type="refresh_token", level="user", client_id="demo-user-app", after=60,
                  scope=None, refresh_presented="fp-a", refresh_issued="fp-b")
    [violation] = found(journal, context, "token-refetched-while-valid")
    assert "refreshed" in violation.message


def user_token(subject: str) -> dict[str, Any]:
    return {**summary(level="user", client_id="demo-user-app"), "subject": subject}


def test_user_quota_429_binds_only_that_user(context: RuleContext) -> None:
    journal = Journal()
    journal.api(user_token("u1"), client_id="demo-user-app", status=429, retry_after=5.0, reason="user_quota_exceeded")
    journal.api(user_token("u2"), client_id="demo-user-app", after=1.0)
    assert found(journal, context, "retry-after-ignored") == []
    journal.api(user_token("u1"), client_id="demo-user-app", after=1.0)
    [violation] = found(journal, context, "retry-after-ignored")
    assert violation.requests == (1, 3)


def test_injected_429_binds_every_user_of_the_app(context: RuleContext) -> None:
    journal = Journal()
    journal.api(user_token("u1"), client_id="demo-user-app", status=429, retry_after=5.0, reason="injected_rate_limit")
    journal.api(user_token("u2"), client_id="demo-user-app", after=1.0)
    assert len(found(journal, context, "retry-after-ignored")) == 1


def test_client_secret_in_api_url(context: RuleContext) -> None:
    journal = Journal()
    journal.api(summary(), secret_in_url=("client_secret", "refresh_token"))
    [violation] = found(journal, context, "secret-in-url")
    assert "client_secret, refresh_token" in violation.message
    assert "only to the token endpoint" in violation.fix
