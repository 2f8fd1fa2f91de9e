"""The pytest plugin, run on test files that pytester writes."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_fixtures_serve_both_environments_on_loopback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx

        def test_server(mockflock):
            assert mockflock.environments == ("production", "development")
            for environment in mockflock.environments:
                assert mockflock.url(environment).startswith("http://127.0.0.1:")
                assert httpx.get(mockflock.url(environment) + "/healthz").json()["environment"] == environment
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_each_test_starts_from_reset_state(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx

        def test_first(mockflock):
            mockflock.register_app("temp-app", secret="temp-secret")
            mockflock.advance_clock(10_000)
            httpx.get(mockflock.url() + "/healthz")

        def test_second(mockflock):
            assert mockflock.journal() == []
            assert mockflock.now() < mockflock.server.clock.now() + 1
            assert mockflock.environment().clients.get("temp-app") is None
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=2)


def test_marker_configures_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest

        def token(mockflock, client_id="extra-app", secret="extra-secret"):
            form = {"grant_type": "client_credentials", "audience": mockflock.audience()}
            return httpx.post(mockflock.token_url(), data=form, auth=(client_id, secret))

        @pytest.mark.mockflock(
            lifetimes={"machine_access": 60},
            apps=[{"client_id": "extra-app", "secret": "extra-secret", "scopes": ["devices:read"]}],
            faults=[{"kind": "error", "target": "token", "times": 1}],
        )
        def test_configured(mockflock):
            assert token(mockflock).status_code == 503
            assert token(mockflock).json()["expires_in"] == 60

        def test_unconfigured(mockflock):
            assert token(mockflock).status_code == 401
            assert token(mockflock, "demo-machine", "demo-machine-secret").json()["expires_in"] == 86400
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_marker_rejects_unknown_arguments(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mockflock(lifetime={"machine_access": 60})
        def test_typo(mockflock):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*has unknown arguments*lifetime*use some of lifetimes*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.mockflock(*configure the mockflock server for one test*"])


def test_assert_no_violations_prints_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx

        def test_wrong_audience(mockflock):
            form = {"grant_type": "client_credentials", "audience": mockflock.audience("development")}
            httpx.post(mockflock.token_url(), data=form, auth=("demo-machine", "demo-machine-secret"))
            mockflock.assert_no_violations()
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*mockflock found 1 violation(s)*",
        "*[[]wrong-audience[]] Wrong audience for the environment*",
        "*Fix: Send audience=com.flocksafety.integrations to the production token endpoint*",
    ])


def test_check_marker_fails_test_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest

        def fetch(mockflock):
            form = {"grant_type": "client_credentials", "audience": mockflock.audience(),
                    "client_id": "demo-machine", "client_secret": "demo-machine-secret"}
            httpx.post(mockflock.token_url(), data=form, auth=("demo-machine", "demo-machine-secret"))

        @pytest.mark.mockflock(check=True)
        def test_checked(mockflock):
            fetch(mockflock)

        @pytest.mark.mockflock(check=True, ignore=["credentials-in-two-places"])
        def test_checked_but_ignored(mockflock):
            fetch(mockflock)

        def test_unchecked(mockflock):
            fetch(mockflock)
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_checked*", "*credentials-in-two-places*"])


def test_ini_option_checks_every_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmockflock_check_violations = true\n")
    pytester.makepyfile(
        """
        import httpx

        def test_secret_in_url(mockflock):
            httpx.post(mockflock.token_url() + "?client_secret=x", data={"grant_type": "client_credentials"})
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*[[]secret-in-url[]]*"])


def test_reset_is_safe_inside_given(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest
        from hypothesis import given, settings
        from mockflock.testing.strategies import environments

        @pytest.mark.mockflock(lifetimes={"machine_access": 77})
        @settings(max_examples=10, deadline=None)
        @given(environment=environments())
        def test_each_example_starts_clean(mockflock_server, mockflock_reset, environment):
            mockflock_reset()
            assert mockflock_server.journal() == []
            form = {"grant_type": "client_credentials", "audience": mockflock_server.audience(environment)}
            response = httpx.post(mockflock_server.token_url(environment), data=form,
                                  auth=("demo-machine", "demo-machine-secret"))
            assert response.json()["expires_in"] == 77
            mockflock_server.assert_no_violations()
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_config_fixture_can_be_overridden(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from mockflock.config import parse_config

        @pytest.fixture(scope="session")
        def mockflock_config():
            return parse_config({
                "organizations": {"acme": {"name": "Acme"}},
                "apps": {"acme-app": {"secret": "acme-secret", "organization": "acme"}},
            })
        """
    )
    pytester.makepyfile(
        """
        def test_custom_app(mockflock):
            assert mockflock.app("acme-app").organization == "acme"
            assert mockflock.environment().clients.get("demo-machine") is None
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_ini_option_names_config_file(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", mockflock="organizations: {acme: {}}\napps: {acme-app: {secret: s, organization: acme}}\n")
    pytester.makeini("[pytest]\nmockflock_config = mockflock.yaml\n")
    pytester.makepyfile(
        """
        def test_file_app(mockflock):
            assert mockflock.app("acme-app").secret == "s"
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_needs_plugin(mockflock):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:mockflock")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'mockflock' not found*"])


def test_plugin_loads_by_module_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_uses_plugin(mockflock):
            assert mockflock.environments
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:mockflock", "-p", "mockflock.testing.plugin")
    result.assert_outcomes(passed=1)
