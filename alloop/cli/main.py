"""The ``alloop`` command. User errors exit 2 with one line; bugs exit 1 (traceback with --debug)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Optional

import typer

from alloop import __version__
from alloop.cli._state import STATE

app = typer.Typer(
    name="alloop",
    help="Active-learning annotation loops: train, select, push to the labeling tool, ingest, repeat.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"alloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step (INFO).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True)] = None,
) -> None:
    level = os.environ.get("ALLOOP_LOG_LEVEL", "DEBUG" if debug else "INFO" if verbose else "WARNING")
    if quiet:
        level = "ERROR"
    from rich.logging import RichHandler

    from alloop.cli._ui import err_console

    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, markup=False)],
        force=True,
    )
    if not debug:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    STATE.debug = debug
    STATE.log_level_chosen = bool(verbose or quiet or debug or os.environ.get("ALLOOP_LOG_LEVEL"))


def _register() -> None:
    from alloop.cli import demo, labelstudio, project, run, serve, simulate

    project.register(app)
    labelstudio.register(app)
    run.register(app)
    serve.register(app)
    simulate.register(app)
    demo.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    from alloop.errors import AlloopError

    try:
        app(args=argv, standalone_mode=False)
    except AlloopError as exc:
        from rich.markup import escape

        from alloop.cli._ui import err_console

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        for note in getattr(exc, "__notes__", ()):
            err_console.print(escape(note), highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # click usage errors and bugs
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if STATE.debug:
            raise
        from rich.markup import escape

        from alloop.cli._ui import err_console

        notes = "".join(f"\n{escape(n)}" for n in getattr(exc, "__notes__", ()))
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}{notes}\n"
            "Run again with --debug for the traceback, and please report it.",
            highlight=False,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
