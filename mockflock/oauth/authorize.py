"""The authorization endpoint and its login and consent page (RFC 6749 4.1, RFC 7636).

Flock serves /authorize on its login host; mockflock serves it on each
environment's base URL. GET /authorize checks the request. A wrong
client_id or redirect_uri shows an error page and never redirects (RFC
6749 4.1.2.1). Every other error redirects to the client with `error`,
`error_description`, the `state` exactly as sent and `iss` (RFC 9207).

A valid request shows a server-rendered page, which needs no JavaScript:
the person picks a configured user, types the password and approves or
denies. The page's form posts back to /authorize. For CI there is a
headless path: with `login_hint` naming a user of the app's organization,
an app with auto-consent gets the code at once, without a page.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mockflock.config import AppConfig
from mockflock.contracts import load_matrix
from mockflock.environments import Environment
from mockflock.oauth.forms import read_parameters
from mockflock.oauth.grants import AuthorizationCode, PendingAuthorization
from mockflock.users import User, load_user_oauth_contract

logger = logging.getLogger(__name__)

CONTRACT = load_user_oauth_contract()
PKCE = CONTRACT["pkce"]
CHALLENGE = re.compile(PKCE["challenge_pattern"]["value"])
PROMPTS = CONTRACT["authorize"]["prompt_values"]["value"]
MAX_FORM_BYTES = 16 * 1024
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    # No scripts, no framing (RFC 6749 10.13, clickjacking), no referrer leak
    # of the query to other sites. form-action is left out on purpose:
    # browsers apply it to the redirect that follows the form, and the
    # client's redirect URI is on another origin.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class ErrorPage(Exception):
    """A request that cannot be sent back to the client: shown as a page instead."""

    def __init__(self, title: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.title = title
        self.description = description
        self.status = status


class ErrorRedirect(Exception):
    """An error to send back to the client's redirect URI (RFC 6749 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def environment_of(request: Request) -> Environment:
    return request.app.state.environment


async def authorize(request: Request) -> Response:
    """GET /authorize: check the request, then redirect with a code or show the login page."""
    env = environment_of(request)
    try:
        params, repeated = _parameters(request)
        app, redirect_uri = _client_and_redirect(env, params, repeated, request.app.state.others)
    except ErrorPage as page:
        # RFC 6749 4.1.2.1: never redirect to a URI that is not the app's.
        return _error_page(page)

    state = params.get("state")
    try:
        pending = _check_request(env, app, params, repeated, redirect_uri)
        user = _hinted_user(env, app, params.get("login_hint"))
        prompt = params.get("prompt")
        if user is not None and app.auto_consent and prompt not in ("login", "consent"):
            logger.info(
                "Headless authorization of %s for user %s in %s", app.client_id, user.id, env.name
            )
            return _code_redirect(env, pending, user, status=302)
        if prompt == "none":
            error = "consent_required" if user is not None else "login_required"
            raise ErrorRedirect(
                error,
                "prompt=none, but the request needs the login page: send login_hint naming a user of the app's "
                "organization, to an app with auto-consent, or drop prompt=none.",
            )
    except ErrorRedirect as exc:
        return _error_redirect(env, redirect_uri, exc, state, status=302)

    env.grants.add_pending(pending)
    notice = None
    if params.get("login_hint") and user is None:
        notice = f"login_hint={params['login_hint'][:80]!r} names no user of this organization; pick one below."
    return _login_page(env, app, pending, selected=user.id if user else None, notice=notice)


async def submit(request: Request) -> Response:
    """POST /authorize: handle the login page's form, which approves or denies."""
    env = environment_of(request)
    form = await read_parameters(request, MAX_FORM_BYTES, allow_json=False)
    with env.grants.lock:
        pending = env.grants.pending.get(form.get("authorization_id", ""))
    if pending is None:
        return _error_page(
            ErrorPage(
                "Sign-in request not found",
                "This sign-in page is unknown or was already answered. Go back to the app and sign in again.",
            )
        )
    app = env.clients.get(pending.client_id)
    if app is None:
        return _error_page(
            ErrorPage("Unknown app", f"The app {pending.client_id!r} is no longer registered.")
        )

    if env.clock.now() >= pending.expires_at:
        _forget(env, pending)
        lifetime = CONTRACT["authorize"]["login_page_lifetime"]["value"]
        expired = ErrorRedirect(
            "access_denied",
            f"The sign-in page expired: it is valid for {lifetime} s. Start the sign-in again.",
        )
        return _error_redirect(env, pending.redirect_uri, expired, pending.state, status=303)
    decision = form.get("decision")
    if decision == "deny":
        _forget(env, pending)
        logger.info("Authorization of %s denied on the login page in %s", app.client_id, env.name)
        denied = ErrorRedirect("access_denied", "The user denied the authorization request.")
        return _error_redirect(env, pending.redirect_uri, denied, pending.state, status=303)
    if decision != "approve":
        return _login_page(env, app, pending, notice="Choose Approve or Deny.", status=400)

    username = form.get("username", "")
    user = env.users.authenticate(username, form.get("password", ""))
    if user is None or user.organization != app.organization:
        logger.info("Failed sign-in as %r for %s in %s", username[:80], app.client_id, env.name)
        return _login_page(
            env,
            app,
            pending,
            selected=username,
            notice="Wrong user or password. Try again.",
            status=401,
        )
    _forget(env, pending)
    logger.info("User %s approved %s in %s", user.id, app.client_id, env.name)
    return _code_redirect(env, pending, user, status=303)


def _parameters(request: Request) -> tuple[dict[str, str], set[str]]:
    params: dict[str, str] = {}
    repeated: set[str] = set()
    query = request.scope.get("query_string", b"").decode("latin-1")
    # surrogateescape keeps invalid UTF-8 visible, so it is rejected here
    # rather than echoed back altered (a changed state fails the client's check).
    for name, value in parse_qsl(query, keep_blank_values=True, errors="surrogateescape"):
        if _has_invalid_utf8(name) or _has_invalid_utf8(value):
            shown = name.encode("utf-8", "replace").decode()
            raise ErrorPage(
                "Invalid request",
                f"The query parameter {shown!r} is not valid UTF-8 after percent-decoding. "
                f"Percent-encode the UTF-8 bytes of each value; state in particular is echoed exactly.",
            )
        if name in params:
            repeated.add(name)
        params[name] = value
    return params, repeated


def _has_invalid_utf8(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def _client_and_redirect(
    env: Environment, params: dict[str, str], repeated: set[str], others: dict[str, Environment]
) -> tuple[AppConfig, str]:
    """Return the app and the redirect URI to use, or raise `ErrorPage`."""
    for name in ("client_id", "redirect_uri"):
        if name in repeated:
            raise ErrorPage(
                "Invalid request", f"{name} appears more than once; send it once (RFC 6749 3.1)."
            )
    client_id = params.get("client_id")
    if not client_id:
        raise ErrorPage(
            "Invalid request", "client_id is missing. Send the app's client_id in the query."
        )
    app = env.clients.get(client_id)
    if app is None:
        elsewhere = [name for name, other in others.items() if other.clients.get(client_id)]
        hint = (
            f" It is registered in the {elsewhere[0]} environment: use that environment's /authorize."
            if elsewhere
            else ""
        )
        raise ErrorPage(
            "Unknown app",
            f"client_id={client_id[:80]!r} is not registered in the {env.name} environment.{hint}",
        )
    if not app.redirect_uris:
        raise ErrorPage(
            "No redirect URI registered",
            f"The app {client_id!r} has no redirect URIs, so it cannot use the authorization code flow. "
            f"Register one under apps.{client_id}.redirect_uris, with grants [authorization_code, refresh_token].",
        )

    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:
        if len(app.redirect_uris) == 1:
            return app, app.redirect_uris[0]
        raise ErrorPage(
            "Redirect URI missing",
            f"redirect_uri is missing, and the app {client_id!r} registers several: "
            f"{', '.join(app.redirect_uris)}. Send the one to return to.",
        )
    if redirect_uri not in app.redirect_uris:
        raise ErrorPage(
            "Redirect URI mismatch",
            f"redirect_uri={redirect_uri[:200]!r} is not registered for {client_id!r}. It must equal one of these "
            f"exactly, including scheme, host, port and path: {', '.join(app.redirect_uris)}.",
        )
    return app, redirect_uri


def _check_request(
    env: Environment, app: AppConfig, params: dict[str, str], repeated: set[str], redirect_uri: str
) -> PendingAuthorization:
    """Check everything but client and redirect URI; raise `ErrorRedirect` on a flaw."""
    if repeated:
        raise ErrorRedirect(
            "invalid_request",
            f"{', '.join(sorted(repeated))} appear more than once; send each parameter once.",
        )
    response_type = params.get("response_type")
    if not response_type:
        raise ErrorRedirect("invalid_request", "response_type is missing; send response_type=code.")
    if response_type != "code":
        raise ErrorRedirect(
            "unsupported_response_type",
            f"response_type={response_type[:40]!r} is not supported; send response_type=code.",
        )
    if "authorization_code" not in app.grants:
        raise ErrorRedirect(
            "unauthorized_client",
            f"The app {app.client_id!r} is not registered for the authorization code grant; its grants are: "
            f"{', '.join(app.grants)}.",
        )
    prompt = params.get("prompt")
    if prompt is not None and prompt not in PROMPTS:
        raise ErrorRedirect(
            "invalid_request",
            f"prompt={prompt[:40]!r} is not supported; use one of {', '.join(PROMPTS)}.",
        )

    lifetime = CONTRACT["authorize"]["login_page_lifetime"]["value"]
    return PendingAuthorization(
        id=secrets.token_urlsafe(24),
        client_id=app.client_id,
        redirect_uri=redirect_uri,
        redirect_uri_given="redirect_uri" in params,
        scopes=_check_scopes(app, params.get("scope")),
        state=params.get("state"),
        code_challenge=_check_pkce(app, params),
        audience=_check_audience(env, params.get("audience")),
        login_hint=params.get("login_hint"),
        expires_at=env.clock.now() + lifetime,
    )


def user_scopes(app: AppConfig) -> frozenset[str]:
    """Return the app's scopes that user tokens can use."""
    return app.scopes & load_matrix().scopes_for_level("user")


def _check_scopes(app: AppConfig, scope: str | None) -> frozenset[str]:
    registered = user_scopes(app)
    requested = set((scope or "").split())
    if not requested:
        if not registered:
            raise ErrorRedirect(
                "invalid_scope", f"The app {app.client_id!r} has no user-level scopes registered."
            )
        return registered
    unknown = requested - registered
    if unknown:
        raise ErrorRedirect(
            "invalid_scope",
            f"scope {' '.join(sorted(unknown))!r} is not among the user-level scopes of {app.client_id!r}: "
            f"{' '.join(sorted(registered)) or '(none)'}. Ask only for those.",
        )
    return frozenset(requested)


def _check_pkce(app: AppConfig, params: dict[str, str]) -> str | None:
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            raise ErrorRedirect(
                "invalid_request",
                "code_challenge_method is sent without code_challenge; send both.",
            )
        if app.require_pkce:
            raise ErrorRedirect(
                "invalid_request",
                f"The app {app.client_id!r} requires PKCE: send code_challenge=BASE64URL(SHA256(code_verifier)) "
                f"and code_challenge_method=S256 (RFC 7636).",
            )
        return None
    if method != "S256":
        shown = "missing, which means plain" if method is None else f"{method[:20]!r}"
        raise ErrorRedirect(
            "invalid_request",
            f"code_challenge_method is {shown}; only S256 is supported. Send code_challenge_method=S256.",
        )
    if not CHALLENGE.fullmatch(challenge):
        raise ErrorRedirect(
            "invalid_request",
            "code_challenge is not 43 base64url characters without padding, which an S256 challenge always is.",
        )
    return challenge


def _check_audience(env: Environment, audience: str | None) -> str:
    if audience is None or audience == env.audience:
        return env.audience
    raise ErrorRedirect(
        "invalid_request",
        f"audience={audience[:80]!r} is not the audience of the {env.name} environment; send "
        f"audience={env.audience} or leave it out.",
    )


def _hinted_user(env: Environment, app: AppConfig, login_hint: str | None) -> User | None:
    if not login_hint:
        return None
    user = env.users.get(login_hint)
    if user is None or user.organization != app.organization:
        return None
    return user


def _code_redirect(
    env: Environment, pending: PendingAuthorization, user: User, *, status: int
) -> Response:
    now = env.clock.now()
    code = env.grants.issue_code(
        AuthorizationCode(
            client_id=pending.client_id,
            user_id=user.id,
            organization=user.organization,
            redirect_uri=pending.redirect_uri if pending.redirect_uri_given else None,
            effective_redirect_uri=pending.redirect_uri,
            scopes=pending.scopes,
            code_challenge=pending.code_challenge,
            audience=pending.audience,
            issued_at=now,
            expires_at=now + env.config.lifetimes.authorization_code,
        )
    )
    return _redirect(env, pending.redirect_uri, {"code": code}, pending.state, status)


def _error_redirect(
    env: Environment, redirect_uri: str, error: ErrorRedirect, state: str | None, *, status: int
) -> Response:
    logger.debug("Authorization error %s redirected to the client in %s", error.error, env.name)
    return _redirect(
        env,
        redirect_uri,
        {"error": error.error, "error_description": error.description},
        state,
        status,
    )


def _redirect(
    env: Environment, redirect_uri: str, values: dict[str, str], state: str | None, status: int
) -> Response:
    if state is not None:
        values = {**values, "state": state}
    values["iss"] = env.issuer
    # RFC 6749 3.1.2: keep the registered URI's own query and add to it.
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(
        redirect_uri + separator + urlencode(values), status_code=status, headers=PAGE_HEADERS
    )


def _forget(env: Environment, pending: PendingAuthorization) -> None:
    with env.grants.lock:
        env.grants.pending.pop(pending.id, None)


def _login_page(
    env: Environment,
    app: AppConfig,
    pending: PendingAuthorization,
    *,
    selected: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    users = env.users.all(app.organization)
    options = "".join(
        f'<option value="{_e(user.id)}"{" selected" if user.id == selected else ""}>{_e(user.name)} ({_e(user.id)})</option>'
        for user in users
    )
    scopes = load_matrix().scopes
    scope_items = "".join(
        f"<li><code>{_e(name)}</code> {_e(scopes[name].description) if name in scopes else ''}</li>"
        for name in sorted(pending.scopes)
    )
    notice_html = f'<p class="notice" role="alert">{_e(notice)}</p>' if notice else ""
    organization = env.config.organizations.get(app.organization, app.organization)
    body = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sign in to Flock: {_e(app.name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 36em; margin: 2em auto; padding: 0 1em; }}
.notice {{ background: #fde8e8; border: 1px solid #c53030; padding: 0.5em; }}
label {{ display: block; margin-top: 1em; }}
button {{ margin-top: 1.5em; margin-right: 1em; padding: 0.4em 1.2em; }}
small {{ color: #555; }}
</style>
</head>
<body>
<h1>Sign in to Flock</h1>
<p><small>mockflock, {_e(env.name)} environment. Flock serves this page on its login host.</small></p>
{notice_html}
<p><strong>{_e(app.name)}</strong> (<code>{_e(app.client_id)}</code>) asks to act on your behalf in
{_e(organization)}. It asks for these scopes:</p>
<ul id="scopes">{scope_items}</ul>
<p>After you decide, you return to <code>{_e(pending.redirect_uri)}</code>.</p>
<form method="post" action="/authorize">
<input type="hidden" name="authorization_id" value="{_e(pending.id)}">
<label for="username">User</label>
<select id="username" name="username">{options}</select>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<div>
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</div>
</form>
</body>
</html>
"""
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def _error_page(page: ErrorPage) -> Response:
    logger.debug("Authorization request shown an error page: %s", page.title)
    body = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{_e(page.title)}</title></head>
<body>
<h1>{_e(page.title)}</h1>
<p id="error_description">{_e(page.description)}</p>
</body>
</html>
"""
    return HTMLResponse(body, status_code=page.status, headers=PAGE_HEADERS)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
