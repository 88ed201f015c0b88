"""``alloop labelstudio up|stop|connect``: a local Label Studio for a project, in one command; alloop
serve as its ML backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from alloop.cli.project import ProjectOpt

ls_app = typer.Typer(
    help="Run a local Label Studio server for a project (its own virtualenv, loopback).", no_args_is_help=True
)


def _server(ws: Any, port: int) -> Any:
    from connectors.label_studio.server import DEFAULT_VENV, LocalLabelStudio

    root = ws.pool_root()
    document_root = Path(root).resolve().parent if root is not None else None
    venv = Path(os.environ.get("ALLOOP_LS_VENV", DEFAULT_VENV))
    return LocalLabelStudio(data_dir=ws.work_dir / "label-studio", port=port, venv=venv, document_root=document_root)


def _workspace(project: Path | None) -> Any:
    from alloop.cli.run import _workspace as ws
    from alloop.errors import ConfigError

    w = ws(project)
    if w.config.connector.name != "label_studio":
        raise ConfigError(
            f"Project {w.name!r} uses the {w.config.connector.name!r} connector. Set [connector] name = "
            '"label_studio" in alloop.toml (or create the project with `alloop init --connector label_studio`).'
        )
    return w


def ml_formats() -> list[Any]:
    """The labeling tools ``alloop serve`` can be the ML backend of (Label Studio)."""
    from connectors.label_studio.ml import LabelStudioFormat

    return [LabelStudioFormat()]


SERVE_URL_ENV = "ALLOOP_SERVE_URL"
ServeUrlOpt = Annotated[
    Optional[str],
    typer.Option("--serve-url", envvar=SERVE_URL_ENV,
                 help="How Label Studio reaches `alloop serve` (its --public-url), e.g. http://127.0.0.1:8765."),
]


def _connect(ws: Any, serve_url: str, title: str) -> str:
    """Register ``alloop serve`` at ``serve_url`` as the project's ML backend; a line to print."""
    from alloop.errors import ConfigError
    from alloop.serve.mlbackend import PASSWORD_ENV, USER_ENV, credentials_from_env
    from connectors.label_studio.ml import backend_url, connect

    creds = credentials_from_env()
    if creds is None:
        raise ConfigError(
            f"{PASSWORD_ENV} is not set: Label Studio calls the ML backend with HTTP Basic auth, user "
            f"${USER_ENV} (default \"alloop\") and this password. Set it here and for `alloop serve` "
            f"(e.g. `export {PASSWORD_ENV}=$(openssl rand -hex 32)`); the environment only, never alloop.toml."
        )
    url = backend_url(serve_url, ws.name)
    reg = connect(ws.connector, url, user=creds.user, password=creds.password, title=title)
    what = "registered" if reg.created else "already registered"
    return f"ML backend {url} {what} in Label Studio (backend {reg.backend_id}, {reg.state})."


@ls_app.command("connect")
def connect_cmd(
    project: ProjectOpt = None,
    serve_url: ServeUrlOpt = None,
    title: Annotated[str, typer.Option(help="The model's name in Label Studio.")] = "alloop",
) -> None:
    """Register `alloop serve` as the project's ML backend in Label Studio (idempotent; serve must be running
    with $ALLOOP_ML_BACKEND_PASSWORD set, the same as here)."""
    from alloop.cli._ui import console

    ws = _workspace(project)
    try:
        console.print(_connect(ws, serve_url or "http://127.0.0.1:8765", title), highlight=False)
    finally:
        ws.close()


@ls_app.command("up")
def up_cmd(
    project: ProjectOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    serve_url: ServeUrlOpt = None,
) -> None:
    """Install (first time) and start Label Studio, create the project, push the first round; with
    --serve-url (or $ALLOOP_SERVE_URL) of a running `alloop serve`, connect it as the ML backend."""
    from sqlmodel import func, select

    from alloop.cli._ui import console
    from alloop.cli.run import rounds_table, run_project
    from alloop.pool.importer import import_pool
    from alloop.pool.sources import scan_source
    from alloop.report import project_status
    from alloop.store.engine import session_scope
    from alloop.store.models import Sample

    ws = _workspace(project)
    try:
        server = _server(ws, port)
        if not server.installed():
            console.print(f"Installing Label Studio into {server.venv} (first time only, about 2 minutes) ...")
            server.install()
        console.print(f"Starting Label Studio on {server.url} (first start migrates its database: up to a minute) ...")
        server.start()
        creds = server.credentials()
        os.environ.update({k: v for k, v in creds.items() if k.startswith("LABEL_STUDIO_")})
        project_row = ws.ensure_project()
        with session_scope(ws.engine) as s:
            n = s.exec(select(func.count()).select_from(Sample).where(Sample.project_id == project_row.id)).one()
        if n == 0:
            scan = scan_source(ws.config.pool.source, ws.work_dir, ws.progress, wait=False)
            report = import_pool(ws.engine, ws.name, scan, test_fraction=ws.config.pool.test_fraction)
            console.print(f"Imported the pool: {report.summary()}.")
        run_project(ws, None, False)
        console.print(rounds_table(project_status(ws.engine, ws.name)))
        if serve_url:
            console.print(_connect(ws, serve_url, "alloop"), highlight=False)
    finally:
        ws.close()
    console.print(
        f"\n[bold]Label Studio is running:[/] {server.url}\n"
        f"  log in as {creds['ALLOOP_LS_ADMIN_EMAIL']} / password in {server.credentials_file}\n"
        f"  label the tasks of project \"alloop: {ws.name}\", then continue the loop with:\n\n"
        f"    source {server.credentials_file}\n"
        f"    alloop run -p {ws.work_dir.parent}\n\n"
        f"  stop the server with: alloop labelstudio stop -p {ws.work_dir.parent}",
        highlight=False,
    )


@ls_app.command("stop")
def stop_cmd(project: ProjectOpt = None, port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080) -> None:
    """Stop the project's local Label Studio server."""
    from alloop.cli._ui import console

    ws = _workspace(project)
    server = _server(ws, port)
    ws.close()
    console.print("Label Studio stopped." if server.stop() else "No Label Studio server was running for this project.")


def register(app: typer.Typer) -> None:
    app.add_typer(ls_app, name="labelstudio")
