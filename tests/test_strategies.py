"""The public Hypothesis strategies: what they generate, how they shrink, and the arguments they reject."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from mockflock.contracts import load_matrix
from mockflock.control import Control
from mockflock.testing import strategies as mf
from mockflock.testing.strategies import INVALIDITIES, AccessToken

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# An operation per API and level that needs no path parameter or body.
PROBES = {
    "custom-hotlists": ("GET", "/hotlists"),
    "devices": ("GET", "/devices"),
    "cad": ("GET", "/cad/events"),
    "lpr-search": ("POST", "/reads/search"),
}
SEARCH = {"plate": "AB*", "startDate": "2024-01-01T00:00:00Z", "endDate": "2024-01-02T00:00:00Z", "reason": "test"}


@given(mf.environments())
def test_environments_are_the_two_flock_environments(name: str) -> None:
    assert name in ("production", "development")


def test_environments_shrink_to_production() -> None:
    assert find(mf.environments(), lambda name: True) == "production"


@given(mf.token_levels(api="cad"))
def test_token_levels_follow_the_api(level: str) -> None:
    assert level == "machine"


@given(mf.scope_sets(api="custom-hotlists", level="user", min_size=1))
def test_scope_sets_come_from_the_api(scopes: frozenset[str]) -> None:
    assert scopes
    assert scopes <= {"custom-hotlists:read", "custom-hotlists:write"}


def test_scope_sets_shrink_to_first_scope() -> None:
    assert find(mf.scope_sets(api="custom-hotlists", min_size=1), lambda scopes: True) == {"custom-hotlists:read"}


def test_scope_sets_empty_for_rejected_level() -> None:
    assert find(mf.scope_sets(api="lpr-search", level="machine"), lambda scopes: True) == frozenset()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: mf.environments(only=[]), "only=\\[\\]"),
        (lambda: mf.environments(only=["staging"]), "only='staging'"),
        (lambda: mf.token_levels(api="no-such-api"), "api='no-such-api'"),
        (lambda: mf.scope_sets(level="admin"), "level='admin'"),
        (lambda: mf.scope_sets(api="cad", min_size=50), "min_size=50"),
        (lambda: mf.scope_sets(min_size=2, max_size=1), "max_size=1"),
        (lambda: mf.apps(level="robot"), "level='robot'"),
        (lambda: mf.apps(environments=[]), "environments=\\[\\]"),
        (lambda: mf.apps(scopes=["nope"]), "nope"),
        (lambda: mf.users(roles=[]), "roles=\\[\\]"),
    ],
)
def test_arguments_are_checked_eagerly(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make()


@FAST
@given(app=mf.apps(level="machine"), environment=mf.environments())
def test_generated_machine_apps_get_tokens(
    mockflock_server: Control, mockflock_reset: Callable[[], None], app: mf.AppSpec, environment: str
) -> None:
    mockflock_reset()
    app.register(mockflock_server)
    if environment not in app.environments:
        return
    form = {"grant_type": "client_credentials", "audience": mockflock_server.audience(environment)}
    response = httpx.post(mockflock_server.token_url(environment), data=form, auth=(app.client_id, app.secret))
    assert response.status_code == 200, response.text
    mockflock_server.assert_no_violations()


@FAST
@given(app=mf.apps(level="user"))
def test_generated_user_apps_have_redirect_and_user_grants(mockflock_server: Control, mockflock_reset: Callable[[], None],
                                                            app: mf.AppSpec) -> None:
    mockflock_reset()
    registered = app.register(mockflock_server)
    assert registered.grants == ("authorization_code", "refresh_token")
    assert registered.redirect_uris == ("http://127.0.0.1:8400/callback",)
    assert registered.scopes <= load_matrix().scopes_for_level("user")


@FAST
@given(user=mf.users())
def test_generated_users_register(mockflock_server: Control, mockflock_reset: Callable[[], None], user: mf.UserSpec) -> None:
    mockflock_reset()
    user.register(mockflock_server)
    assert mockflock_server.environment().users.get(user.user_id).roles == user.roles


def probe(control: Control, token: AccessToken, api: str) -> httpx.Response:
    method, path = PROBES[api]
    body = SEARCH if api == "lpr-search" else None
    return httpx.request(method, control.api_url(token.environment) + path, headers=token.headers, json=body)


@pytest.mark.parametrize("api", ["custom-hotlists", "devices", "lpr-search"])
def test_every_validity_gets_its_answer(mockflock_server: Control, mockflock_reset: Callable[[], None], api: str) -> None:
    kinds = ["valid", *(kind for kind in INVALIDITIES if kind != "wrong_level" or len(load_matrix().apis[api].accepted_levels()) < 2)]

    @FAST
    @given(token=mf.access_tokens(mockflock_server, validity=kinds, api=api))
    def check(token: AccessToken) -> None:
        mockflock_reset()
        response = probe(mockflock_server, token, api)
        assert response.status_code == token.expected_status, (token, response.text)
        if token.validity != "valid":
            assert response.json()["error"] == token.expected_error
            assert mockflock_server.journal()[-1]["reason"] == token.expected_reason

    check()


@pytest.mark.parametrize("validity", ["valid", *INVALIDITIES])
def test_each_validity_alone(mockflock: Control, validity: str) -> None:
    api = "cad" if validity == "wrong_level" else "custom-hotlists"
    token = find(mf.access_tokens(mockflock, validity=validity, api=api), lambda token: True)
    assert token.validity == validity
    assert probe(mockflock, token, api).status_code == token.expected_status


def test_expired_tokens_shrink_to_one_second(mockflock: Control) -> None:
    token = find(mf.access_tokens(mockflock, validity="expired", api="devices"), lambda token: True)
    assert token.detail == "expired 1 s ago"
    assert token.environment == "production"
    assert token.level == "machine"


def test_tampered_tokens_keep_signature(mockflock: Control) -> None:
    token = find(mf.access_tokens(mockflock, validity="tampered", api="devices"), lambda token: True)
    assert token.detail == "scope changed after signing"
    assert token.claims["scope"] == " ".join(sorted(load_matrix().scopes))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"validity": "wrong_level"}, "needs api="),
        ({"validity": "wrong_level", "api": "custom-hotlists"}, "accepts every token level"),
        ({"validity": "forged"}, "validity='forged'"),
        ({"validity": []}, "validity=\\[\\]"),
        ({"environment": "staging"}, "environment='staging'"),
        ({"api": "cad", "level": "user"}, "does not accept level='user'"),
        ({"scopes": ["made:up"]}, "made:up"),
    ],
)
def test_access_token_arguments_are_checked_eagerly(mockflock: Control, options: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        mf.access_tokens(mockflock, **options)


def test_strategies_module_exports_sorted_names() -> None:
    assert mf.__all__ == sorted(mf.__all__)
    for name in mf.__all__:
        assert hasattr(mf, name)


@given(st.data())
def test_access_token_headers_use_bearer_scheme(data: st.DataObject) -> None:
    token = AccessToken(token="a.b.c", claims={}, environment="production", level="machine",
                        validity=data.draw(st.sampled_from(["valid", *INVALIDITIES])))
    assert token.headers == {"Authorization": "Bearer a.b.c"}
