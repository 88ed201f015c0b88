"""The alloop Python API in one page: wine vectors, coreset selection, the simulated annotator.

    .venv/bin/python examples/quickstart.py [work-folder]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alloop.config import dumps_toml, load_config
from alloop.loop.controller import Controller
from alloop.pool.importer import import_pool
from alloop.pool.sources import scan_source
from alloop.report import learning_curve, project_status
from alloop.workspace import Workspace

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="alloop-quickstart-"))
folder.mkdir(parents=True, exist_ok=True)
(folder / "alloop.toml").write_text(
    dumps_toml(
        {
            "project": {"name": "wine", "seed": 3},
            "pool": {"source": {"type": "bundled", "name": "wine"}, "test_fraction": 0.3},
            "features": {"name": "vector"},
            "learner": {"name": "sklearn", "params": {"scale": True}},
            "strategy": {"name": "coreset", "params": {"metric": "euclidean"}},
            "loop": {"initial_size": 6, "batch_size": 6, "max_rounds": 6},
        }
    )
)

cfg, _ = load_config(folder)
ws = Workspace(cfg)
ws.ensure_project()
report = import_pool(
    ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir), test_fraction=cfg.pool.test_fraction
)
print("import:", report.summary())

for result in Controller(ws).run():
    print(f"{result.action:>10}  {result.message}")

status = project_status(ws.engine, ws.name)
print("rounds:", [(r["round"], r["strategy"], r["selected"]) for r in status["rounds"]])
print("learning curve (labels, accuracy):", [(n, round(a, 3)) for n, a in learning_curve(ws.engine, ws.name)])
ws.close()
