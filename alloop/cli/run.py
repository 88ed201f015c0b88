"""``alloop run``, ``status``, ``report`` and ``retry``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from alloop.cli.project import ProjectOpt


def _fmt_acc(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "-"


def _when(iso: str) -> str:
    """``2026-01-01 10:05:00 UTC (in 4 min)`` from an ISO time."""
    from datetime import datetime, timezone

    at = datetime.fromisoformat(iso)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    delta = (at - datetime.now(timezone.utc)).total_seconds()
    rel = "due now" if abs(delta) < 1 else (f"in {_span(delta)}" if delta > 0 else f"{_span(-delta)} ago")
    return f"{at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC ({rel})"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _short(status: dict[str, Any]) -> str:
    return "mAP50" if "mAP" in status.get("metric", "") else "acc"


def rounds_table(status: dict[str, Any]) -> Any:
    from alloop.cli._ui import table

    rounds = status["rounds"]
    stops = any(r.get("stop_kappa") is not None or r.get("stop_uncertainty") is not None for r in rounds)
    rows = [
        (
            r["round"], r["state"], r["strategy"], r["selected"], r["pushed"],
            f"{r['resolved']}/{r['pushed']}", r["train_labels"], _fmt_acc(r["accuracy"]),
            *((_fmt_acc(r.get("stop_kappa")), _fmt_acc(r.get("stop_uncertainty"))) if stops else ()),
        )
        for r in rounds
    ]
    final = status.get("final_model")
    if final:
        rows.append(("final", "", "", "", "", "", final["n_labels"], _fmt_acc(final["accuracy"]),
                     *(("", "") if stops else ())))
    columns = ["round", "state", "strategy", "picked", "pushed", "done", "labels", _short(status)]
    title = f"Project {status['project']} - {status['status']} (labels/{_short(status)}: the round's model"
    if stops:  # the stop set's measures (alloop.loop.stopping)
        columns += ["kappa", "uncert."]
        title += "; kappa with the previous model and mean uncertainty on the stop set"
    return table(title + ")", columns, rows)


def _workspace(project: Path | None) -> Any:
    from alloop.cli._ui import make_progress
    from alloop.config import load_config
    from alloop.workspace import Workspace

    cfg, _ = load_config(project)
    return Workspace(cfg, progress=make_progress())


def run_project(ws: Any, rounds: int | None, once: bool, echo: bool = True) -> list[Any]:
    """Ensure the project, check the pool, tick (printing one line per tick)."""
    from sqlmodel import func, select

    from alloop.cli._ui import console
    from alloop.errors import EmptyPoolError
    from alloop.loop.controller import Controller
    from alloop.store.engine import session_scope
    from alloop.store.models import Sample

    project = ws.ensure_project()
    with session_scope(ws.engine) as s:
        n = s.exec(
            select(func.count()).select_from(Sample).where(Sample.project_id == project.id, Sample.status == "ok")
        ).one()
    if n == 0:
        raise EmptyPoolError(f"Project {ws.name!r} has no readable samples. Run `alloop import` first.")
    ws.validate()

    def show(r: Any) -> None:
        if echo:
            console.print(f"[dim]{r.action:>10}[/]  {r.message}", highlight=False)

    ctl = Controller(ws)
    if once:
        r = ctl.tick()
        show(r)
        return [r]
    return ctl.run(rounds_to_close=rounds, on_tick=show)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        project: ProjectOpt = None,
        rounds: Annotated[Optional[int], typer.Option(help="Stop after this many rounds closed.")] = None,
        once: Annotated[bool, typer.Option(help="Do a single step (one tick) and exit; for cron.")] = False,
    ) -> None:
        """Advance the project: train, select, push, collect labels - until done or waiting for labels."""
        from alloop.cli._ui import console
        from alloop.report import project_status

        ws = _workspace(project)
        try:
            results = run_project(ws, rounds, once)
            if not once:
                console.print(rounds_table(project_status(ws.engine, ws.name)))
                if results and results[-1].waiting:
                    console.print("Waiting for labels; run `alloop run` again once annotators made progress.")
        finally:
            ws.close()

    @app.command("status")
    def status_cmd(
        project: ProjectOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Show the project's rounds, labels and models."""
        from alloop.cli._ui import console
        from alloop.report import project_status

        ws = _workspace(project)
        try:
            status = project_status(ws.engine, ws.name)
        finally:
            ws.close()
        if as_json:
            typer.echo(json.dumps(status, indent=2))
            return
        sm = status["samples"]
        console.print(
            f"{status['project']} ({status['task']}, {len(status['labels'])} labels): {sm['pool']} in pool, "
            f"{sm['test']} held out, {sm['quarantined']} quarantined; "
            f"{status['invalid_annotations']} invalid annotations."
        )
        if status["finished_reason"]:
            console.print(f"Finished: {status['finished_reason']}")
        nxt = status.get("next_action")
        if nxt:
            console.print(f"Next: {nxt['what']} at {_when(nxt['at'])}", highlight=False)
        console.print(rounds_table(status))
        for r in status["rounds"]:
            if r["last_error"]:
                console.print(f"[yellow]round {r['round']} last error (attempt {r['attempt']}):[/] {r['last_error']}")

    @app.command("report")
    def report_cmd(
        project: ProjectOpt = None,
        out: Annotated[Optional[Path], typer.Option(
            help="PNG path (default: <work_dir>/report/learning_curve.png).")] = None,
        html: Annotated[Optional[Path], typer.Option(
            "--html", help="Also write the status page (the one alloop serve shows at /) to this HTML file.")] = None,
    ) -> None:
        """Per-round table and a learning-curve PNG (labels vs held-out accuracy); --html: the status page."""
        from alloop.cli._ui import console
        from alloop.report import learning_curve, plot_learning_curve, project_status

        ws = _workspace(project)
        try:
            status = project_status(ws.engine, ws.name)
            points = learning_curve(ws.engine, ws.name)
            if html is not None:
                from alloop.serve.status import write_html

                write_html(ws, html)
        finally:
            ws.close()
        console.print(rounds_table(status))
        if html is not None:
            console.print(f"Status page: {html}")
        if not points:
            console.print(f"No model with a {status['metric']} yet (needs labels and a test split); no figure written.")
            return
        path = out or ws.work_dir / "report" / "learning_curve.png"
        plot_learning_curve(points, path, f"{ws.name}: learning curve", ylabel=status["metric"])
        console.print(f"Learning curve: {path}")

    @app.command("export")
    def export_cmd(
        out: Annotated[Path, typer.Argument(help="Output file: .json (COCO, detection), .jsonl or .csv.")],
        project: ProjectOpt = None,
        fmt: Annotated[Optional[str], typer.Option(
            "--format", help="coco | jsonl | csv (default: from the file name).")] = None,
        absolute_paths: Annotated[bool, typer.Option(
            help="COCO file_name: absolute image paths instead of paths relative to the pool folder.")] = False,
    ) -> None:
        """Export the labels collected so far: COCO boxes (detection) or one label per sample."""
        from alloop.cli._ui import console
        from alloop.export import export_labels

        ws = _workspace(project)
        try:
            counts = export_labels(ws, out, fmt, absolute_paths=absolute_paths)
        finally:
            ws.close()
        extra = f", {counts['boxes']} boxes" if "boxes" in counts else ""
        console.print(f"Exported {counts['samples']} labeled samples{extra} to {out}")

    @app.command("retry")
    def retry_cmd(project: ProjectOpt = None) -> None:
        """Resume a FAILED round from the state it failed in."""
        from alloop.cli._ui import console
        from alloop.loop.controller import Controller

        ws = _workspace(project)
        try:
            with Controller(ws) as ctl:
                rnd = ctl.retry()
        finally:
            ws.close()
        console.print(f"Round {rnd.number} is back in {rnd.state}; run `alloop run` to continue.")
