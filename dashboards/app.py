"""The live comparison page: a Plotly Dash app on 127.0.0.1 that reads an MLflow store.

    medtune dashboard [--output DIR | --tracking-uri URI] [--port 8050] [--refresh 10]

The page lists the store's experiments (most recently active first) and shows the chosen one's
:class:`medtune.dashboards.views.View`. Every ``refresh`` seconds it re-reads the list and the chosen experiment's
:func:`medtune.dashboards.catalog.fingerprint`; the view is rebuilt only when a run started, ended or logged something,
so a running study fills in as it goes. A view whose build failed (for a reason other than bad input) is tried
again at the next refresh, and its traceback goes to the log. ``?experiment=NAME`` in the address opens that
experiment directly. An unknown or empty experiment, or a store that cannot be read, shows one line saying so
instead of a view.
All of Dash's JavaScript is served by this process; the page fetches nothing from other hosts.

On loopback (the default) the page needs no login. Served beyond loopback (``--host ADDRESS --allow-remote``)
every request needs HTTP basic credentials (:func:`login`, checked by :func:`require_login` on the Flask server
behind Dash): user ``medtune``, the password from ``MEDTUNE_DASHBOARD_PASSWORD`` or else generated once into
``~/.medtune/dashboard-password`` (mode 0600; ``MEDTUNE_DASHBOARD_PASSWORD_FILE`` names another file).
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

from medtune.dashboards.catalog import experiments, fingerprint
from medtune.dashboards.html_report import STYLE
from medtune.dashboards.views import Image, Links, Plot, Table, Text, View
from medtune.errors import InputError
from medtune.util import secret_file

__all__ = [
    "DEFAULT_PASSWORD_FILE", "LOGIN_USER", "PAGE_STYLE", "PASSWORD_ENV", "PASSWORD_FILE_ENV", "choose_experiment",
    "components", "create_app", "login", "message", "require_login",
]

PAGE_STYLE = STYLE + """
header { display: flex; align-items: baseline; gap: 1rem; border-bottom: 2px solid #333; margin-bottom: 1rem; }
header h1 { margin: .5rem 0; }
.store { color: #777; font-size: .85rem; }
.picker { max-width: 640px; margin-bottom: .5rem; }
.message { background: #fff4e5; border-left: 4px solid #e69500; padding: .8rem; margin: 1rem 0; }
.refreshed { color: #999; font-size: .75rem; }
"""


LOGIN_USER = "medtune"
PASSWORD_ENV = "MEDTUNE_DASHBOARD_PASSWORD"
PASSWORD_FILE_ENV = "MEDTUNE_DASHBOARD_PASSWORD_FILE"
DEFAULT_PASSWORD_FILE = "~/.medtune/dashboard-password"


def login() -> tuple[str, str, str]:
    """The dashboard's login beyond loopback: ``(user, password, where the password is kept)``.

    ``MEDTUNE_DASHBOARD_PASSWORD`` wins; otherwise the password file (``MEDTUNE_DASHBOARD_PASSWORD_FILE``, default
    ``~/.medtune/dashboard-password``) is read, and written first with a generated password (mode 0600) if missing.
    """
    given = os.environ.get(PASSWORD_ENV)
    if given is not None:
        if len(given) < 12:
            raise InputError(f"{PASSWORD_ENV} is too short ({len(given)} characters); use at least 12")
        return LOGIN_USER, given, PASSWORD_ENV
    path = Path(os.environ.get(PASSWORD_FILE_ENV) or DEFAULT_PASSWORD_FILE).expanduser()
    try:
        secret_file(path, lambda: secrets.token_urlsafe(18))
        password = path.read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot keep the dashboard password in {str(path)!r} ({exc.strerror}); set "
                         f"{PASSWORD_FILE_ENV} to a writable file or {PASSWORD_ENV}") from None
    if len(password) < 12:
        raise InputError(f"the dashboard password in {str(path)!r} is too short; delete the file to get a new one")
    return LOGIN_USER, password, str(path)


def require_login(server: Any, user: str, password: str) -> None:
    """Every request to the Flask ``server`` needs HTTP basic credentials ``user`` / ``password``; others get 401."""
    from flask import Response, request

    want = f"{user}:{password}".encode()

    @server.before_request
    def _check_login():
        auth = request.authorization
        given = f"{auth.username}:{auth.password}".encode() if auth and auth.type == "basic" else b""
        if given and hmac.compare_digest(given, want):
            return None
        return Response("login required\n", 401, {"WWW-Authenticate": 'Basic realm="medtune dashboard"'})


def _table(block: Table) -> Any:
    from dash import html

    header = html.Thead(html.Tr([html.Th(str(c)) for c in block.frame.columns]))
    body = html.Tbody([html.Tr([html.Td(str(v)) for v in row]) for row in block.frame.itertuples(index=False)])
    table = html.Table([header, body], id=f"table-{block.id}", className="comparison")
    parts: list[Any] = [html.Div(table, className="scroll")]
    if block.caption:
        parts.append(html.P(block.caption, className="caption"))
    return parts


def components(view: View) -> list[Any]:
    """The Dash components of ``view``: a title, a status line and one section per block (DOM ids as in
    :mod:`medtune.dashboards.html_report`)."""
    from dash import dcc, html

    meta = f"experiment {view.experiment}, session {view.session}" + (f" — {view.status}" if view.status else "")
    out = [html.H1(view.title, id="view-title"), html.P(meta, className="meta", id="view-status")]
    for b in view.blocks:
        body: list[Any]
        if isinstance(b, Plot):
            body = [dcc.Graph(id=f"plot-{b.id}", figure=b.figure, config={"displaylogo": False})]
        elif isinstance(b, Table):
            body = _table(b)
        elif isinstance(b, Image):
            src = "data:image/png;base64," + base64.b64encode(b.png).decode("ascii")
            body = [html.Img(id=f"image-{b.id}", src=src, alt=b.title)]
        elif isinstance(b, Text):
            body = [html.Pre(b.text, className="warning" if b.warning else "")]
        elif isinstance(b, Links):  # another experiment of the same store: this page with ?experiment=NAME
            body = [html.Ul([html.Li(html.A(label, href="?" + urlencode({"experiment": name})))
                             for label, name in b.items], id=f"links-{b.id}")]
        else:
            raise TypeError(f"cannot render a {type(b).__name__}")
        out.append(html.Section([html.H2(b.title), *body], id=b.id))
    return out


def message(text: str) -> list[Any]:
    from dash import html

    return [html.Div(text, className="message", id="message")]


def choose_experiment(asked: str | None, current: str | None, trigger: str | None, names: list[str]) -> str | None:
    """The experiment the page shows, whatever order its callbacks ran and answered in.

    Args:
        asked: ``NAME`` of ``?experiment=NAME`` in the page's address, or None.
        current: the experiment the drop-down holds when the call was made (None before the first answer).
        trigger: the input that fired the call: ``"url"`` (the address changed), None (the page's first call) or
            anything else (the refresh tick).
        names: the store's experiments, most recently active first.

    The address wins whenever the page has no choice yet or the address itself changed; a later tick, or an
    earlier call answering late, therefore never replaces it with the default. Only a choice the user made in the
    drop-down (``current``) outlives a tick. With nothing asked and nothing chosen, the most recently active
    experiment is shown.
    """
    if asked and (current is None or trigger in (None, "url")):
        return asked
    return current or (names[0] if names else None)


def create_app(tracking_uri: str, load_view: Callable[[str, str], View], refresh_s: float = 10.0,
               credentials: tuple[str, str] | None = None):
    """The Dash app for the store at ``tracking_uri`` (not started; call ``.run(host, port)``).

    Args:
        load_view: ``load_view(tracking_uri, experiment)`` builds an experiment's view, raising
            :class:`~medtune.errors.InputError` for an unknown or empty one (the CLI passes the study registry's).
        refresh_s: seconds between the page's checks of the store.
        credentials: ``(user, password)``: every request then needs that HTTP basic login.
    """
    from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

    # Dash documents update_title=None (no "Updating..." tab title); its annotation says str
    app = Dash(__name__, title="medtune dashboard", update_title=None, serve_locally=True)  # type: ignore[arg-type]
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + PAGE_STYLE + "</style>")
    app.layout = html.Div([
        dcc.Location(id="url"),
        html.Header([html.H1("medtune"), html.Span(f"MLflow store {tracking_uri}", className="store")]),
        html.Div(dcc.Dropdown(id="experiment", clearable=False, placeholder="choose an experiment"),
                 className="picker"),
        html.Div(id="refreshed", className="refreshed"),
        dcc.Interval(id="tick", interval=max(1, int(refresh_s * 1000))),
        dcc.Store(id="state"),
        dcc.Loading(html.Div(id="view"), delay_show=800),
    ])
    if credentials is not None:
        require_login(app.server, *credentials)
    cache = _ViewCache(tracking_uri, load_view)
    listing = _Listing(tracking_uri, max_age_s=min(refresh_s, 5.0) * 0.9)

    @app.callback(Output("experiment", "options"), Output("experiment", "value"),
                  Input("url", "search"), Input("tick", "n_intervals"), State("experiment", "value"))
    def list_experiments(search, _tick, current):
        try:
            entries = listing.get()
        except Exception:  # keep the list and the choice as they are; the view says what is wrong
            return no_update, no_update
        options = [{"label": e.label, "value": e.name} for e in entries]
        asked = parse_qs((search or "").lstrip("?")).get("experiment", [None])[0]
        value = choose_experiment(asked, current, ctx.triggered_id, [e.name for e in entries])
        if value and value not in {e.name for e in entries}:  # shown with its message, not silently replaced
            options.append({"label": f"{value} (not in this store)", "value": value})
        return options, no_update if value == current else value

    # The tick only checks the store (cheap); the view is rebuilt when that check finds something new, so slow
    # rebuilds never pile up behind the timer. A view whose build failed is tried again at the next tick.
    @app.callback(Output("state", "data"), Output("refreshed", "children"),
                  Input("experiment", "value"), Input("tick", "n_intervals"), State("state", "data"))
    def check(name, _tick, state):
        stamp = f"checked {time.strftime('%H:%M:%S')}; re-checks every {refresh_s:g} s"
        try:
            new = [name, fingerprint(tracking_uri, name) if name else "", ""]
        except Exception as exc:
            new = [name, "", _unreadable(tracking_uri, exc)]
        same = bool(state) and new == state[:3]
        if same and not cache.failed(name, new[1]):
            return no_update, stamp
        return new + [state[3] + 1 if same else 0], stamp

    @app.callback(Output("view", "children"), Input("state", "data"))
    def show(state):
        if not state:
            return no_update
        name, digest, error, _attempt = state
        if error:
            return message(error)
        if not name:
            try:
                any_experiment = bool(listing.get())
            except Exception as exc:
                return message(_unreadable(tracking_uri, exc))
            return message("Choose an experiment above." if any_experiment else
                           f"No experiments in the MLflow store {tracking_uri} yet: run `medtune run lr-schedulers` "
                           "(with the same --output) and it appears here.")
        try:
            return cache.get(name, digest)
        except InputError as exc:
            return message(str(exc))
        except Exception as exc:  # a store that went away mid-build, or a bug: said on the page, logged in full
            logging.getLogger(__name__).exception("building the view of %r failed", name)
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            return message(f"Could not build the view of {name!r} ({type(exc).__name__}: {first}); it is tried "
                           "again at the next refresh, and the dashboard's log has the traceback.")

    return app


class _Listing:
    """The store's experiment list, read at most once per ``max_age_s`` however many tabs are open."""

    def __init__(self, tracking_uri: str, max_age_s: float):
        self.tracking_uri, self.max_age_s = tracking_uri, max_age_s
        self.lock = threading.Lock()
        self.read_at, self.entries = -float("inf"), cast(list[Any], [])

    def get(self) -> list:
        with self.lock:
            if time.monotonic() - self.read_at >= self.max_age_s:
                self.entries, self.read_at = experiments(self.tracking_uri), time.monotonic()
            return self.entries


class _ViewCache:
    """The page of each experiment at its latest fingerprint, built once however many tabs or ticks ask for it;
    a new fingerprint replaces the experiment's older page. Builds whose error was not bad input are remembered
    in ``failed`` so that the next tick tries again."""

    def __init__(self, tracking_uri: str, load_view: Callable[[str, str], View], size: int = 8):
        self.tracking_uri, self.load_view, self.size = tracking_uri, load_view, size
        self.lock = threading.Lock()
        self.pages: dict[tuple[str, str], list[Any]] = {}
        self._failed: set[tuple[str, str]] = set()

    def failed(self, name: str, digest: str) -> bool:
        return (name, digest) in self._failed

    def get(self, name: str, digest: str) -> list[Any]:
        with self.lock:  # one build at a time: the store and the CPU are shared with the running study
            key = (name, digest)
            if key not in self.pages:
                try:
                    page = components(self.load_view(self.tracking_uri, name))
                except InputError:
                    raise  # unknown or empty: trying again changes nothing until the fingerprint does
                except Exception:
                    self._failed.add(key)
                    raise
                self._failed.discard(key)
                for old in [k for k in self.pages if k[0] == name]:
                    del self.pages[old]
                if len(self.pages) >= self.size:
                    self.pages.pop(next(iter(self.pages)))
                self.pages[key] = page
            return self.pages[key]


def _unreadable(tracking_uri: str, exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return f"Cannot read the MLflow store {tracking_uri} ({first}); check --output / --tracking-uri."
