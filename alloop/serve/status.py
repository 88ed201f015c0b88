"""The status page: ``GET /`` of ``alloop serve`` and ``alloop report --html FILE``.

One server-rendered HTML page (Jinja2, no scripts, no build step) per set of projects: the round
table, the learning curve (the figure ``alloop report`` writes, inline as a PNG data URI), labels
per class, annotators and their agreement, the next scheduled tick and the last error. Everything
comes from :mod:`alloop.report`, which ``alloop status`` and ``alloop report`` read as well.

In ``alloop serve`` the page needs the HTTP Basic credentials of the ML backend
(``$ALLOOP_ML_BACKEND_USER``/``$ALLOOP_ML_BACKEND_PASSWORD``): it shows annotator names and
errors, so it is off (403, with the reason) while no password is set.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from alloop.report import labels_and_annotators, learning_curve, plot_learning_curve, project_status
from alloop.store.models import utcnow
from alloop.workspace import Workspace

_PLOT = threading.Lock()
TEMPLATES = Path(__file__).with_name("templates")
templates = Jinja2Templates(directory=str(TEMPLATES))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _when(iso: str | datetime | None) -> str:
    if iso is None:
        return "–"
    t = iso if isinstance(iso, datetime) else datetime.fromisoformat(iso)
    return t.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


templates.env.filters.update(pct=_pct, num=_num, when=_when)


def figure_uri(points: list[tuple[int, float]], title: str, ylabel: str) -> str | None:
    """The learning-curve PNG of ``alloop report`` as a ``data:`` URI (None without points)."""
    if not points:
        return None
    buf = io.BytesIO()
    with _PLOT:  # pyplot keeps global state; the server renders pages in a thread pool
        plot_learning_curve(points, buf, title, ylabel=ylabel)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def project_view(ws: Workspace, live: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the page shows for one project; ``live``: the serve process's status of it (/healthz)."""
    status = project_status(ws.engine, ws.name)
    points = learning_curve(ws.engine, ws.name)
    people = labels_and_annotators(ws.engine, ws.name, ws.config.loop.aggregation)
    errors = [(r["round"], r["last_error"]) for r in status["rounds"] if r["last_error"]]
    last_error = (live or {}).get("last_error") or (f"round {errors[-1][0]}: {errors[-1][1]}" if errors else None)
    return {
        **status,
        **people,
        "figure": figure_uri(points, f"{ws.name}: learning curve", status["metric"]),
        "last_error": last_error,
        "live": dict(live or {}),
    }


def render(views: Sequence[Mapping[str, Any]], *, served: bool = False) -> str:
    """The page as HTML text."""
    return templates.env.get_template("status.html").render(
        projects=views, generated_at=utcnow(), served=served)


def write_html(ws: Workspace, path: Path) -> Path:
    """``alloop report --html``: the page of one project, to a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render([project_view(ws)]), encoding="utf-8")
    return path


def status_routes(
    workspaces: Mapping[str, Workspace],
    live: Any,
    check: Any,
) -> list[BaseRoute]:
    """``GET /``: the page for every served project. ``live()``: /healthz's project status by name;
    ``check(request)``: None when the caller may see it, else the refusal to send."""

    def page(request: Request) -> Response:
        refused: Response | None = check(request)
        if refused is not None:
            return refused
        now = live()
        views = [project_view(ws, now.get(name)) for name, ws in workspaces.items()]
        return templates.TemplateResponse(request, "status.html",
                                          {"projects": views, "generated_at": utcnow(), "served": True})

    return [Route("/", page, methods=["GET"])]


def off(_request: Request) -> Response:
    from alloop.serve.mlbackend import PASSWORD_ENV

    return PlainTextResponse(f"The status page is off: set ${PASSWORD_ENV} (and optionally the user) in alloop "
                             "serve's environment, then open it with those HTTP Basic credentials.", status_code=403)


__all__ = ["figure_uri", "project_view", "render", "status_routes", "write_html"]
