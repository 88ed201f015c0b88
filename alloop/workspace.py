"""A project at run time: its config, database, work directory and components.

Components are built lazily, so a command that only reads the status never imports
scikit-learn, torch or a labeling-tool SDK.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from alloop import registry
from alloop.config import ProjectConfig, database_url
from alloop.features.cache import FeatureCache
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import (
    Connector,
    ConnectorContext,
    Encoder,
    ExternalLearner,
    FeatureLearner,
    Learner,
    PluginContext,
    Teacher,
    TeacherContext,
)
from alloop.protocols.learner import MODEL_ARRAYS
from alloop.store.engine import open_store, session_scope
from alloop.store.models import Project, Sample
from alloop.store.queries import ensure_project, get_project
from alloop.strategies.base import Strategy

if TYPE_CHECKING:
    from alloop.execution import Backend

logger = logging.getLogger(__name__)


#: who gives each model array (MODEL_ARRAYS), for the error that refuses a learner
_GIVERS = {
    "penultimate": "sklearn with a linear model (sklearn.linear_model.LogisticRegression, SGDClassifier with "
                   'loss = "log_loss") or sklearn.neural_network.MLPClassifier, and kd_student.',
    "members": 'name = "ensemble" around any feature learner, e.g. params = { learner = "sklearn", members = 5 }, '
               'and kd_student trained with dropout (params.dropout = 0.2: Monte-Carlo dropout members).',
}


class Workspace:
    """Everything needed to operate one project.

    Parameters
    ----------
    config : ProjectConfig
        With absolute paths (see :func:`alloop.config.load_config`).
    engine : Engine, optional
        Defaults to the configured database, migrated to the latest schema.
    progress : Progress
        Where long work reports progress.
    cache_dir : Path, optional
        Feature cache folder; default ``<work_dir>/cache`` (simulations share their source's).
    """

    def __init__(
        self,
        config: ProjectConfig,
        engine: Engine | None = None,
        progress: Progress = NULL_PROGRESS,
        cache_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self._engine = engine
        self.work_dir = Path(config.project.work_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else self.work_dir / "cache"
        self.reference_labels_override: dict[str, str | None] | None = None

    @property
    def name(self) -> str:
        return self.config.project.name

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._engine = open_store(database_url(self.config))
        return self._engine

    def ensure_project(self) -> Project:
        """Create the project row (or refresh its config) from the project file."""
        with session_scope(self.engine) as s:
            return ensure_project(
                s,
                name=self.name,
                task=self.config.project.task,
                labels=self.config.project.labels,
                seed=self.config.project.seed,
                config=self.config.model_dump(mode="json"),
            )

    def project(self) -> Project:
        with session_scope(self.engine) as s:
            return get_project(s, self.name)

    # -- components ----------------------------------------------------------------------
    def plugin_context(self, project: Project | None = None) -> PluginContext:
        """The project as plugins see it (labels and seed from the database once imported).

        ``project``: the project row the caller already read (this tick's), instead of reading it again.
        """
        from alloop.errors import ProjectNotFoundError

        cfg = self.config.project
        try:
            project = project if project is not None else self.project()
            labels, seed = tuple(project.labels), project.seed
        except ProjectNotFoundError:
            labels, seed = tuple(cfg.labels or ()), cfg.seed
        return PluginContext(project=self.name, task=cfg.task, labels=labels, work_dir=self.work_dir, seed=seed)

    @cached_property
    def encoder(self) -> Encoder:
        c = self.config.features
        return registry.create("encoder", c.name, c.params, context=self.plugin_context())

    @cached_property
    def backend(self) -> Backend:
        """Where per-shard work runs (``[execution]``): opened once per process, on first use."""
        from alloop.execution import open_backend

        return open_backend(self.config.execution, work_dir=self.work_dir)

    @cached_property
    def feature_cache(self) -> FeatureCache:
        backend = self.backend if self.config.execution.backend != "local" else None
        return FeatureCache(self.cache_dir / "features", backend=backend)

    def new_learner(self, project: Project | None = None) -> Learner:
        """A fresh, unfitted learner (one per round: nothing carries over from the last one);
        ``project``: the project row as the caller read it (else read here)."""
        c = self.config.learner
        return registry.create("learner", c.name, c.params, context=self.plugin_context(project))

    @cached_property
    def learner_kind(self) -> str:
        """``"none"`` (no model: detection projects without a trainer), ``"external"`` (an
        :class:`~alloop.protocols.ExternalLearner`, trained on exported files) or ``"features"``
        (a :class:`~alloop.protocols.FeatureLearner`, fit on feature rows)."""
        from alloop.errors import ConfigError

        name = self.config.learner.name
        detection = self.config.project.task == "detection"
        if name == "none":
            if not detection:
                raise ConfigError(
                    "learner name = 'none' (no model) is for detection projects; a "
                    f"{self.config.project.task!r} project needs a learner such as 'sklearn' or 'command'."
                )
            return "none"
        learner = self.new_learner()
        if isinstance(learner, ExternalLearner):
            return "external"
        if not isinstance(learner, FeatureLearner):
            raise ConfigError(
                f"Learner {name!r} ({type(learner).__name__}) implements neither alloop.protocols.FeatureLearner "
                "(fit/predict_proba/embed/save/load on feature rows) nor ExternalLearner (run on exported files)."
            )
        if detection:
            raise ConfigError(
                f"Learner {name!r} trains on one label per sample and cannot learn boxes. A detection project "
                "trains with your own script through the 'command' learner ([learner] name = \"command\", "
                "params.command = \"python train.py\"), or without a model (name = \"none\")."
            )
        return "features"

    @cached_property
    def teacher(self) -> Teacher:
        """The configured teacher (a probability source for distilling learners)."""
        from alloop.errors import ConfigError

        c = self.config.teacher
        if c is None:
            raise ConfigError(
                f"Learner {self.config.learner.name!r} distills from a teacher but the project has none: add a "
                '[teacher] section to alloop.toml (e.g. name = "clip_zeroshot"), or turn distillation off in the '
                "learner's parameters."
            )
        ctx = TeacherContext(**vars(self.plugin_context()), cache=self.feature_cache)
        return registry.create("teacher", c.name, c.params, context=ctx)

    def _loop_strategy(self, name: str, params: dict[str, Any], section: str) -> Strategy:
        """A strategy the loop can feed: object-level ones need a detection project with [proposals]."""
        strategy: Strategy = registry.create("strategy", name, params, context=self.plugin_context())
        if "proba" in strategy.requires and self.config.project.task == "detection":
            from alloop.errors import ConfigError

            raise ConfigError(
                f"{section} strategy {name!r} ranks images by one class distribution each, which a detection "
                "model does not give. Use 'ofds' (object proposals), 'coreset' (image features) or 'random'."
            )
        if "objects" in strategy.requires and self.config.proposals is None:
            from alloop.errors import ConfigError

            if self.config.project.task != "detection":
                raise ConfigError(
                    f"{section} strategy {name!r} selects from object proposals (boxes), which only detection "
                    f"projects have; this project's task is {self.config.project.task!r}. Choose an image-level "
                    "strategy such as 'random', 'margin' or 'coreset', or make a detection project."
                )
            raise ConfigError(
                f"{section} strategy {name!r} selects from object proposals, but the project has no [proposals] "
                "section. Add one, e.g. [proposals] source = \"file\", path = \"autolabels.jsonl\" (or source = "
                "\"model\" to use the detections of your command learner)."
            )
        return strategy

    @cached_property
    def strategy(self) -> Strategy:
        c = self.config.strategy
        return self._loop_strategy(c.name, c.params, "[strategy]")

    @cached_property
    def cold_start(self) -> Strategy:
        c = self.config.cold_start
        strategy = self._loop_strategy(c.name, c.params, "cold_start")
        if {"proba"} & set(strategy.requires):
            from alloop.errors import ConfigError

            raise ConfigError(
                f"cold_start strategy {c.name!r} needs model probabilities, which round 0 does not have. "
                "Use a model-free strategy such as 'random' or 'coreset'."
            )
        return strategy

    @cached_property
    def connector(self) -> Connector:
        ctx = ConnectorContext(
            **vars(self.plugin_context()),
            reference_labels=self.reference_labels,
            reference_boxes=self.reference_boxes,
            pool_root=self.pool_root(),
        )
        c = self.config.connector
        conn = registry.create("connector", c.name, c.params, context=ctx)
        if not isinstance(conn, Connector):
            from alloop.errors import ConfigError

            raise ConfigError(f"Connector {c.name!r} ({type(conn).__name__}) does not implement alloop.protocols."
                              "Connector (name, ensure_project, find_tasks, push, pull, close).")
        return conn

    def pool_root(self) -> Path | None:
        """The folder holding the pool's files (images), if the source has one."""
        source = self.config.pool.source
        if source.type == "folder":
            return Path(source.path)
        if source.type == "bundled" and source.name == "digits":
            return self.work_dir / "pool" / "digits"
        return None

    def validate(self) -> None:
        """Build every configured component once, so a bad name or parameter fails before any work."""
        for component in ("encoder", "strategy", "cold_start", "connector", "learner_kind"):
            getattr(self, component)
        for name in sorted(self.strategy.requires & MODEL_ARRAYS.keys()):
            self._check_model_array(name)
        proposals = self.config.proposals
        if proposals is not None and proposals.source == "model" and self.learner_kind != "external":
            from alloop.errors import ConfigError

            raise ConfigError(
                "[proposals] source = \"model\" takes the detections of the project's model, but the learner "
                f"{self.config.learner.name!r} predicts no boxes. Train with your script ([learner] name = "
                "\"command\") or take proposals from a file or an ONNX detector (source = \"file\" | \"onnx\")."
            )
        registry.load("aggregator", self.config.loop.aggregation)
        if self.learner_kind == "external":
            self.new_learner()
        elif (self.learner_kind == "features" and "teacher" in self.new_learner().requires) \
                or self.config.teacher is not None:
            _ = self.teacher

    def _check_model_array(self, name: str) -> None:
        """The strategy needs an array only some models give (``MODEL_ARRAYS``): the learner must give it."""
        learner = self.new_learner() if self.learner_kind == "features" else None
        if learner is not None and getattr(learner, f"gives_{name}", False) is True:
            return
        from alloop.errors import ConfigError

        what = self.config.learner.name
        if what == "sklearn":
            what += f" ({self.config.learner.params.get('estimator', 'the default estimator')})"
        raise ConfigError(
            f"Strategy {self.config.strategy.name!r} needs the model's {MODEL_ARRAYS[name][1]}, and the learner "
            f"{what} cannot give them. Learners that can: {_GIVERS[name]}"
        )

    def reference_labels(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Known labels by sample key (for the simulated annotator)."""
        if self.reference_labels_override is not None:
            return {k: self.reference_labels_override.get(k) for k in keys}
        out: dict[str, str | None] = {}
        keys = list(keys)
        with session_scope(self.engine) as s:
            pid = get_project(s, self.name).id
            for i in range(0, len(keys), 900):
                chunk = keys[i : i + 900]
                rows = s.exec(
                    select(Sample.key, Sample.reference_label).where(Sample.project_id == pid, Sample.key.in_(chunk))  # type: ignore[attr-defined]
                ).all()
                out.update(dict(rows))
        return out

    def reference_boxes(self, keys: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Ground-truth boxes by sample key, in percent of the image (for the simulated annotator)."""
        from alloop.detection.annotations import image_size, percent_boxes

        out: dict[str, dict[str, Any] | None] = {}
        keys = list(keys)
        with session_scope(self.engine) as s:
            pid = get_project(s, self.name).id
            for i in range(0, len(keys), 900):
                rows = s.exec(
                    select(Sample.key, Sample.data).where(Sample.project_id == pid, Sample.key.in_(keys[i : i + 900]))  # type: ignore[attr-defined]
                ).all()
                for key, data in rows:
                    truth = (data or {}).get("reference_boxes")
                    out[key] = None if truth is None else {"boxes": percent_boxes(truth, image_size(data, key))}
        return {k: out.get(k) for k in keys}

    def close(self) -> None:
        if "connector" in self.__dict__:
            self.connector.close()
        if "backend" in self.__dict__:
            self.backend.close()
            del self.__dict__["backend"]
        if self._engine is not None:
            self._engine.dispose()
