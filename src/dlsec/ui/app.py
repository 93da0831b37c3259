"""The dashboard as a FastAPI application: :func:`create_dashboard` over a :class:`Dashboard`.

Pages are rendered on the server (Jinja2 templates in ``dlsec/ui/templates``, one stylesheet in
``dlsec/ui/static``, no script). Who may do what is the gateway's: a user logs in with an API key
of the gateway's :class:`~dlsec.store.KeyStore`; a ``client`` key is a *viewer* (read only, its
model scope applies), an ``operator`` key may also quarantine a version, roll back an alias and
resolve an incident, an ``admin`` key may also create and revoke keys. Every action goes through
the store's API, which writes its audit entry (actor ``apikey:ID``).

Security: the session cookie is HttpOnly and SameSite=Strict, and Secure when the request came over
https (``request.url.scheme``: uvicorn's own TLS, or ``X-Forwarded-Proto`` from a proxy it trusts,
``--forwarded-allow-ips``); every POST form carries a CSRF token checked on the server (403 when
missing or wrong); every response carries a Content-Security-Policy with ``default-src 'self'``
and no script at all, ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``. The embedded
assessment report, which has inline styles, is served on its own with a CSP that allows only
those, in a sandboxed frame of the dashboard's own origin.

Run it alone (``dlsec ui``) or beside the gateway in one server, with :func:`beside`::

    app = beside(create_app(gateway), create_dashboard(registry=gateway.registry))

(not ``gateway_app.mount(...)``: the gateway's middleware refuses any POST that is not JSON, and
it would wrap the dashboard's forms too).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from dlsec.errors import Error, RegistryError, UsageError
from dlsec.store import ROLES, ApiKey, IncidentStore, KeyStore, Registry, authenticate
from dlsec.ui import _views as views
from dlsec.ui._session import LOGIN_COOKIE, SESSION_COOKIE, Session, Signer

__all__ = ["CSP", "REPORT_CSP", "Dashboard", "User", "beside", "create_dashboard"]

CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The assessment report is one self-contained file with inline styles and data-URI images.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'; sandbox"
)
MAX_FORM_BYTES = 64 * 1024
AUDIT_PAGE = 50
ROLE_NAMES = {"client": "client", "viewer": "viewer", "operator": "operator", "admin": "admin"}


@dataclass(frozen=True)
class User:
    """Who is logged in: the API key's record (read again on each request) and the session."""

    key: ApiKey
    session: Session
    csrf: str

    @property
    def role(self) -> str:
        """The key's role: viewer, operator or admin (a client key cannot log in)."""
        return ROLE_NAMES[self.key.role]

    @property
    def actor(self) -> str:
        return f"apikey:{self.key.id}"

    def may(self, role: str) -> bool:
        return self.key.may(role)


class Dashboard:
    """The dashboard's state: the registry and the stores over its database, and the session signer.

    Example:
        >>> dash = Dashboard(Registry.open(home="~/.dlsec"))  # doctest: +SKIP
        >>> app = create_dashboard(dashboard=dash)  # doctest: +SKIP
    """

    def __init__(
        self, registry: Registry, *, secret: bytes | None = None, session_hours: float = 8.0
    ) -> None:
        if not 0 < session_hours <= 24 * 7:
            raise UsageError("--session-hours must be more than 0 and at most 168 (a week)")
        self.registry = registry
        self.audit = registry.audit
        self.keys = KeyStore(registry.db)
        self.incidents = IncidentStore(registry.db, registry.audit)
        self.signer = Signer(secret, lifetime=int(session_hours * 3600))

    def login(self, presented: str) -> ApiKey | None:
        """The key record ``presented`` proves (unrevoked, right secret), or None."""
        return authenticate({k.id: k for k in self.keys.all()}, presented)


# -- errors ---------------------------------------------------------------------------------


class _LoginRequired(Exception):
    pass


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _need(user: User, role: str) -> None:
    if not user.may(role):
        raise _Refused(403, f"your key's role ({user.role}) may not do this; it needs {ROLE_NAMES[role]}")


def _may_see(user: User, model: str) -> None:
    if not user.key.may_use(model):
        raise _Refused(403, f"your key is not scoped to model {model!r}")


# -- dependencies ---------------------------------------------------------------------------


def dashboard_of(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def base_of(request: Request) -> str:
    """The path the dashboard is mounted at ("" when it is the whole app)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def current_user(request: Request) -> User:
    """The logged-in user, or a redirect to the login page (a refusal for a POST)."""
    dash = dashboard_of(request)
    session = dash.signer.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise _LoginRequired()
    key = dash.keys.get(session.key_id)
    if key is None or key.revoked_at is not None:
        raise _LoginRequired()
    return User(key, session, dash.signer.csrf(session))


CurrentUser = Annotated[User, Depends(current_user)]


async def form_of(request: Request) -> dict[str, str]:
    """The posted form (``application/x-www-form-urlencoded``, at most 64 KiB), first value of each field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _Refused(415, "forms are posted as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _Refused(413, "the form is larger than 64 KiB")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise _Refused(400, "the form could not be read") from None
    return {k: v[0] for k, v in fields.items()}


Form = Annotated[dict[str, str], Depends(form_of)]


@dataclass(frozen=True)
class Posted:
    user: User
    form: dict[str, str]


def posted(user: CurrentUser, form: Form) -> Posted:
    """A form posted by a logged-in user with the session's CSRF token (403 otherwise)."""
    token = form.get("csrf", "")
    if not token or not hmac.compare_digest(token.encode(), user.csrf.encode()):
        raise _Refused(403, "missing or wrong CSRF token; reload the page and try again")
    return Posted(user, form)


Action = Annotated[Posted, Depends(posted)]


# -- app ------------------------------------------------------------------------------------


def create_dashboard(
    registry_url: str | None = None,
    *,
    home: str | Path | None = None,
    registry: Registry | None = None,
    dashboard: Dashboard | None = None,
    secret: bytes | None = None,
) -> FastAPI:
    """The dashboard app over a registry (opened from ``registry_url``/``home`` unless given).

    Example:
        >>> app = create_dashboard(home="~/.dlsec")  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP
    """
    if dashboard is None:
        dashboard = Dashboard(
            registry if registry is not None else Registry.open(registry_url, home=home), secret=secret
        )
    app = FastAPI(title="dlsec dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dashboard = dashboard
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    templates.env.globals["role_names"] = ROLE_NAMES
    templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    app.mount("/static", StaticFiles(packages=[("dlsec.ui", "static")]), name="static")

    def render(
        request: Request, template: str, user: User | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        return templates.TemplateResponse(
            request, template, {"user": user, "base": base_of(request), **ctx}, status_code=status
        )

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        headers = response.headers
        if "content-security-policy" not in headers:
            headers["Content-Security-Policy"] = CSP
        if "x-frame-options" not in headers:
            headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if not request.url.path.startswith(base_of(request) + "/static/"):
            headers["Cache-Control"] = "no-store"
        if request.url.scheme == "https":
            headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @app.exception_handler(_LoginRequired)
    async def login_required(request: Request, exc: _LoginRequired) -> Response:
        if request.method in ("GET", "HEAD"):
            target = request.url.path[len(base_of(request)) :] or "/"
            return RedirectResponse(f"{base_of(request)}/login?next={quote(target)}", status_code=303)
        return render(request, "error.html", None, 403, message="log in first (your session has ended)")

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> Response:
        return render(request, "error.html", None, exc.status, message=exc.message)

    @app.exception_handler(Error)
    async def dlsec_error(request: Request, exc: Error) -> Response:
        status = 404 if isinstance(exc, RegistryError) and "no model" in str(exc) else 400
        return render(request, "error.html", None, status, message=str(exc).splitlines()[0])

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return render(request, "error.html", None, 400, message=f"{where}: {first.get('msg', 'invalid')}")

    _pages(app, render)
    return app


def gateway_with_dashboard_from_env() -> FastAPI:
    """What ``dlsec serve --ui`` runs in each worker: the gateway built from
    ``$DLSEC_GATEWAY_CONFIG`` with the dashboard beside it under ``/ui``.

    The session secret comes from ``$DLSEC_UI_SECRET`` (hex), which the command sets once for
    all its workers, so a session made by one worker is honoured by the others. A logout ends
    the session in the worker that served it; the others honour the cookie until it expires.
    """
    import os
    import sys

    from dlsec.respond import build_gateway
    from dlsec.serve import GatewayConfig, create_app

    cfg = GatewayConfig.model_validate_json(os.environ["DLSEC_GATEWAY_CONFIG"])
    sys.setswitchinterval(0.001)  # as the gateway alone: the request path gets the interpreter back fast
    gateway = build_gateway(cfg)
    secret = os.environ.get("DLSEC_UI_SECRET")
    return beside(
        create_app(gateway),
        create_dashboard(registry=gateway.registry, secret=bytes.fromhex(secret) if secret else None),
    )


def beside(gateway_app: FastAPI, dashboard_app: FastAPI, *, prefix: str = "/ui") -> FastAPI:
    """One app serving ``dashboard_app`` under ``prefix`` and ``gateway_app`` everywhere else.

    Each keeps its own middleware (the gateway's JSON-only body guard does not see the
    dashboard's forms) and the gateway's lifespan runs with the combined app's, so closing the
    server closes the gateway.

    Example:
        >>> app = beside(create_app(gateway), create_dashboard(registry=gateway.registry))  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
    """
    if not prefix.startswith("/") or prefix == "/" or prefix.endswith("/"):
        raise UsageError(f"bad prefix {prefix!r}: use a path like /ui")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with gateway_app.router.lifespan_context(gateway_app):
            yield

    combined = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    combined.mount(prefix, dashboard_app)
    combined.mount("/", gateway_app)
    return combined


Render = Callable[..., HTMLResponse]


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=base_of(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _models(dash: Dashboard, user: User) -> list[dict[str, Any]]:
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in dash.registry.versions():
        if user.key.may_use(row["model"]):
            by_model.setdefault(row["model"], []).append(row)
    out = []
    for name, rows in sorted(by_model.items()):
        out.append(
            {
                "name": name,
                "versions": len(rows),
                "latest": rows[-1],
                "aliases": dict(sorted(dash.registry.aliases(name).items())),
                "quarantined": sum(r["status"] == "quarantined" for r in rows),
                "unsigned": sum(not r["signed"] for r in rows),
                "unsafe": sum(r["scan"] != "safe" for r in rows),
            }
        )
    return out


def _pages(app: FastAPI, render: Render) -> None:  # noqa: C901 - one route per page, listed in order
    # -- login --------------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> Response:
        dash = dashboard_of(request)
        nonce = dash.signer.login_nonce()
        response = render(
            request, "login.html", None, token=dash.signer.login_token(nonce), next=_safe_next(next)
        )
        _cookie(response, request, LOGIN_COOKIE, nonce, 900)
        return response

    @app.post("/login", response_class=HTMLResponse)
    def login(request: Request, form: Form) -> Response:
        dash = dashboard_of(request)
        if not dash.signer.check_login_token(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            raise _Refused(403, "missing or wrong CSRF token; reload the login page and try again")
        key = dash.login(form.get("key", ""))
        if key is not None and not key.may("viewer"):
            # a client key predicts; reading the fleet's state (audit log, incidents) is not its
            dash.audit.append(
                "ui.login-refused", f"apikey:{key.id}", {"role": key.role}, actor=f"apikey:{key.id}"
            )
            raise _Refused(403, "a client key cannot open the dashboard; use a viewer, operator or admin key")
        if key is None:
            nonce = dash.signer.login_nonce()
            response = render(
                request,
                "login.html",
                None,
                401,
                token=dash.signer.login_token(nonce),
                next=_safe_next(form.get("next", "/")),
                error="unknown, malformed or revoked API key",
            )
            _cookie(response, request, LOGIN_COOKIE, nonce, 900)
            return response
        dash.audit.append("ui.login", f"apikey:{key.id}", {"role": key.role}, actor=f"apikey:{key.id}")
        done = RedirectResponse(base_of(request) + _safe_next(form.get("next", "/")), status_code=303)
        _cookie(done, request, SESSION_COOKIE, dash.signer.issue(key.id), None)
        done.delete_cookie(LOGIN_COOKIE, path=base_of(request) or "/")
        return done

    @app.post("/logout")
    def logout(request: Request, act: Action) -> Response:
        dashboard_of(request).signer.end(act.user.session)
        response = RedirectResponse(base_of(request) + "/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base_of(request) or "/")
        return response

    # -- models -------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def models_page(request: Request, user: CurrentUser) -> Response:
        return render(request, "models.html", user, nav="models", models=_models(dashboard_of(request), user))

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model_page(name: str, request: Request, user: CurrentUser) -> Response:
        _may_see(user, name)
        registry = dashboard_of(request).registry
        rows = registry.versions(name)
        history: list[dict[str, Any]] = []
        versions = []
        for row in rows:
            shown = registry.show(f"{name}@{row['version']}")
            history += shown["alias_history"]
            versions.append({**row, "lineage": shown["lineage"], "reason": shown["status_reason"]})
        history.sort(key=lambda h: h["id"], reverse=True)
        aliases = dict(sorted(registry.aliases(name).items()))
        return render(
            request,
            "model.html",
            user,
            nav="models",
            name=name,
            versions=versions,
            aliases=aliases,
            history=history,
        )

    @app.get("/models/{name}/{version}", response_class=HTMLResponse)
    def version_page(name: str, version: int, request: Request, user: CurrentUser) -> Response:
        _may_see(user, name)
        registry = dashboard_of(request).registry
        shown = registry.show(f"{name}@{version}")
        record = registry.get(f"{name}@{version}")
        graph = views.lineage_graph(registry, record, base_of(request))
        return render(request, "version.html", user, nav="models", v=shown, graph=graph)

    @app.get("/models/{name}/{version}/report", response_class=HTMLResponse)
    def report_page(name: str, version: int, request: Request, user: CurrentUser) -> Response:
        _may_see(user, name)
        dash = dashboard_of(request)
        record = dash.registry.get(f"{name}@{version}")
        report = views.load_report(dash.registry, record)
        others = [r["version"] for r in dash.registry.versions(name) if r["version"] != version]
        return render(request, "report.html", user, nav="models", record=record, report=report, others=others)

    @app.get("/models/{name}/{version}/report.html", response_class=HTMLResponse)
    def report_file(name: str, version: int, request: Request, user: CurrentUser) -> Response:
        _may_see(user, name)
        dash = dashboard_of(request)
        record = dash.registry.get(f"{name}@{version}")
        report = views.load_report(dash.registry, record)
        if report is None:
            raise _Refused(404, f"{record.ref} has no recorded assessment report")
        from dlsec.assess.report import render_html  # the assessment's own renderer (NumPy, Jinja)

        try:
            text = render_html(report)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _Refused(422, f"{record.ref}: the recorded report cannot be rendered ({exc!r})") from None
        except Exception as exc:  # jinja2's UndefinedError: a report missing a section the page needs
            if type(exc).__module__.startswith("jinja2"):
                raise _Refused(422, f"{record.ref}: the recorded report cannot be rendered ({exc})") from None
            raise
        return HTMLResponse(
            text, headers={"Content-Security-Policy": REPORT_CSP, "X-Frame-Options": "SAMEORIGIN"}
        )

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request, user: CurrentUser, model: str, a: int, b: int) -> Response:
        _may_see(user, model)
        registry = dashboard_of(request).registry
        ra, rb = registry.get(f"{model}@{a}"), registry.get(f"{model}@{b}")
        comparison = views.compare_reports(
            ra, views.load_report(registry, ra), rb, views.load_report(registry, rb)
        )
        versions = [r["version"] for r in registry.versions(model)]
        return render(
            request,
            "compare.html",
            user,
            nav="models",
            model=model,
            a=ra,
            b=rb,
            cmp=comparison,
            versions=versions,
        )

    @app.post("/models/{name}/{version}/quarantine", response_class=HTMLResponse)
    def quarantine(name: str, version: int, request: Request, act: Action) -> Response:
        _need(act.user, "operator")
        _may_see(act.user, name)
        reason = act.form.get("reason", "").strip()[:500] or "quarantined from the dashboard"
        done = dashboard_of(request).registry.quarantine_and_rollback(
            name, version, reason=reason, actor=act.user.actor
        )
        lines = [f"{done.record.ref} is {done.record.status} ({reason})"]
        lines += [f"{alias} now points at {name}@{v}" for alias, v in sorted(done.rolled_back.items())]
        lines += [f"{alias} could not roll back: {exc}" for alias, exc in sorted(done.failures.items())]
        return render(
            request,
            "done.html",
            act.user,
            nav="models",
            title="Quarantined",
            lines=lines,
            back=f"/models/{name}",
        )

    @app.post("/models/{name}/rollback", response_class=HTMLResponse)
    def rollback(name: str, request: Request, act: Action) -> Response:
        _need(act.user, "operator")
        _may_see(act.user, name)
        alias = act.form.get("alias", "").strip()
        if not alias:
            raise UsageError("name the alias to roll back")
        previous, record = dashboard_of(request).registry.rollback(name, alias=alias, actor=act.user.actor)
        lines = [f"{name}@{alias} moved from version {previous} to {record.version}"]
        return render(
            request,
            "done.html",
            act.user,
            nav="models",
            title="Rolled back",
            lines=lines,
            back=f"/models/{name}",
        )

    # -- audit --------------------------------------------------------------------------------

    def audit_page(request: Request, user: User, page: int, **extra: Any) -> Response:
        audit = dashboard_of(request).audit
        entries = audit.entries()
        pages = max(1, -(-len(entries) // AUDIT_PAGE))
        page = min(max(page, 1), pages)
        newest_first = entries[::-1][(page - 1) * AUDIT_PAGE : page * AUDIT_PAGE]
        return render(
            request,
            "audit.html",
            user,
            nav="audit",
            entries=newest_first,
            page=page,
            pages=pages,
            size=len(entries),
            **extra,
        )

    @app.get("/audit", response_class=HTMLResponse)
    def audit(request: Request, user: CurrentUser, page: int = 1) -> Response:
        return audit_page(request, user, page)

    @app.get("/audit/verify", response_class=HTMLResponse)
    def audit_verify(request: Request, user: CurrentUser) -> Response:
        result = dashboard_of(request).audit.verify()
        return audit_page(request, user, 1, verification=result)

    @app.get("/audit/proof", response_class=HTMLResponse)
    def audit_proof(request: Request, user: CurrentUser, index: int) -> Response:
        proof = dashboard_of(request).audit.inclusion_proof(index)
        entry = next((e for e in dashboard_of(request).audit.entries() if e.index == index), None)
        return render(request, "proof.html", user, nav="audit", proof=proof, entry=entry)

    # -- alerts and incidents -----------------------------------------------------------------

    @app.get("/incidents", response_class=HTMLResponse)
    def incidents(request: Request, user: CurrentUser) -> Response:
        dash = dashboard_of(request)
        alerts = [
            {"index": e.index, "ts": e.ts, "subject": e.subject, **e.details}
            for e in dash.audit.recent("gateway.alert", limit=100)
        ][::-1]
        items = dash.incidents.list()[::-1]
        return render(request, "incidents.html", user, nav="incidents", incidents=items, alerts=alerts)

    @app.get("/incidents/{incident_id}", response_class=HTMLResponse)
    def incident(incident_id: int, request: Request, user: CurrentUser) -> Response:
        item = dashboard_of(request).incidents.get(incident_id)
        return render(
            request, "incident.html", user, nav="incidents", incident=item, events=views.timeline(item)
        )

    @app.post("/incidents/{incident_id}/resolve", response_class=HTMLResponse)
    def resolve(incident_id: int, request: Request, act: Action) -> Response:
        _need(act.user, "operator")
        note = act.form.get("note", "").strip()[:1000] or None
        item = dashboard_of(request).incidents.resolve(incident_id, note=note, actor=act.user.actor)
        return render(
            request,
            "done.html",
            act.user,
            nav="incidents",
            title="Resolved",
            lines=[f"incident {item.id} is {item.status}"],
            back=f"/incidents/{item.id}",
        )

    # -- keys ---------------------------------------------------------------------------------

    @app.get("/keys", response_class=HTMLResponse)
    def keys(request: Request, user: CurrentUser) -> Response:
        _need(user, "operator")
        return render(
            request, "keys.html", user, nav="keys", keys=dashboard_of(request).keys.all(), roles=ROLES
        )

    @app.post("/keys", response_class=HTMLResponse)
    def create_key(request: Request, act: Action) -> Response:
        _need(act.user, "admin")
        form = act.form
        models = [m.strip() for m in form.get("models", "").split(",") if m.strip()] or None
        budget_text = form.get("budget", "").strip()
        if budget_text and not budget_text.isdigit():
            raise UsageError(f"budget {budget_text!r}: use a whole number of predictions")
        secret, record = dashboard_of(request).keys.create(
            role=form.get("role", "client"),
            models=models,
            rate=form.get("rate", "").strip() or None,
            budget=int(budget_text) if budget_text else None,
            output=form.get("output", "full").strip() or "full",
            note=form.get("note", "").strip()[:200] or None,
            actor=act.user.actor,
        )
        return render(request, "key_created.html", act.user, nav="keys", secret=secret, record=record)

    @app.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
    def revoke_key(key_id: str, request: Request, act: Action) -> Response:
        _need(act.user, "admin")
        record = dashboard_of(request).keys.revoke(key_id, actor=act.user.actor)
        return render(
            request,
            "done.html",
            act.user,
            nav="keys",
            title="Revoked",
            lines=[f"API key {record.id} ({ROLE_NAMES[record.role]}) is revoked"],
            back="/keys",
        )


def _safe_next(target: str) -> str:
    """A local path to go to after logging in (never another site: no scheme, no ``//``)."""
    if (
        not target.startswith("/")
        or len(target) > 500
        or "\\" in target
        or any(c.isspace() or not c.isprintable() for c in target)  # browsers drop tabs: "/\t/x" is "//x"
        or target.startswith("//")
    ):
        return "/"
    return target
