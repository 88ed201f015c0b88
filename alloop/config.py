"""The project file (``alloop.toml``): pydantic models, loading, and readable errors.

Precedence: CLI flag > ``ALLOOP_*`` environment variable > project file > defaults.
Every environment variable alloop reads is named in :data:`ENV` and read here only.
Secrets (API tokens) are *never* part of the project file: connectors read them from the
environment at run time.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alloop.errors import ConfigError
from alloop.params import format_validation_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_FILE = "alloop.toml"

#: Every environment variable alloop reads, with what it does.
ENV: dict[str, str] = {
    "ALLOOP_DATABASE_URL": "database URL; overrides [project].database (e.g. postgresql+psycopg://...)",
    "ALLOOP_PROJECT_FILE": "path of the project file when --project is not given",
    "ALLOOP_LOG_LEVEL": "log level of the CLI (DEBUG, INFO, WARNING)",
    "ALLOOP_DISABLE_PROGRESS_BARS": "set to 1 to hide progress bars",
    "ALLOOP_LS_VENV": "virtualenv of the local Label Studio server (`alloop labelstudio up`)",
    "LABEL_STUDIO_URL": "Label Studio URL when [connector] params has no url",
    "LABEL_STUDIO_API_KEY": "Label Studio access token (the connector's token_env may name another variable)",
    "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "Label Studio's local-files document root, for serving local images",
    "ALLOOP_WEBHOOK_SECRET": "`alloop serve`: the shared secret Label Studio sends in the X-Alloop-Secret header "
    "of each webhook call (never stored by alloop)",
    "ALLOOP_ML_BACKEND_USER": "`alloop serve`: the HTTP Basic user of its ML backend and status page (default alloop)",
    "ALLOOP_ML_BACKEND_PASSWORD": "`alloop serve`: the HTTP Basic password of its ML backend and status page; "
    "without it both are off (never logged or stored)",
    "ALLOOP_SERVE_URL": "`alloop labelstudio up`/`connect`: the URL of a running `alloop serve` that Label Studio "
    "reaches, to connect it as the project's ML backend",
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Component(_Model):
    """A pluggable component chosen by registry name, with its own parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


# --- pool sources -------------------------------------------------------------------------


class FolderSource(_Model):
    """A folder of image files; optionally one sub-folder per class (for simulation)."""

    type: Literal["folder"] = "folder"
    path: Path
    labels_from_subfolders: bool = False
    annotations: Path | None = None
    """Detection: a COCO JSON file of ground-truth boxes for these images (``file_name`` = the
    image's path relative to the folder). Used by the simulated annotator and for evaluation."""
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class TextSource(_Model):
    """A JSONL or CSV file of texts, one sample per line/row."""

    type: Literal["texts"] = "texts"
    path: Path
    text_field: str = "text"
    id_field: str | None = "id"
    label_field: str | None = "label"


class VectorSource(_Model):
    """Feature vectors: a ``.npy`` matrix (with optional labels/keys files) or a ``.parquet`` table."""

    type: Literal["vectors"] = "vectors"
    path: Path
    labels_path: Path | None = None
    keys_path: Path | None = None
    key_column: str = "key"
    label_column: str | None = "label"
    vector_column: str = "vector"


class BundledSource(_Model):
    """A real dataset shipped with alloop's dependencies (scikit-learn)."""

    type: Literal["bundled"] = "bundled"
    name: Literal["digits", "iris", "wine", "breast_cancer"] = "digits"


PoolSource = Annotated[
    Union[FolderSource, TextSource, VectorSource, BundledSource], Field(discriminator="type")
]


class PoolConfig(_Model):
    source: PoolSource = Field(default_factory=BundledSource)
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Fraction of samples with known labels held out for evaluation (never selected)."""


# --- detection proposals -------------------------------------------------------------------


class ProposalsConfig(_Model):
    """Where a detection project's object proposals (autolabels) come from.

    ``source = "file"``: an autolabel file (COCO JSON or JSON lines) at ``path``.
    ``source = "onnx"``: a YOLO-style ONNX detector at ``path``, run on every pool image.
    ``source = "model"``: the detections the project's learner predicted in the round's model;
    until a model exists (round 0), the file or ONNX model at ``path`` if given.
    """

    source: Literal["file", "onnx", "model"] = "file"
    path: Path | None = None
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    """Proposals with a lower confidence are ignored."""
    pad: int = Field(default=4, ge=0)
    """Pixels added around each box before its crop is embedded."""
    classes: tuple[str, ...] | None = None
    """ONNX: the model's class names in output order (default: the project's labels)."""
    input_size: int = Field(default=640, ge=8)
    """ONNX: side of the square input the model was exported for."""
    iou: float = Field(default=0.45, ge=0.0, le=1.0)
    """ONNX: class-wise NMS threshold."""

    @model_validator(mode="after")
    def _check_path(self) -> ProposalsConfig:
        if self.source in ("file", "onnx") and self.path is None:
            raise ValueError(
                f"[proposals] source = {self.source!r} needs `path` (the "
                + ("autolabel file" if self.source == "file" else ".onnx model") + ")"
            )
        return self


# --- loop ---------------------------------------------------------------------------------


class LoopConfig(_Model):
    initial_size: int = Field(default=20, ge=1)
    """Samples picked by the cold-start strategy in round 0."""
    batch_size: int = Field(default=20, ge=1)
    """Samples picked per round after round 0."""
    max_rounds: int | None = Field(default=None, ge=1)
    """Stop after this many rounds (round 0 included)."""
    budget: int | None = Field(default=None, ge=1)
    """Stop once this many samples were selected for labeling in total."""
    target_accuracy: float | None = Field(default=None, gt=0.0, le=1.0)
    """Stop once the held-out accuracy reaches this value."""
    completion_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    """A round closes when this fraction of its tasks is resolved ..."""
    completion_timeout_s: float | None = Field(default=None, gt=0)
    """... and, if the fraction is below 1, this many seconds passed since the push."""
    aggregation: str = "majority"
    """How several annotators' labels become one: a registered aggregator (majority, latest, ...)."""
    max_attempts: int = Field(default=3, ge=1)
    """A step that fails this many times marks its round FAILED."""
    save_models: bool = True
    retrain_after_labels: int | None = Field(default=None, ge=1)
    """Close the round early (retrain, pick the next batch) once this many samples got a new valid
    label since the round's model was trained."""
    retrain_after_s: float | None = Field(default=None, gt=0)
    """Close the round early once its model is this many seconds old and at least one new label arrived."""
    stop_kappa: float | None = Field(default=None, gt=0.0, le=1.0)
    """Stabilizing predictions: stop once the mean Cohen's kappa between successive models'
    predictions on the stop set, over the last ``stop_window`` pairs, reaches this (0.99 in the
    paper). See :mod:`alloop.loop.stopping`."""
    stop_window: int = Field(default=3, ge=1)
    """Model pairs ``stop_kappa`` averages over."""
    stop_uncertainty: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Overall uncertainty: stop once the stop set's mean normalised prediction entropy falls below this (0.05)."""
    stop_set_size: int = Field(default=1000, ge=10)
    """Unlabeled pool samples the stopping rules measure the models on (drawn once, seeded)."""
    track_stopping: bool = False
    """Measure every round model on the stop set even when no stopping rule is set (``alloop status``
    shows the measures; ``alloop simulate --stopping`` uses this)."""


class ServeConfig(_Model):
    """When ``alloop serve`` ticks the project (besides the Label Studio webhooks): every
    ``interval_s`` seconds (default 300), or on a ``cron`` schedule - not both."""

    interval_s: float | None = Field(default=None, gt=0)
    """Seconds between two scheduled ticks (default 300 when no cron is given)."""
    cron: str | None = None
    """A five-field cron expression (minute hour day month day-of-week), e.g. "*/10 8-18 * * mon-fri".
    Days of the week are written as names (mon..sun)."""
    timezone: str | None = None
    """IANA time zone the cron expression is read in (default: the machine's local zone)."""

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None:
            check_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        if value is not None:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value!r} is not an IANA time zone (e.g. \"UTC\", \"Europe/Paris\")") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> ServeConfig:
        if self.interval_s is not None and self.cron is not None:
            raise ValueError("[serve] interval_s and cron are mutually exclusive: keep one of them")
        return self

    @property
    def every_s(self) -> float | None:
        """The interval in seconds, or None for a cron schedule."""
        if self.cron is not None:
            return None
        return self.interval_s if self.interval_s is not None else 300.0


class ExecutionConfig(_Model):
    """``[execution]``: where a round's per-shard work (encoding, scoring, selection) runs."""

    backend: Literal["local", "ray"] = "local"
    """``local``: in this process (no Ray needed). ``ray``: Ray tasks and Ray Data on a cluster
    (``pip install 'alloop[ray]'``)."""
    address: str | None = None
    """Ray only: ``auto`` (the cluster this machine belongs to), ``ray://host:port`` (Ray Client),
    ``host:port`` of a head node, or ``local`` / unset (alloop starts a local cluster)."""
    shard_rows: int = Field(default=65536, ge=1)
    """Rows per shard: a step holds about one shard of features and scores in memory at a time."""
    max_retries: int = Field(default=3, ge=0)
    """Ray only: how often a task whose worker died is retried before the round fails."""


class ProjectSection(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Literal["classification", "text", "detection"] = "classification"
    labels: tuple[str, ...] | None = None
    """The label set. If omitted, taken from the pool's known labels at import."""
    seed: int = 0
    work_dir: Path = Path(".alloop")
    database: str | None = None
    """SQLAlchemy URL. Default: a SQLite file in the work directory."""


class ProjectConfig(_Model):
    """Everything that defines a project; stored (resolved) on the Project row."""

    project: ProjectSection
    pool: PoolConfig = Field(default_factory=PoolConfig)
    features: Component = Field(default_factory=lambda: Component(name="pixels"))
    learner: Component = Field(default_factory=lambda: Component(name="sklearn"))
    """The model retrained each round; detection projects default to "none" (or "command")."""
    strategy: Component = Field(default_factory=lambda: Component(name="margin"))
    cold_start: Component = Field(default_factory=lambda: Component(name="random"))
    teacher: Component | None = None
    """A probability source for distilling learners (e.g. clip_zeroshot); none by default."""
    connector: Component = Field(default_factory=lambda: Component(name="oracle"))
    proposals: ProposalsConfig | None = None
    """Detection: the object proposals object-level strategies (ofds) select from."""
    loop: LoopConfig = Field(default_factory=LoopConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    """``alloop serve``: the schedule it ticks this project on."""
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    """Where per-shard work runs (local by default, or a Ray cluster)."""

    @model_validator(mode="before")
    @classmethod
    def _detection_defaults(cls, data: Any) -> Any:
        """A detection project without a [learner] section trains no model (learner 'none')."""
        if isinstance(data, dict) and "learner" not in data:
            project = data.get("project")
            task = project.get("task") if isinstance(project, dict) else getattr(project, "task", None)
            if task == "detection":
                data = {**data, "learner": {"name": "none"}}
        return data

    @model_validator(mode="after")
    def _check_labels(self) -> ProjectConfig:
        labels = self.project.labels
        if labels is not None:
            if len(labels) < 2:
                raise ValueError(f"project.labels needs at least 2 labels, got {list(labels)}")
            dupes = sorted({x for x in labels if labels.count(x) > 1})
            if dupes:
                raise ValueError(f"project.labels has duplicates: {dupes}")
        if self.proposals is not None and self.project.task != "detection":
            raise ValueError(
                f"[proposals] is for detection projects; this project's task is {self.project.task!r}. "
                "Remove [proposals] or set task = \"detection\" under [project]"
            )
        if getattr(self.pool.source, "annotations", None) is not None and self.project.task != "detection":
            raise ValueError(
                "[pool.source] annotations (COCO boxes) is for detection projects; set task = \"detection\" "
                "under [project] or remove it"
            )
        return self

    # -- derived -----------------------------------------------------------------------
    def resolved_json(self) -> str:
        return self.model_dump_json()

    def fingerprint(self) -> str:
        return hashlib.sha256(self.resolved_json().encode()).hexdigest()[:16]


def check_cron(expr: str, timezone: str | None = None) -> None:
    """Raise ``ValueError`` (with the way out) if ``expr`` is not a usable cron expression."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day month day-of-week), got {len(fields)} in {expr!r}; "
            'e.g. "*/10 * * * *" (every 10 minutes) or "0 7 * * mon-fri"'
        )
    if re.search(r"\d", fields[4]):
        raise ValueError(
            f"write the day-of-week field with names (mon, tue, ..., sun; e.g. mon-fri), not numbers: {fields[4]!r} "
            "(APScheduler counts Monday as 0, cron counts Sunday as 0)"
        )
    try:
        CronTrigger.from_crontab(expr, timezone=timezone or "UTC")
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None


# --- loading ------------------------------------------------------------------------------


def parse_config(data: dict[str, Any], where: str = "project configuration") -> ProjectConfig:
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, ProjectConfig, where)) from None


def find_project_file(path: str | os.PathLike[str] | None = None) -> Path:
    """The project file to use: the given path, ``$ALLOOP_PROJECT_FILE`` or ./alloop.toml.

    A directory is accepted and means ``<dir>/alloop.toml``.
    """
    raw = path or os.environ.get("ALLOOP_PROJECT_FILE") or PROJECT_FILE
    p = Path(raw)
    if p.is_dir():
        p = p / PROJECT_FILE
    if not p.is_file():
        raise ConfigError(
            f"No project file at {str(p)!r}. Create one with `alloop init`, or pass "
            "--project PATH (or set ALLOOP_PROJECT_FILE)."
        )
    return p.resolve()


def load_config(path: str | os.PathLike[str] | None = None) -> tuple[ProjectConfig, Path]:
    """Read and validate a project file; relative paths in it are resolved against its folder.

    Returns the config and the project file's absolute path.
    """
    file = find_project_file(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}. Fix the syntax at that line.") from None
    cfg = parse_config(data, where=str(file))
    return resolve_paths(cfg, file.parent), file


def resolve_paths(cfg: ProjectConfig, base: Path) -> ProjectConfig:
    """Make the work dir and pool paths absolute, relative to ``base``."""

    def absolute(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    def params(comp: Component | None) -> Component | None:
        """Relative file paths in component parameters are relative to the project file too."""
        if comp is None:
            return None
        out = dict(comp.params)
        for key, value in comp.params.items():
            if not isinstance(value, str) or not value or Path(value).is_absolute() or "<" in value:
                continue
            always = key.endswith("path") or key in ("model_config", "document_root", "cwd")
            if always or (key in ("pretrained", "weights", "label_config") and (base / value).is_file()):
                out[key] = str((base / Path(value).expanduser()).resolve())
        if comp.name == "command" and "cwd" not in out:  # a training command runs next to the project file
            out["cwd"] = str(base.resolve())
        return comp.model_copy(update={"params": out})

    components = {
        name: params(getattr(cfg, name))
        for name in ("features", "learner", "strategy", "cold_start", "connector", "teacher")
    }
    project = cfg.project.model_copy(update={"work_dir": absolute(cfg.project.work_dir)})
    source = cfg.pool.source
    updates = {
        k: absolute(getattr(source, k))
        for k in ("path", "labels_path", "keys_path", "annotations")
        if hasattr(source, k)
    }
    pool = cfg.pool.model_copy(update={"source": source.model_copy(update=updates)})
    extra: dict[str, Any] = {}
    if cfg.proposals is not None:
        extra["proposals"] = cfg.proposals.model_copy(update={"path": absolute(cfg.proposals.path)})
    return cfg.model_copy(update={"project": project, "pool": pool, **components, **extra})


def database_url(cfg: ProjectConfig) -> str:
    """The database URL: ``$ALLOOP_DATABASE_URL`` > project file > SQLite in the work dir."""
    env = os.environ.get("ALLOOP_DATABASE_URL")
    if env:
        return env
    if cfg.project.database:
        return cfg.project.database
    return f"sqlite:///{Path(cfg.project.work_dir) / 'alloop.db'}"


def dumps_toml(data: dict[str, Any]) -> str:
    import tomli_w

    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if v is not None}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        if isinstance(obj, Path):
            return str(obj)
        return obj

    return tomli_w.dumps(clean(data))
