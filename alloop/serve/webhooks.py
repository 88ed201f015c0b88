"""The HTTP side of ``alloop serve`` (Starlette): ``GET /healthz`` and ``POST /webhooks/<tool>``.

A webhook call only *wakes* the project's loop - the next tick pulls the labeling tool, which
stays the source of truth - so a lost, repeated or reordered event changes nothing.

The receiver checks the shared secret (:data:`~alloop.protocols.SECRET_HEADER`, compared in
constant time) before it reads the body; a missing or wrong secret is answered 401, a body that
is not JSON or not an event of the tool 400, a project it does not serve 404 - each with one
log line, never the secret. The project is named by the ``project`` query parameter of the
registered URL, else found by the tool's project id in the event. Reading an event is the
connector's job (:class:`~alloop.protocols.WebhookSource`): this module knows no tool.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from alloop.protocols import SECRET_HEADER, WebhookEvent, WebhookSource

logger = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/webhooks/"
MAX_BODY = 16 * 1024 * 1024


def webhook_path(connector: str) -> str:
    """The receiver's path for a connector's tool: ``/webhooks/label-studio`` for ``label_studio``."""
    return WEBHOOK_PREFIX + connector.replace("_", "-")


@dataclass
class Target:
    """A project the receiver can wake."""

    name: str
    wake: Callable[[str], None]
    """Called with the reason (e.g. "webhook ANNOTATION_CREATED"); must return at once."""
    source: WebhookSource | None = None
    """The project's connector, which reads the tool's events (None: it sends none)."""
    connector: str = ""
    """The connector's registered name (the path the tool calls is :func:`webhook_path` of it)."""
    tool_project: str | None = None
    """The tool's id of the project, for events whose URL names no project."""


def client_host(request: Request) -> str:
    """The address a request came from, for log lines about refused calls: the client's host as
    the server saw it (behind a reverse proxy, the proxy's), ``"?"`` when the server does not know it."""
    return request.client.host if request.client else "?"


def create_app(
    targets: Mapping[str, Target],
    secret: str | None,
    health: Callable[[], dict[str, Any]],
    extra: Sequence[BaseRoute] = (),
) -> Starlette:
    """The ASGI app. ``secret=None`` serves ``/healthz`` only (``alloop serve --no-webhook``);
    ``extra``: more routes (the ML backend's, :mod:`alloop.serve.mlbackend`)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(health())

    key = (secret or "").encode("utf-8")

    async def receive(request: Request) -> JSONResponse:
        given = request.headers.get(SECRET_HEADER)
        if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key):
            logger.warning("Webhook from %s refused: %s %s header", client_host(request),
                           "missing" if given is None else "wrong", SECRET_HEADER)
            return JSONResponse({"error": f"missing or wrong {SECRET_HEADER} header"}, status_code=401)
        length = request.headers.get("content-length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            logger.warning("Webhook from %s refused: Content-Length %r (at most %d bytes)", client_host(request),
                           length[:20], MAX_BODY)
            return JSONResponse({"error": f"expected a Content-Length of at most {MAX_BODY} bytes"}, status_code=413)
        body = await request.body()
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            logger.warning("Webhook from %s refused: the body is not JSON (%s)", client_host(request), exc)
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        tool = request.path_params["tool"].replace("-", "_")
        named = request.query_params.get("project")
        candidates = [t for t in targets.values() if t.source is not None and t.connector == tool]
        if named is not None:
            candidates = [t for t in candidates if t.name == named]
        events = [(t, t.source.webhook_event(payload)) for t in candidates]  # type: ignore[union-attr]
        if candidates and all(ev is None for _, ev in events):
            logger.warning("Webhook from %s refused: not a %s event (expected a JSON object with an \"action\")",
                           client_host(request), tool)
            return JSONResponse({"error": "expected a JSON object with an \"action\" string"}, status_code=400)
        found = _find(events, named)
        if found is None:
            ev = next((e for _, e in events if e is not None), None)
            logger.warning("Webhook %s from %s for a project this server does not drive (project=%r, %s project %r)",
                           ev.action if ev else "?", client_host(request), named, tool, ev.tool_project if ev else None)
            return JSONResponse({"error": "unknown project", "serving": sorted(targets)}, status_code=404)
        target, event = found
        if not event.wakes:
            logger.debug("Webhook %s for %s ignored", event.action, target.name)
            return JSONResponse({"project": target.name, "action": event.action, "woken": False})
        target.wake(f"webhook {event.action}")
        return JSONResponse({"project": target.name, "action": event.action, "woken": True}, status_code=202)

    def _find(
        events: list[tuple[Target, WebhookEvent | None]], named: str | None
    ) -> tuple[Target, WebhookEvent] | None:
        for target, event in events:
            if event is not None and (named is not None or (event.tool_project is not None
                                                           and event.tool_project == target.tool_project)):
                return target, event
        return None

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"]), *extra]
    if secret:  # an empty secret would let anyone in: no receiver then
        routes.append(Route(WEBHOOK_PREFIX + "{tool}", receive, methods=["POST"]))
    return Starlette(routes=routes)
