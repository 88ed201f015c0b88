"""``alloop labelstudio up|stop``: a local Label Studio for a project, in one command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

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


@ls_app.command("up")
def up_cmd(
    project: ProjectOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
) -> None:
    """Install (first time) and start Label Studio, create the project, push the first round."""
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
            report = import_pool(ws.engine, ws.name, scan_source(ws.config.pool.source, ws.work_dir, ws.progress),
                                 test_fraction=ws.config.pool.test_fraction)
            console.print(f"Imported the pool: {report.summary()}.")
        run_project(ws, None, False)
        console.print(rounds_table(project_status(ws.engine, ws.name)))
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
