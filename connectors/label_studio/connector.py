"""The Label Studio connector: projects, tasks with pre-annotations, annotations back.

Project file::

    [connector]
    name = "label_studio"
    params = { url = "http://127.0.0.1:8080", images = "local-files" }

The API token comes only from the environment variable named by ``token_env``
(``LABEL_STUDIO_API_KEY`` by default); it is never logged nor stored.

- Tasks carry the stable alloop sample key (``data.sample_id``), the round
  (``data.alloop_round``), the pick's 1-based rank in the round's selection order
  (``data.alloop_rank``, 1 = most useful) and the strategy's score (``data.alloop_score``, null
  when it gave none); task ids come from the import response.
- After each push, a Data Manager view "alloop: most useful first" shows the open round's tasks
  by rank (:mod:`connectors.label_studio.views`): annotators pick "Label Tasks As Displayed".
- ``mode = "stream"`` (for annotators who label continuously): a round pushes ``stream_factor x
  budget`` ranked candidates and re-ranks the unlabeled tasks of earlier rounds it picks again
  (:meth:`refresh_tasks`, :mod:`connectors.label_studio.stream`): the view's order does the
  selecting, and the round closes once ``budget`` of its tasks are labeled.
- A crash between the import and alloop's commit is healed by :meth:`find_tasks`, which lists
  the round's tasks by ``data.alloop_round`` and adopts them by key. :meth:`push` does the same
  before importing: pushing a round's samples twice creates each task once.
- Task ids are Label Studio's integer ids; :meth:`pull` refuses any other id. A task deleted in
  Label Studio just has no annotations any more.
- Annotations are read through the export API (about 5x cheaper than paging tasks).
- Unreachable server, time-outs and 5xx answers are retried with exponential backoff, then
  raised as :class:`ConnectorUnavailableError` (the round waits; the next run continues):
  :mod:`connectors.label_studio.api`.
- After a first full pull, a pull reads only the tasks Label Studio changed since the previous
  one (:meth:`pull_changes`, the :class:`~alloop.protocols.IncrementalPull` capability;
  :mod:`connectors.label_studio.changes`), with a full reconciliation every
  ``reconcile_every`` pulls or ``reconcile_after_s`` seconds.
- The export lists every annotation of the pulled tasks (:meth:`pull_complete`, the
  :class:`~alloop.protocols.CompletePull` capability): one that vanished from it was deleted in
  Label Studio, and alloop marks it so (never trained on again).
- :meth:`ensure_webhook` registers ``alloop serve``'s receiver for the project (idempotent) and
  :meth:`webhook_event` reads its calls (the :class:`~alloop.protocols.WebhookSource`
  capability); the webhook only wakes the loop, the export stays the source of truth.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from alloop.errors import (
    ConnectorDataError,
    ConnectorUnavailableError,
)
from alloop.protocols import (
    SECRET_HEADER,
    AnnotationRecord,
    ConnectorContext,
    PullResult,
    TaskList,
    TaskLookup,
    TaskPayload,
    TaskRef,
    WebhookEvent,
)
from connectors.label_studio.api import LabelStudioApi
from connectors.label_studio.changes import Cursor, changed_task_ids, server_time
from connectors.label_studio.labeling_config import ConfigInfo, generate, inspect
from connectors.label_studio.results import (
    image_reference,
    parse_annotation,
    prediction_json,
)
from connectors.label_studio.stream import refresh_tasks
from connectors.label_studio.views import VIEW_TITLE, ensure_view

logger = logging.getLogger(__name__)
T = TypeVar("T")

_TASK_ID = re.compile(r"[1-9][0-9]*")

#: the Label Studio events that change a project's annotations (and wake ``alloop serve``)
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


class LabelStudioParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    """Server URL; default $LABEL_STUDIO_URL, else http://127.0.0.1:8080."""
    token_env: str = "LABEL_STUDIO_API_KEY"
    """Name of the environment variable holding the API token (legacy token or personal access token)."""
    project_id: int | None = None
    """Adopt this existing Label Studio project instead of creating/finding one by title."""
    title: str | None = None
    """Project title (default: "alloop: <project name>"); used to find the project again."""
    label_config: str | None = None
    """Your own labeling config: XML text or a path to an .xml file. Checked against the label set."""
    images: Literal["local-files", "url", "data-uri"] = "local-files"
    document_root: Path | None = None
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT; default $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT."""
    url_prefix: str | None = None
    """For images = "url": the URL serving document_root."""
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    """First retry delay; doubled each time."""
    batch_size: int = Field(default=2000, ge=1)
    """Tasks per import call."""
    view: bool = True
    """Keep a Data Manager view "alloop: most useful first": the open round's tasks by rank."""
    incremental: bool = True
    """After a full pull, read only the tasks Label Studio changed since the last pull."""
    reconcile_every: int = Field(default=20, ge=1)
    """Every N-th pull reads every task (finds annotations deleted in Label Studio, and any change
    an incremental pull missed); 1 = every pull is full."""
    reconcile_after_s: float | None = Field(default=3600.0, gt=0)
    """Also a full pull when the last one is older than this (seconds, Label Studio's clock); None = by count only."""
    watermark_margin_s: float = Field(default=10.0, ge=0)
    """An incremental pull reads tasks changed since the previous pull began minus this margin (late commits)."""
    mode: Literal["batch", "stream"] = "batch"
    """"batch": a round pushes its budget and closes when they are labeled. "stream": the view holds
    stream_factor x budget tasks, re-ranked each round, and the round closes once budget of them are labeled."""
    stream_factor: int = Field(default=5, ge=2)
    """Stream mode: the view holds stream_factor x budget tasks (capped by the pool)."""
    refresh_threads: int = Field(default=4, ge=1, le=32)
    """Stream mode: concurrent task updates when a round re-ranks earlier rounds' unlabeled tasks."""


class LabelStudioConnector:
    """Runs alloop rounds in a Label Studio project."""

    name = "label_studio"

    def __init__(self, context: ConnectorContext, params: LabelStudioParams) -> None:
        self.context = context
        self.params = params
        self.url = (params.url or os.environ.get("LABEL_STUDIO_URL") or "http://127.0.0.1:8080").rstrip("/")
        root = params.document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        self.document_root = Path(root) if root else None
        self.api = LabelStudioApi(self.url, token_env=params.token_env, timeout_s=params.timeout_s,
                                  retries=params.retries, backoff_s=params.backoff_s)
        self._project_id: int | None = params.project_id
        self._info: ConfigInfo | None = None
        self._users: dict[int, str] | None = None
        self._storages: set[str] = set()
        #: what the pulls read: task rows listed, task rows exported, full and incremental pulls
        self.reads: dict[str, int] = {"listed": 0, "exported": 0, "full": 0, "incremental": 0}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, *, context: ConnectorContext) -> LabelStudioConnector:
        from alloop.params import parse_params

        return cls(context, parse_params(LabelStudioParams, params, "label_studio connector parameters"))

    # -- the SDK, errors and retries ------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The Label Studio SDK client (the token is read from the environment on first use)."""
        return self.api.sdk

    def _call(self, what: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        return self.api.call(what, fn, retry=retry)

    # -- project -----------------------------------------------------------------------------
    @property
    def title(self) -> str:
        return self.params.title or f"alloop: {self.context.project}"

    def _wanted_config(self) -> str:
        raw = self.params.label_config
        if raw is None:
            return generate(self.context.task, self.context.labels)
        path = Path(raw)
        if "<" not in raw and path.exists():
            return path.read_text(encoding="utf-8")
        return raw

    def ensure_project(self) -> None:
        """Find (by id or title) or create the project; check its labeling config."""
        if self._info is not None:
            return
        wanted = self._wanted_config()
        where = "connector.params.label_config" if self.params.label_config else "the generated labeling config"
        inspect(wanted, self.context.task, self.context.labels, where)  # user config errors first
        if self._project_id is None:
            found = self._call(
                "find the project",
                lambda: [p for p in self.client.projects.list(title=self.title) if p.title == self.title],
            )
            if found:
                self._project_id = found[0].id
            else:
                p = self._call(
                    "create the project", lambda: self.client.projects.create(title=self.title, label_config=wanted)
                )
                self._project_id = p.id
                logger.info("Created Label Studio project %s (%s)", p.id, self.title)
        project = self._call("read the project", lambda: self.client.projects.get(self._project_id))
        self._info = inspect(project.label_config, self.context.task, self.context.labels,
                             f"the label config of Label Studio project {self._project_id}")

    @property
    def project_id(self) -> int:
        self.ensure_project()
        assert self._project_id is not None
        return self._project_id

    # -- push --------------------------------------------------------------------------------
    def _ensure_storage(self, folder: Path) -> None:
        """Local-files serving needs an import storage covering the folder (created, not synced)."""
        key = str(folder.resolve())
        if key in self._storages:
            return
        existing = self._call(
            "list local storages", lambda: self.client.import_storage.local.list(project=self.project_id)
        )
        if not any(str(Path(s.path).resolve()) == key for s in existing):
            self._call("create a local-files storage", lambda: self.client.import_storage.local.create(
                project=self.project_id, path=key, use_blob_urls=True, title=f"alloop pool {folder.name}"))
        self._storages.add(key)

    def _task_json(self, t: TaskPayload) -> dict[str, Any]:
        info = self._info
        assert info is not None
        data: dict[str, Any] = {"sample_id": t.sample_key, "alloop_round": t.round_number,
                                "alloop_rank": t.rank, "alloop_score": t.score}
        if t.kind == "text":
            data[info.data_key] = t.data["text"]
        elif t.kind == "image":
            path = Path(t.data["path"])
            if self.params.images == "local-files":
                root = self.context.pool_root
                if root is not None and Path(root).resolve() in path.resolve().parents:
                    self._ensure_storage(Path(root))
                else:
                    self._ensure_storage(path.parent)
            data[info.data_key] = image_reference(path, self.params.images, document_root=self.document_root,
                                                  url_prefix=self.params.url_prefix)
        else:
            raise ConnectorDataError(
                f"Sample {t.sample_key!r} is a {t.kind!r} sample: Label Studio can show images and texts only."
            )
        task: dict[str, Any] = {"data": data}
        if t.prediction is not None:
            task["predictions"] = [prediction_json(t.prediction, info)]
        return task

    def _import(self, batch: Sequence[TaskPayload]) -> dict[str, str]:
        body = [self._task_json(t) for t in batch]
        r = self._call("import tasks", lambda: self.client.projects.import_tasks(
            self.project_id, request=body, return_task_ids=True), retry=False)
        ids = list(r.task_ids or [])
        if len(ids) != len(batch):
            raise ConnectorDataError(
                f"Label Studio created {len(ids)} tasks for {len(batch)} samples; run `alloop run` again to "
                "adopt whatever was created."
            )
        return {t.sample_key: str(tid) for t, tid in zip(batch, ids)}

    def _push_batch(self, batch: Sequence[TaskPayload]) -> dict[str, str]:
        """Import a batch; after a failed import, adopt what arrived and import only the rest.

        An import whose answer was lost may still have been applied: blindly importing again
        would duplicate tasks.
        """
        out: dict[str, str] = {}
        remaining = list(batch)
        delay = self.params.backoff_s
        for attempt in range(self.params.retries + 1):
            try:
                out.update(self._import(remaining))
                return out
            except ConnectorUnavailableError:
                if attempt == self.params.retries:
                    raise
                logger.warning("Label Studio import failed; checking what arrived, retrying in %.1f s", delay)
                time.sleep(delay)
                delay *= 2
                found = self.find_tasks([t.sample_key for t in remaining], round_number=remaining[0].round_number)
                out.update(found)
                remaining = [t for t in remaining if t.sample_key not in found]
                if not remaining:
                    return out
        return out  # pragma: no cover

    def push(self, tasks: Sequence[TaskPayload]) -> dict[str, str]:
        """Import the tasks Label Studio lacks; adopt those of the same round it already holds.

        One listing of each round's tasks first (empty, hence cheap, for a fresh round): a
        sample already pushed in its round keeps its task and id.
        """
        self.ensure_project()
        rounds: dict[int, list[str]] = {}
        for t in tasks:
            rounds.setdefault(t.round_number, []).append(t.sample_key)
        out: dict[str, str] = {}
        for number, keys in rounds.items():
            out.update(self.find_tasks(keys, round_number=number))
        fresh: list[TaskPayload] = []
        taken = set(out)
        for t in tasks:
            if t.sample_key not in taken:  # a key given twice is imported once
                taken.add(t.sample_key)
                fresh.append(t)
        versions = {t.prediction.model_version for t in tasks if t.prediction is not None}
        for i in range(0, len(fresh), self.params.batch_size):
            out.update(self._push_batch(fresh[i : i + self.params.batch_size]))
        if versions:  # the UI pre-fills the predictions of the project's model version
            version = sorted(versions)[-1]
            self._call("set the model version", lambda: self.client.projects.update(
                self.project_id, model_version=version, show_collab_predictions=True))
        return out

    def find_tasks(self, keys: Sequence[str], round_number: int | None = None) -> dict[str, str]:
        """Tasks already in Label Studio for these keys (of ``round_number`` if given)."""
        if not keys:
            return {}
        self.ensure_project()
        items = []
        if round_number is not None:
            items.append({"filter": "filter:tasks:data.alloop_round", "operator": "equal", "type": "Number",
                          "value": round_number})
        query = json.dumps({"filters": {"conjunction": "and", "items": items}})
        wanted = set(keys)

        def listing() -> dict[str, str]:
            found: dict[str, str] = {}
            for t in self.client.tasks.list(project=self.project_id, query=query, fields="task_only", page_size=1000):
                key = (t.data or {}).get("sample_id")
                if key in wanted:
                    found.setdefault(str(key), str(t.id))
            return found

        return self._call("list tasks", listing)

    # -- pull ---------------------------------------------------------------------------------
    def _user_names(self) -> dict[int, str]:
        if self._users is None:
            users = self._call("list users", lambda: list(self.client.users.list()))
            self._users = {u.id: u.email or u.username or f"user-{u.id}" for u in users}
        return self._users

    def _export(self, ids: Sequence[str] | None) -> list[dict[str, Any]]:
        extra = {"additional_query_parameters": {"ids[]": list(ids)}} if ids is not None else None

        def download() -> list[dict[str, Any]]:
            chunks = self.client.projects.exports.download_sync(
                self.project_id, export_type="JSON", download_all_tasks=False, request_options=extra)
            tasks: list[dict[str, Any]] = json.loads(b"".join(chunks) or b"[]")
            return tasks

        rows = self._call("export annotations", download)
        self.reads["exported"] += len(rows)
        return rows

    def pull(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        """Every annotation of these tasks, through the export API.

        Up to 500 tasks are exported by id; more are read with one whole-project export.
        """
        for t in tasks:
            if not _TASK_ID.fullmatch(str(t.external_id)):
                raise ConnectorDataError(
                    f"Label Studio never issued the task id {t.external_id!r} (sample {t.sample_key!r}): its "
                    "task ids are positive integers. The task was recorded for another connector."
                )
        if not tasks:
            return []
        self.ensure_project()
        wanted = {t.external_id for t in tasks}
        rows: list[dict[str, Any]] = []
        if len(wanted) <= 500:
            rows = self._export(sorted(wanted, key=int))
        else:
            rows = self._export(None)
        return self._records(rows, wanted)

    def _records(self, rows: Sequence[dict[str, Any]], wanted: set[str]) -> list[AnnotationRecord]:
        users = self._user_names()
        out = []
        for task in rows:
            if str(task.get("id")) not in wanted:
                continue
            if "sample_id" not in (task.get("data") or {}):
                raise ConnectorDataError(
                    f"Label Studio task {task.get('id')} has no data.sample_id; it was not created by alloop."
                )
            for ann in task.get("annotations") or []:
                if ann.get("completed_by") not in users:
                    self._users = None
                    users = self._user_names()
                out.append(parse_annotation(task, ann, self._info, users))  # type: ignore[arg-type]
        return out

    def pull_complete(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        """:meth:`pull`: the export lists every annotation Label Studio holds for these tasks."""
        return self.pull(tasks)

    def pull_changes(self, tasks: Sequence[TaskRef] | TaskLookup, cursor: Mapping[str, Any] | None) -> PullResult:
        """The annotations of the ``tasks`` Label Studio changed since the pull that left ``cursor``.

        A full pull (every task; its result is complete for all of them) when there is no cursor,
        when ``incremental`` is off, and when a reconciliation is due; else one filtered listing
        of the tasks updated since the cursor's watermark and an export of those among ``tasks``
        (500 per call). ``tasks`` given as a :class:`~alloop.protocols.TaskLookup` is asked only
        for the changed ones on an incremental pull. See :mod:`connectors.label_studio.changes`.
        """
        lookup = tasks if isinstance(tasks, TaskLookup) else TaskList(tasks)
        self.ensure_project()
        pid = self.project_id
        now = server_time(self.api)  # before any read: a change after it is read next time
        state = Cursor(cursor)
        p = self.params
        full = not p.incremental or state.full_due(project_id=pid, now=now, every=p.reconcile_every,
                                                   after_s=p.reconcile_after_s)
        since = state.since
        if full or since is None:
            every = lookup.all()
            records = self.pull(every)
            self.reads["full"] += 1
            return PullResult(records, frozenset(t.external_id for t in every),
                              state.after(project_id=pid, now=now, margin_s=p.watermark_margin_s, full=True),
                              full=True, tasks_read=len(every))
        changed = changed_task_ids(self.api, pid, since)
        self.reads["listed"] += len(changed)
        self.reads["incremental"] += 1
        mine = lookup.among(changed)
        for t in mine:
            if not _TASK_ID.fullmatch(str(t.external_id)):
                return self.pull_changes(lookup, None)  # pull() names the bad id
        wanted = {t.external_id for t in mine}
        ids = sorted(wanted, key=int)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(ids), 500):
            rows.extend(self._export(ids[i : i + 500]))
        return PullResult(self._records(rows, wanted), frozenset(wanted),
                          state.after(project_id=pid, now=now, margin_s=p.watermark_margin_s, full=False),
                          full=False, tasks_read=len(wanted))

    # -- the open round in the Data Manager ------------------------------------------------------
    def present_round(self, round_number: int) -> None:
        """Point the view "alloop: most useful first" at ``round_number`` (created once; idempotent).

        The view is a convenience: Label Studio refusing it (e.g. a token without the right to
        manage views) is logged, and the round goes on; an unreachable server waits as usual.
        """
        if not self.params.view:
            return
        try:
            ensure_view(self.api, self.project_id, round_number)
        except ConnectorDataError as exc:
            logger.warning(
                "Could not create or update the Data Manager view %r of Label Studio project %s: %s. "
                "The tasks carry data.alloop_rank: sort by it by hand, or set connector.params.view = false.",
                VIEW_TITLE, self.project_id, exc)

    # -- stream mode ---------------------------------------------------------------------------
    def stream_factor(self) -> int | None:
        """``stream_factor`` in stream mode (the view holds that many times a round's budget), else None."""
        return self.params.stream_factor if self.params.mode == "stream" else None

    def refresh_tasks(self, tasks: Mapping[str, TaskPayload]) -> int:
        """Re-rank existing tasks for their payload's round (:mod:`connectors.label_studio.stream`)."""
        for tid, t in tasks.items():
            if not _TASK_ID.fullmatch(str(tid)):
                raise ConnectorDataError(
                    f"Label Studio never issued the task id {tid!r} (sample {t.sample_key!r}): its task ids are "
                    "positive integers. The task was recorded for another connector."
                )
        self.ensure_project()
        assert self._info is not None
        n = refresh_tasks(self.api, self.project_id, self._info, tasks, threads=self.params.refresh_threads)
        versions = {t.prediction.model_version for t in tasks.values() if t.prediction is not None}
        if versions:  # the editor pre-fills the predictions of the project's model version
            version = sorted(versions)[-1]
            self._call("set the model version", lambda: self.client.projects.update(
                self.project_id, model_version=version, show_collab_predictions=True))
        return n

    # -- webhook -------------------------------------------------------------------------------
    def ensure_webhook(self, url: str, secret: str, *, match: Callable[[str], bool] | None = None) -> str:
        """Make Label Studio call ``url`` on annotation changes in this project; return the webhook id.

        Idempotent: a webhook of the project with this ``url`` (or one ``match`` accepts, e.g. the
        same receiver at an older public URL) is updated in place when its URL, actions, secret or
        flags differ, and left alone otherwise; else one is created. The secret travels in the
        :data:`SECRET_HEADER` header; it is never logged.
        """
        self.ensure_project()
        pid = self.project_id
        wanted = {"url": url, "actions": list(WEBHOOK_ACTIONS), "headers": {SECRET_HEADER: secret},
                  "send_payload": True, "send_for_all_actions": False, "is_active": True}
        hooks = self._call("list webhooks", lambda: list(self.client.webhooks.list(project=str(pid))))
        mine = [h for h in hooks
                if getattr(h, "project", None) == pid and (h.url == url or (match is not None and match(h.url)))]
        mine.sort(key=lambda h: h.url != url)  # the exact URL first
        if mine:
            hook = mine[0]
            current = {"url": hook.url, "actions": sorted(hook.actions or []), "headers": dict(hook.headers or {}),
                       "send_payload": hook.send_payload, "send_for_all_actions": hook.send_for_all_actions,
                       "is_active": hook.is_active}
            if current != {**wanted, "actions": sorted(WEBHOOK_ACTIONS)}:
                self._call("update the webhook", lambda: self.client.webhooks.update(hook.id, **wanted))
                logger.info("Updated Label Studio webhook %s of project %s -> %s", hook.id, pid, url)
            return str(hook.id)
        hook = self._call("create the webhook", lambda: self.client.webhooks.create(project=pid, **wanted))
        logger.info("Registered Label Studio webhook %s of project %s -> %s", hook.id, pid, url)
        return str(hook.id)

    def webhook_event(self, payload: Any) -> WebhookEvent | None:
        """A Label Studio webhook body: ``action`` and the project (``project.id``, else the
        annotation's ``project``); ``None`` when the body has no ``action`` string."""
        action = payload.get("action") if isinstance(payload, dict) else None
        if not isinstance(action, str):
            return None
        project = payload.get("project")
        if isinstance(project, dict):
            project = project.get("id")
        if project is None and isinstance(payload.get("annotation"), dict):
            project = payload["annotation"].get("project")
        tool_project = str(project) if isinstance(project, (int, str)) and not isinstance(project, bool) else None
        return WebhookEvent(action=action, wakes=action in WEBHOOK_ACTIONS, tool_project=tool_project)

    def webhook_project(self) -> str | None:
        """The Label Studio project id (found or created on first use)."""
        return str(self.project_id)

    def close(self) -> None:
        self.api.close()


__all__ = ["WEBHOOK_ACTIONS", "LabelStudioConnector", "LabelStudioParams"]
