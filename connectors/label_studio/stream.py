"""Stream mode: re-rank tasks already in Label Studio for the open round.

A stream round (``[connector.params] mode = "stream"``) keeps ``stream_factor x budget`` tasks in
the view "alloop: most useful first". The ones it picked afresh are imported as usual; the
unlabeled tasks of earlier rounds it picked again are *refreshed* here: their ``data`` gets the
new ``alloop_round``, ``alloop_rank`` and ``alloop_score`` (so the view, filtered to the open
round and ordered by rank, lists them among the new ones), and they get the new round's model's
prediction as a new pre-annotation (older predictions stay, the project's ``model_version``
selects which one the editor shows).

Label Studio 1.23.2 has no bulk update of task data in its Community API: ``PATCH
/api/tasks/<id>/`` with the whole ``data`` (``client.tasks.update(id, data=...)``; the other data
fields are kept as Label Studio holds them), ``refresh_threads`` at a time. Predictions go in
bulk: ``POST /api/projects/<id>/import/predictions`` (``client.projects.import_predictions``).

Idempotent: one listing of the tasks first (the Data Manager's ``GET /api/tasks`` with their ids,
500 per call, ``fields=all``: each task's data and predictions); a task that already shows the round, rank and
score is not patched, and one that holds a prediction of the round's model version gets none,
so a push repeated after a crash applies only what is missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alloop.errors import ConnectorDataError
from alloop.protocols import TaskPayload
from connectors.label_studio.api import LabelStudioApi
from connectors.label_studio.labeling_config import ConfigInfo
from connectors.label_studio.results import prediction_json

logger = logging.getLogger(__name__)

__all__ = ["refresh_tasks"]

#: tasks per listing (their ids travel in the query string)
_LIST_IDS = 500
#: predictions per import call
_PREDICTIONS = 1000


def _order_fields(t: TaskPayload) -> dict[str, Any]:
    return {"alloop_round": t.round_number, "alloop_rank": t.rank, "alloop_score": t.score}


def _model_version(p: Any) -> Any:
    return p.get("model_version") if isinstance(p, dict) else getattr(p, "model_version", None)


def _current(api: LabelStudioApi, project_id: int, ids: Sequence[str]) -> dict[str, tuple[dict[str, Any], set[Any]]]:
    """Each task's ``data`` and its predictions' model versions, by task id; a task deleted in
    Label Studio is missing. (The export lists prediction ids only; the Data Manager's task list
    with ``fields=all`` gives the predictions.)"""
    sdk = api.sdk
    out: dict[str, tuple[dict[str, Any], set[Any]]] = {}
    for i in range(0, len(ids), _LIST_IDS):
        query = json.dumps({"selectedItems": {"all": False, "included": [int(t) for t in ids[i : i + _LIST_IDS]]}})

        def listing(query: str = query) -> list[Any]:
            return list(sdk.tasks.list(project=project_id, query=query, fields="all", page_size=_LIST_IDS))

        for t in api.call("list the tasks to re-rank", listing):
            out[str(t.id)] = (dict(t.data or {}), {_model_version(p) for p in t.predictions or []})
    return out


def refresh_tasks(api: LabelStudioApi, project_id: int, info: ConfigInfo, tasks: Mapping[str, TaskPayload],
                  *, threads: int = 4) -> int:
    """Move the tasks (by Label Studio task id) to their payload's round, rank and score, and add
    the payload's prediction where the task lacks one of that model version; return how many
    tasks were changed. See the module's documentation."""
    if not tasks:
        return 0
    ids = sorted(tasks, key=int)
    now = _current(api, project_id, ids)
    gone = [tid for tid in ids if tid not in now]
    if gone:
        logger.warning("%d tasks to re-rank are gone from Label Studio project %s (e.g. task %s): left as they are",
                       len(gone), project_id, gone[0])
    patches: list[tuple[str, dict[str, Any]]] = []
    predictions: list[dict[str, Any]] = []
    for tid in ids:
        if tid not in now:
            continue
        data, versions = now[tid]
        t = tasks[tid]
        if data.get("sample_id") != t.sample_key:
            raise ConnectorDataError(
                f"Label Studio task {tid} holds sample {data.get('sample_id')!r}, but alloop recorded it for "
                f"{t.sample_key!r}: its data was changed outside alloop. Set its data.sample_id back to "
                f"{t.sample_key!r} in Label Studio and run `alloop run` again."
            )
        wanted = {**data, **_order_fields(t)}
        if wanted != data:
            patches.append((tid, wanted))
        pred = t.prediction
        if pred is not None and pred.model_version not in versions:
            predictions.append({"task": int(tid), **prediction_json(pred, info)})
    sdk = api.sdk
    for i in range(0, len(predictions), _PREDICTIONS):  # before the data: a task showing the round has it
        part = predictions[i : i + _PREDICTIONS]
        api.call("import the re-ranked tasks' predictions",
                 lambda part=part: sdk.projects.import_predictions(project_id, request=part),  # type: ignore[misc]
                 retry=False)  # not idempotent: a failed call is checked again by the next push

    def patch(job: tuple[str, dict[str, Any]]) -> None:
        tid, data = job
        api.call(f"update task {tid}", lambda: sdk.tasks.update(tid, data=data))

    if patches:
        with ThreadPoolExecutor(max(1, min(threads, len(patches)))) as pool:
            list(pool.map(patch, patches))
    changed = {tid for tid, _ in patches} | {str(p["task"]) for p in predictions}
    logger.info("Re-ranked %d tasks of Label Studio project %s (%d data updates, %d predictions)",
                len(changed), project_id, len(patches), len(predictions))
    return len(changed)
