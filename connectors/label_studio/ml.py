"""alloop as Label Studio's ML backend: the Label Studio side.

- :class:`LabelStudioFormat` reads what Label Studio sends to an ML backend (its labeling config,
  its ``"<project id>.<created timestamp>"`` project uid) and writes the predictions it stores,
  exactly as the connector does for pre-annotations (:func:`~connectors.label_studio.labeling_config.inspect`,
  :func:`~connectors.label_studio.results.prediction_json`). ``alloop serve`` gets it injected
  (:mod:`alloop.serve.mlbackend` knows no labeling tool).
- :func:`connect` registers ``alloop serve`` as a project's ML backend through the Label Studio
  API (``/api/ml``), idempotently, with HTTP Basic auth, and authenticates the webhook Label
  Studio creates along with it.

Label Studio checks a backend when it is saved or read (``GET /health`` within 1 s, then
``POST /setup`` within 3 s, with the Basic credentials): ``alloop serve`` must be running with
the ML backend on before :func:`connect`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Any

from alloop.errors import ConnectorDataError
from alloop.protocols import Prediction
from connectors.label_studio.connector import WEBHOOK_ACTIONS, LabelStudioConnector
from connectors.label_studio.labeling_config import ConfigInfo, inspect
from connectors.label_studio.results import prediction_json

logger = logging.getLogger(__name__)

__all__ = ["LabelStudioFormat", "MLBackendRegistration", "backend_url", "connect"]

#: Label Studio's ML backend states (ml.models.MLBackendState)
STATES = {"CO": "connected", "DI": "disconnected", "ER": "error", "TR": "training", "PR": "predicting"}


class LabelStudioFormat:
    """What Label Studio's ML backend calls carry, read and written the connector's way."""

    name = "label_studio"
    title = "Label Studio"

    def check_config(self, xml: str, task: str, labels: Sequence[str], where: str) -> ConfigInfo:
        """The parsed labeling config; :class:`~alloop.errors.ConfigError` naming what differs."""
        return inspect(xml, task, tuple(labels), where)

    def prediction(self, info: Any, pred: Prediction) -> dict[str, Any]:
        """One stored prediction: ``{"model_version", "score", "result"}``."""
        return prediction_json(pred, info)

    def tool_project(self, uid: Any) -> str | None:
        """Label Studio's project id from the ``project`` field of /setup, /predict and /train
        (``"12.1733232000"``: id and creation time) or of a webhook (``{"id": 12, ...}``)."""
        if isinstance(uid, dict):
            uid = uid.get("id")
        if isinstance(uid, bool) or not isinstance(uid, (int, str)):
            return None
        head = str(uid).split(".", 1)[0]
        return head if head.isdigit() else None


def backend_url(serve_url: str, project: str) -> str:
    """The URL Label Studio calls for ``project`` (it appends /health, /setup, /predict, ...)."""
    return f"{serve_url.rstrip('/')}/ml/{project}"


class MLBackendRegistration:
    """What :func:`connect` found or made."""

    def __init__(self, backend_id: int, created: bool, state: str, webhook_id: int | None) -> None:
        self.backend_id = backend_id
        self.created = created
        self.state = state
        self.webhook_id = webhook_id

    def __repr__(self) -> str:
        return (f"MLBackendRegistration(backend_id={self.backend_id}, created={self.created}, "
                f"state={self.state!r}, webhook_id={self.webhook_id})")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def connect(
    conn: LabelStudioConnector, url: str, *, user: str, password: str, title: str = "alloop",
    timeout_s: float = 100.0,
) -> MLBackendRegistration:
    """Register ``url`` as the ML backend of the connector's Label Studio project (idempotent).

    A backend of the project with the same URL is kept (and its credentials updated when Label
    Studio cannot reach it with the ones it has); otherwise one is created. Label Studio then
    creates a webhook to ``<url>/webhook`` that fires for every event without credentials: it is
    narrowed to annotation events and given the Basic ``Authorization`` header.
    """
    api, pid = conn.api, conn.project_id
    sdk = api.sdk
    url = url.rstrip("/")
    found = [b for b in api.call("list ML backends", lambda: list(sdk.ml.list(project=pid)))
             if (b.url or "").rstrip("/") == url]
    auth = dict(auth_method="BASIC_AUTH", basic_auth_user=user, basic_auth_pass=password)
    created = False
    if found:
        backend = found[0]
        # reading it makes Label Studio check it (health + setup) with the credentials it holds
        backend = api.call("read the ML backend", lambda: sdk.ml.get(backend.id))
        if backend.state != "CO" or backend.basic_auth_user != user or backend.auth_method != "BASIC_AUTH":
            backend = api.call("update the ML backend", lambda: sdk.ml.update(
                backend.id, url=url, project=pid, title=backend.title or title, timeout=timeout_s, **auth),
                retry=False)
            logger.info("Updated Label Studio ML backend %s of project %s -> %s", backend.id, pid, url)
    else:
        backend = api.call("register the ML backend", lambda: sdk.ml.create(
            url=url, project=pid, title=title, timeout=timeout_s, is_interactive=False, **auth), retry=False)
        created = True
        logger.info("Registered Label Studio ML backend %s of project %s -> %s", backend.id, pid, url)
    backend = api.call("read the ML backend", lambda: sdk.ml.get(backend.id))
    state = STATES.get(str(backend.state), str(backend.state))
    if state != "connected":
        raise ConnectorDataError(
            f"Label Studio registered {url} as the ML backend of project {pid}, but reports it {state}"
            f"{': ' + backend.error_message if backend.error_message else ''}. Check that `alloop serve` runs "
            "with the ML backend on (ALLOOP_ML_BACKEND_PASSWORD set, the same as here) and that Label Studio "
            "can reach that URL (a server on a private address needs ML_BLOCK_LOCAL_IP=false)."
        )
    return MLBackendRegistration(int(backend.id), created, state, _authenticate_webhook(conn, url, user, password))


def _authenticate_webhook(conn: LabelStudioConnector, url: str, user: str, password: str) -> int | None:
    """Narrow the webhook Label Studio made for the backend to annotation events, with credentials."""
    api, pid = conn.api, conn.project_id
    sdk = api.sdk
    target = url + "/webhook"
    hooks = api.call("list webhooks", lambda: list(sdk.webhooks.list(project=str(pid))))
    mine = [h for h in hooks if getattr(h, "project", None) == pid and h.url == target]
    wanted = {"url": target, "actions": list(WEBHOOK_ACTIONS), "headers": {"Authorization": _basic(user, password)},
              "send_payload": True, "send_for_all_actions": False, "is_active": True}
    if not mine:
        hook = api.call("create the ML backend webhook", lambda: sdk.webhooks.create(project=pid, **wanted))
        return int(hook.id)
    hook = mine[0]
    current = {"url": hook.url, "actions": sorted(hook.actions or []), "headers": dict(hook.headers or {}),
               "send_payload": hook.send_payload, "send_for_all_actions": hook.send_for_all_actions,
               "is_active": hook.is_active}
    if current != {**wanted, "actions": sorted(WEBHOOK_ACTIONS)}:
        api.call("update the ML backend webhook", lambda: sdk.webhooks.update(hook.id, **wanted))
    return int(hook.id)
