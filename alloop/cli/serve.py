"""``alloop serve``: run projects unattended - on a schedule and when Label Studio reports labels."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

SECRET_ENV = "ALLOOP_WEBHOOK_SECRET"


def _plain_logging() -> None:
    """One plain line per record on stderr (journald, docker logs); INFO unless -v/-q/--debug or
    ALLOOP_LOG_LEVEL chose a level, so each round transition shows."""
    from alloop.cli._state import STATE

    root = logging.getLogger()
    level = root.level if STATE.log_level_chosen else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn", "uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        project: Annotated[
            Optional[list[Path]],
            typer.Option("--project", "-p", help="Project file or folder; repeat for several projects "
                         "(default: ./alloop.toml or $ALLOOP_PROJECT_FILE)."),
        ] = None,
        host: Annotated[str, typer.Option(
            help="Address the HTTP server (webhooks, /healthz) listens on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port of the HTTP server.")] = 8765,
        public_url: Annotated[
            Optional[str],
            typer.Option("--public-url", help="How Label Studio reaches this server (default http://HOST:PORT)."),
        ] = None,
        register_webhook: Annotated[
            Optional[bool],
            typer.Option("--register-webhook/--no-register-webhook",
                         help="Create/update the webhook in each Label Studio project at start "
                              "(default: on for the label_studio connector)."),
        ] = None,
        no_webhook: Annotated[
            bool,
            typer.Option("--no-webhook", help=f"Scheduled ticks only: no webhook receiver, no {SECRET_ENV} needed."),
        ] = False,
    ) -> None:
        """Drive projects unattended: tick each on its schedule (alloop.toml, serve section) and when Label
        Studio reports annotations (webhook, secret in $ALLOOP_WEBHOOK_SECRET); GET /healthz; SIGTERM stops
        after the transition in progress. With $ALLOOP_ML_BACKEND_PASSWORD set, also Label Studio's ML
        backend at /ml/<project> (HTTP Basic user $ALLOOP_ML_BACKEND_USER, default "alloop") and the status
        page at / (same credentials)."""
        from alloop import registry
        from alloop.config import load_config
        from alloop.errors import ConfigError
        from alloop.protocols import WebhookSource
        from alloop.serve.service import Service
        from alloop.workspace import Workspace

        _plain_logging()
        paths: list[Path | None] = [*project] if project else [None]
        configs = [load_config(p)[0] for p in paths]
        secret = None if no_webhook else (os.environ.get(SECRET_ENV) or None)
        wants_hooks = any(issubclass(registry.load("connector", c.connector.name), WebhookSource)
                          for c in configs) or register_webhook
        if secret is None and wants_hooks and not no_webhook:
            raise ConfigError(
                f"{SECRET_ENV} is not set: the webhook receiver needs a shared secret, which Label Studio sends "
                f"with every call. Set it in the environment (e.g. `export {SECRET_ENV}=$(openssl rand -hex 32)`), "
                "or pass --no-webhook to tick on the schedule only."
            )
        if secret is not None and len(secret) < 16:
            logging.getLogger(__name__).warning("%s is short (%d characters); use 32 random characters or more",
                                                SECRET_ENV, len(secret))
        if no_webhook and register_webhook:
            raise ConfigError("--register-webhook and --no-webhook contradict each other: keep one.")
        from alloop.cli.labelstudio import ml_formats
        from alloop.serve.mlbackend import PASSWORD_ENV, credentials_from_env

        ml = credentials_from_env()
        if ml is not None and len(ml.password) < 16:
            logging.getLogger(__name__).warning("%s is short (%d characters); use 32 random characters or more",
                                                PASSWORD_ENV, len(ml.password))
        workspaces = [Workspace(c) for c in configs]
        service = Service(workspaces, host=host, port=port, public_url=public_url,
                          secret=secret if wants_hooks else None, register_webhook=register_webhook,
                          ml_backend=ml, ml_formats=ml_formats())
        service.serve_forever()
