"""``alloop init`` and ``alloop import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

ProjectOpt = Annotated[
    Optional[Path],
    typer.Option("--project", "-p", help="Project file or folder (default: ./alloop.toml or $ALLOOP_PROJECT_FILE)."),
]

DATASETS = ("digits", "iris", "wine", "breast_cancer")


def init_config(
    *,
    name: str,
    dataset: str | None = None,
    images: Path | None = None,
    labels_from_subfolders: bool = False,
    texts: Path | None = None,
    vectors: Path | None = None,
    labels: list[str] | None = None,
    strategy: str = "margin",
    connector: str = "oracle",
    initial_size: int = 20,
    batch_size: int = 10,
    max_rounds: int | None = 10,
    test_fraction: float | None = None,
    features: str | None = None,
    cold_start: str = "random",
    annotations: Path | None = None,
    proposals: Path | None = None,
    trainer: str | None = None,
) -> dict[str, Any]:
    """The content of a new project file (validated before it is written).

    ``annotations`` (COCO ground truth) or ``proposals`` (autolabels or a YOLO .onnx) make a
    detection project over ``images``: ofds on the proposals (random without them), no model
    unless ``trainer`` (a training command for the ``command`` learner) is given.
    """
    from alloop.errors import ConfigError

    override, chosen = features, [x for x in (dataset, images, texts, vectors) if x is not None]
    if len(chosen) > 1:
        raise ConfigError("Give one pool source: --dataset, --images, --texts or --vectors.")
    features = "pixels"
    task = "classification"
    if images is not None:
        source: dict[str, Any] = {
            "type": "folder", "path": str(images), "labels_from_subfolders": labels_from_subfolders
        }
    elif texts is not None:
        source, features, task = {"type": "texts", "path": str(texts)}, "hashing", "text"
    elif vectors is not None:
        source, features = {"type": "vectors", "path": str(vectors)}, "vector"
    else:
        dataset = dataset or "digits"
        if dataset not in DATASETS:
            raise ConfigError(f"Unknown dataset {dataset!r}. Bundled datasets: {', '.join(DATASETS)}.")
        source = {"type": "bundled", "name": dataset}
        if dataset != "digits":
            features = "vector"
    from alloop import registry

    for option, value in (("--strategy", strategy), ("--cold-start", cold_start)):
        if value not in (names := registry.available("strategy")):
            raise ConfigError(f"Unknown strategy {value!r} for {option}. Known strategies: {', '.join(names)}.")
    if override is not None:
        known = registry.available("encoder")
        if override not in known:
            raise ConfigError(f"Unknown encoder {override!r} for --features. Known encoders: {', '.join(known)}.")
        features = override
    has_truth = images is None or labels_from_subfolders
    learner: dict[str, Any] = {"name": "sklearn", "params": {"scale": features == "vector"}}
    detection = annotations is not None or proposals is not None
    if detection:
        if images is None:
            raise ConfigError(
                "--annotations and --proposals describe a detection project: give its --images folder too."
            )
        task, has_truth = "detection", annotations is not None
        if annotations is not None:
            source["annotations"] = str(annotations)
        if strategy == "margin":  # the default needs class probabilities, which a detection project has not
            strategy = "ofds" if proposals is not None else "random"
        if cold_start == "random" and proposals is not None:
            cold_start = "ofds"
    if trainer is not None:
        learner = {"name": "command", "params": {"command": trainer}}
    elif detection:
        learner = {"name": "none"}
    data: dict[str, Any] = {
        "project": {"name": name, "task": task, "seed": 0, "work_dir": ".alloop"},
        "pool": {
            "source": source,
            "test_fraction": test_fraction if test_fraction is not None else (0.3 if has_truth else 0.0),
        },
        "features": {"name": features},
        "learner": learner,
        "strategy": {"name": strategy},
        "cold_start": {"name": cold_start},
        "connector": {"name": connector},
        "loop": {"initial_size": initial_size, "batch_size": batch_size, "max_rounds": max_rounds},
    }
    if labels:
        data["project"]["labels"] = labels
    if proposals is not None:
        data["proposals"] = {
            "source": "onnx" if proposals.suffix.lower() == ".onnx" else "file", "path": str(proposals)
        }
    from alloop.config import parse_config

    parse_config(data, where="options of `alloop init`")
    return data


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init_cmd(
        directory: Annotated[Path, typer.Argument(help="Folder for the project (created if missing).")] = Path("."),
        name: Annotated[Optional[str], typer.Option(help="Project name (default: the folder name).")] = None,
        dataset: Annotated[Optional[str], typer.Option(help=f"Bundled dataset: {', '.join(DATASETS)}.")] = None,
        images: Annotated[Optional[Path], typer.Option(help="Folder of images to label.")] = None,
        labels_from_subfolders: Annotated[bool, typer.Option(help="Images sit in one sub-folder per class.")] = False,
        texts: Annotated[Optional[Path], typer.Option(help="JSONL/CSV file of texts.")] = None,
        vectors: Annotated[Optional[Path], typer.Option(help=".npy/.parquet feature vectors.")] = None,
        labels: Annotated[Optional[str], typer.Option(help="Comma-separated label set.")] = None,
        strategy: Annotated[str, typer.Option(help="Acquisition strategy.")] = "margin",
        cold_start: Annotated[str, typer.Option(
            help="Round-0 strategy (no model yet): random, coreset, ideal, ...")] = "random",
        features: Annotated[Optional[str], typer.Option(
            help="Encoder (default: pixels for images, hashing for texts, vector for vectors), "
                 "e.g. open_clip, transformers.")] = None,
        connector: Annotated[str, typer.Option(help="Labeling connector: oracle (simulated), jsonl, ...")] = "oracle",
        annotations: Annotated[Optional[Path], typer.Option(
            help="Detection: COCO ground-truth boxes of --images "
                 "(for the simulated annotator and held-out mAP).")] = None,
        proposals: Annotated[Optional[Path], typer.Option(
            help="Detection: object proposals to select from, an autolabel file (.json COCO, .jsonl) "
                 "or a YOLO .onnx.")] = None,
        trainer: Annotated[Optional[str], typer.Option(
            help="Your training command (the 'command' learner), e.g. \"python train.py\".")] = None,
        initial_size: Annotated[int, typer.Option(help="Samples in round 0.")] = 20,
        batch_size: Annotated[int, typer.Option(help="Samples per later round.")] = 10,
        rounds: Annotated[int, typer.Option(help="Maximum number of rounds.")] = 10,
        force: Annotated[bool, typer.Option(help="Overwrite an existing alloop.toml.")] = False,
    ) -> None:
        """Write a project file (alloop.toml)."""
        from alloop.cli._ui import console
        from alloop.config import PROJECT_FILE, dumps_toml
        from alloop.errors import ConfigError

        directory.mkdir(parents=True, exist_ok=True)
        target = directory / PROJECT_FILE
        if target.exists() and not force:
            raise ConfigError(f"{target} already exists. Use --force to overwrite it, or pick another folder.")
        resolve = lambda p: p.resolve() if p is not None else None  # noqa: E731
        data = init_config(
            name=name or directory.resolve().name,
            dataset=dataset,
            images=resolve(images),
            labels_from_subfolders=labels_from_subfolders,
            texts=resolve(texts),
            vectors=resolve(vectors),
            labels=[x.strip() for x in labels.split(",")] if labels else None,
            strategy=strategy,
            cold_start=cold_start,
            features=features,
            connector=connector,
            annotations=resolve(annotations),
            proposals=resolve(proposals),
            trainer=trainer,
            initial_size=initial_size,
            batch_size=batch_size,
            max_rounds=rounds,
        )
        target.write_text(dumps_toml(data), encoding="utf-8")
        console.print(f"Wrote {target}. Next: `alloop import` then `alloop run`.")

    @app.command("import")
    def import_cmd(project: ProjectOpt = None) -> None:
        """Import (or re-import) the pool source named in the project file."""
        from alloop.cli._ui import console, make_progress, table
        from alloop.config import load_config
        from alloop.pool.importer import import_pool
        from alloop.pool.sources import scan_source
        from alloop.workspace import Workspace

        cfg, _ = load_config(project)
        ws = Workspace(cfg, progress=make_progress())
        ws.ensure_project()
        scan = scan_source(cfg.pool.source, ws.work_dir, ws.progress, wait=False)
        report = import_pool(ws.engine, ws.name, scan, test_fraction=cfg.pool.test_fraction, progress=ws.progress)
        console.print(f"Imported into {ws.name!r}: {report.summary()}.")
        console.print(f"Label set ({len(report.labels)}): {', '.join(report.labels)}")
        if report.quarantined:
            rows = [(k, r) for k, r in report.quarantined[:20]]
            console.print(table(f"Quarantined ({len(report.quarantined)}, never selected)", ["key", "reason"], rows))
        if report.changed:
            console.print(
                f"[yellow]{len(report.changed)} samples changed content since their first import and were left "
                f"as they were (e.g. {report.changed[0]}). Give changed files a new name to label them again.[/]"
            )
        ws.close()
