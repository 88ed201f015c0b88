"""``alloop simulate``: compare strategies with the simulated annotator over many seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from alloop.cli.project import ProjectOpt


def simulation_table(result: Any) -> Any:
    from alloop.cli._ui import table

    rows = [
        (
            r["strategy"], r["runs"], f"{r['aubc_mean']:.4f}", f"{r['aubc_std']:.4f}",
            f"{r['aubc_min']:.4f}", f"{r['aubc_max']:.4f}",
            f"{r['final_acc_mean']:.4f}", f"{r['final_acc_std']:.4f}", r["final_labels"],
        )
        for r in result.table()
    ]
    return table(
        "AUBC: normalized area under the learning curve (mean, std over seeds)",
        ["strategy", "seeds", "AUBC", "±", "min", "max", "final acc", "±", "labels"],
        rows,
    )


def saved_table(result: Any) -> Any:
    from alloop.cli._ui import table

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}"

    rows = [
        (r["strategy"], f"{r['reached']}/{r['paired_seeds']}", num(r["saved_mean"]),
         "-" if r["saved_low"] is None else f"{r['saved_low']:.1f} .. {r['saved_high']:.1f}")
        for r in result.labels_saved()
    ]
    return table(
        "Labels saved: labels each strategy needed to reach the accuracy random reached at the end, "
        "against random's (paired by seed; 95% interval over the seeds that reached it)",
        ["strategy", "reached", "saved", "95% interval"], rows,
    )


def stopping_table(result: Any) -> Any:
    from alloop.cli._ui import table

    def num(v: Any, f: str) -> str:
        return "-" if v is None else format(v, f)

    rows = [
        (r["strategy"], r["rule"], f"{r['fired']}/{r['runs']}", num(r["labels_mean"], ".1f"),
         num(r["accuracy_mean"], ".4f"), num(r["given_up_mean"], ".4f"), r["final_labels"])
        for r in result.stopping_table()
    ]
    return table(
        "Stopping without a test set: where each rule would have stopped (means over the runs where it fired)",
        ["strategy", "rule", "fired", "labels", "accuracy", "given up", "of labels"], rows,
    )


def write_outputs(ws: Any, result: Any, out: Path | None, title: str) -> tuple[Path, Path]:
    from alloop.report import plot_simulation

    folder = out or ws.work_dir / "simulate"
    folder.mkdir(parents=True, exist_ok=True)
    fig = plot_simulation(result, folder / "learning_curves.png", title)
    data = folder / "results.json"
    data.write_text(json.dumps(result.to_json(), indent=2))
    return fig, data


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        project: ProjectOpt = None,
        strategies: Annotated[str, typer.Option(help="Comma-separated strategy names.")] = "margin,coreset,random",
        seeds: Annotated[int, typer.Option(help="Number of seeds per strategy.")] = 10,
        initial_size: Annotated[int, typer.Option(help="Labeled samples to start with (random).")] = 20,
        cold_start: Annotated[Optional[str], typer.Option(
            help="Comma-separated round-0 strategies to compare (e.g. 'ideal,random'); each run pairs one "
                 "with one of --strategies, labelled 'ideal+margin'. Default: the project's cold start.")] = None,
        initial_per_class: Annotated[bool, typer.Option(
            help="Start from one random example per class instead.")] = False,
        batch_size: Annotated[int, typer.Option(help="Samples per round (down to 1).")] = 10,
        rounds: Annotated[int, typer.Option(help="Rounds per run, round 0 included.")] = 15,
        test_split: Annotated[float, typer.Option(help="Fraction held out for accuracy (per seed).")] = 0.3,
        estimator: Annotated[Optional[str], typer.Option(help="scikit-learn classifier import path.")] = None,
        estimator_params: Annotated[Optional[str], typer.Option(help="JSON object of estimator parameters.")] = None,
        noise: Annotated[float, typer.Option(help="Annotator noise rate.")] = 0.0,
        jobs: Annotated[int, typer.Option(help="Parallel processes (-1: all cores).")] = -1,
        out: Annotated[Optional[Path], typer.Option(help="Output folder (default: <work_dir>/simulate).")] = None,
        stopping: Annotated[bool, typer.Option(
            help="Measure each round's model on a stop set and report where the stopping rules "
                 "(stabilizing predictions, overall uncertainty) would have stopped.")] = False,
    ) -> None:
        """Run the loop with the simulated annotator for each strategy and seed; AUBC table and figure."""
        from alloop.cli._ui import console
        from alloop.cli.run import _workspace
        from alloop.config import Component
        from alloop.errors import ConfigError
        from alloop.simulate import SimulationSpec, simulate

        if batch_size < 1 or initial_size < 1 or rounds < 1 or seeds < 1:
            raise ConfigError("--batch-size, --initial-size, --rounds and --seeds must be at least 1.")
        if not 0 < test_split < 1:
            raise ConfigError(f"--test-split must be between 0 and 1 (exclusive). Got {test_split}.")
        learner = None
        if estimator or estimator_params:
            try:
                params = json.loads(estimator_params) if estimator_params else {}
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--estimator-params must be a JSON object: {exc}.") from None
            lp: dict[str, Any] = {"params": params}
            if estimator:
                lp["estimator"] = estimator
            learner = Component(name="sklearn", params=lp)
        spec = SimulationSpec(
            strategies=tuple(Component(name=n.strip()) for n in strategies.split(",") if n.strip()),
            seeds=tuple(range(seeds)),
            initial_size=initial_size,
            batch_size=batch_size,
            rounds=rounds,
            test_fraction=test_split,
            learner=learner,
            noise=noise,
            initial_per_class=initial_per_class,
            cold_starts=tuple(Component(name=n.strip()) for n in (cold_start or "").split(",") if n.strip()),
            stopping=stopping,
        )
        ws = _workspace(project)
        try:
            ws.ensure_project()
            result = simulate(ws, spec, n_jobs=jobs, progress=ws.progress)
            console.print(simulation_table(result))
            if result.labels_saved():
                console.print(saved_table(result))
            if stopping:
                console.print(stopping_table(result))
            fig, data = write_outputs(ws, result, out, f"{ws.name}: {len(spec.seeds)} seeds")
        finally:
            ws.close()
        console.print(f"Learning curves: {fig}\nAll runs: {data}")
