"""``alloop demo``: a full active-learning session on the bundled digits images, then a comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        directory: Annotated[Path, typer.Option("--dir", help="Folder for the demo project.")] = Path("demo"),
        seeds: Annotated[int, typer.Option(help="Seeds per strategy in the comparison.")] = 10,
        rounds: Annotated[int, typer.Option(help="Rounds per run (round 0 included).")] = 15,
        jobs: Annotated[int, typer.Option(help="Parallel processes (-1: all cores).")] = -1,
    ) -> None:
        """Digits images + SQLite + simulated annotator: one persisted session, then margin/coreset/random compared."""
        import shutil

        from alloop.cli._ui import console, make_progress
        from alloop.cli.project import init_config
        from alloop.cli.run import rounds_table, run_project
        from alloop.cli.simulate import simulation_table, write_outputs
        from alloop.config import PROJECT_FILE, Component, dumps_toml, load_config
        from alloop.pool.importer import import_pool
        from alloop.pool.sources import scan_source
        from alloop.report import learning_curve, plot_learning_curve, project_status
        from alloop.simulate import SimulationSpec, simulate
        from alloop.workspace import Workspace

        directory = directory.resolve()
        if (directory / ".alloop").exists():
            shutil.rmtree(directory / ".alloop")  # a demo starts fresh
        directory.mkdir(parents=True, exist_ok=True)
        data = init_config(name="digits-demo", dataset="digits", strategy="margin", initial_size=20,
                           batch_size=10, max_rounds=rounds, test_fraction=0.3)
        (directory / PROJECT_FILE).write_text(dumps_toml(data), encoding="utf-8")
        cfg, _ = load_config(directory)
        ws = Workspace(cfg, progress=make_progress())
        try:
            console.rule("[bold]1. Import the bundled digits images")
            ws.ensure_project()
            report = import_pool(ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir, ws.progress, wait=False),
                                 test_fraction=cfg.pool.test_fraction)
            console.print(f"{report.summary()}; database {ws.engine.url}")

            console.rule("[bold]2. One active-learning session (margin, simulated annotator)")
            run_project(ws, None, False)
            console.print(rounds_table(project_status(ws.engine, ws.name)))
            curve = plot_learning_curve(learning_curve(ws.engine, ws.name),
                                        ws.work_dir / "report" / "learning_curve.png", "digits-demo: margin session")

            console.rule(f"[bold]3. Compare strategies over {seeds} seeds")
            spec = SimulationSpec(
                strategies=tuple(Component(name=n) for n in ("margin", "entropy", "coreset", "random")),
                seeds=tuple(range(seeds)), initial_size=20, batch_size=10, rounds=rounds, test_fraction=0.3,
            )
            result = simulate(ws, spec, n_jobs=jobs, progress=ws.progress)
            console.print(simulation_table(result))
            fig, results = write_outputs(ws, result, None, f"digits (1,797 images), {seeds} seeds")
            table = {r["strategy"]: r for r in result.table()}
            gain = table["margin"]["aubc_mean"] - table["random"]["aubc_mean"]
            verdict = "beats" if gain > 0 else "does NOT beat"
            console.print(f"margin {verdict} random on AUBC by {gain:+.4f} (mean over {seeds} seeds).")
            console.print(f"Session learning curve: {curve}\nComparison figure: {fig}\nRaw results: {results}")
            console.print(f"Explore: alloop status -p {directory}   |   alloop report -p {directory}")
        finally:
            ws.close()
