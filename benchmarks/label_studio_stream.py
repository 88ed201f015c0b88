"""Stream mode's re-ranking in Label Studio: how long refreshing N existing tasks takes.

A stream round re-ranks the unlabeled tasks of earlier rounds it picks again: each gets new
``data.alloop_round``/``alloop_rank``/``alloop_score`` (one ``PATCH /api/tasks/<id>`` each; Label
Studio Community has no bulk data update) and the new round's prediction (one bulk
``import_predictions`` call). Timed against a real server, with the connector's own
:func:`~connectors.label_studio.stream.refresh_tasks`:

1. the first refresh of N tasks (a listing, N predictions, N patches), at 1 and at the default
   ``refresh_threads`` (4) concurrent patches (on fresh copies of the tasks);
2. the same refresh again, as a push repeated after a crash does it: one listing, nothing to change.

    python benchmarks/label_studio_stream.py            # starts its own server (.venv-ls)
    python benchmarks/label_studio_stream.py --n 200    # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _machine import machine_info, provenance_note

from alloop.protocols import ConnectorContext, Prediction, TaskPayload
from connectors.label_studio.connector import LabelStudioConnector
from connectors.label_studio.server import LocalLabelStudio, port_is_free

RESULTS = Path(__file__).parent / "results"
LABELS = ("neg", "pos")


def payloads(n: int, round_number: int) -> list[TaskPayload]:
    return [TaskPayload(f"t{i:06d}", "text", {"text": f"text number {i}"}, round_number,
                        Prediction(LABELS[i % 2], 0.7, f"bench-round-{round_number}", {"neg": 0.3, "pos": 0.7}),
                        rank=i + 1, score=1.0 / (i + 1))
            for i in range(n)]


def timed_refresh(n: int, threads: int, title: str) -> dict[str, float]:
    """Push n tasks as round 0, then time their refresh for round 1, twice."""
    conn = LabelStudioConnector.from_params(
        {"mode": "stream", "refresh_threads": threads, "title": title},
        context=ConnectorContext(project=title, task="text", labels=LABELS))
    ids = conn.push(payloads(n, 0))
    again = {ids[p.sample_key]: p for p in payloads(n, 1)[::-1]}  # a new round, ranks reversed
    t0 = time.perf_counter()
    changed = conn.refresh_tasks(again)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    unchanged = conn.refresh_tasks(again)
    second = time.perf_counter() - t0
    conn.close()
    if (changed, unchanged) != (n, 0):
        raise SystemExit(f"expected {n} tasks changed then none, got {changed} then {unchanged}")
    return {"first_s": round(first, 2), "again_s": round(second, 2), "tasks_per_s": round(n / first, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--port", type=int, default=18490)
    ap.add_argument("--venv", type=Path, default=Path(__file__).resolve().parents[1] / ".venv-ls")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="alloop-ls-stream-") as tmp:
        root = Path(tmp)
        if not port_is_free(args.port):
            raise SystemExit(f"port {args.port} is busy; pass --port")
        server = LocalLabelStudio(data_dir=root / "ls", port=args.port, venv=args.venv, document_root=root / "doc")
        (root / "doc").mkdir()
        server.start()
        os.environ["LABEL_STUDIO_URL"] = server.url
        os.environ["LABEL_STUDIO_API_KEY"] = server.credentials()["LABEL_STUDIO_API_KEY"]
        try:
            runs = {threads: timed_refresh(args.n, threads, f"stream-{threads}") for threads in (1, 4)}
        finally:
            server.stop()
    machine = machine_info(__file__)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "n": args.n,
            "label_studio": server.version, "cpu": machine["cpu"], "cores": machine["logical_cores"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_studio_stream.json").write_text(json.dumps({"meta": meta, "machine": machine,
                                                                   "runs": runs}, indent=2) + "\n")
    lines = [
        "# Label Studio stream mode: re-ranking existing tasks", "",
        f"Label Studio {server.version} (sqlite, loopback), {machine['cpu']}, {machine['logical_cores']} cores, "
        f"{meta['date']}, {provenance_note(machine)}.", "",
        f"Refreshing {args.n} tasks (new round, rank and score in their data, one new prediction each):", "",
        "| concurrent patches | first refresh (s) | tasks/s | repeated (nothing to change) (s) |",
        "|---|---|---|---|",
        *[f"| {t} | {r['first_s']} | {r['tasks_per_s']} | {r['again_s']} |" for t, r in runs.items()],
    ]
    (args.out / "label_studio_stream.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
