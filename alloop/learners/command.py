"""The ``command`` learner: train and predict with your own script, through files.

Teams with their own training code (a detector, a fine-tuning script) keep it: alloop writes
the labeled samples and the samples to predict into a run folder, runs the command, and reads
the predictions back. Project file::

    [learner]
    name = "command"
    params = { command = "python train.py --train {train} --predict {predict} --output {output}", timeout_s = 1800 }

What the command gets (the same paths as placeholders in its arguments and as environment
variables; it also inherits alloop's environment, so secrets need not be in the project file):

============  ====================  ====================================================================
placeholder   variable              content
============  ====================  ====================================================================
``{train}``   ``ALLOOP_TRAIN``      detection: ``train.json`` (COCO, ``file_name`` = absolute image path,
                                    ``alloop_key`` = sample key); otherwise ``train.jsonl``, lines
                                    ``{"key", "path" or "text", "label"}``
``{predict}`` ``ALLOOP_PREDICT``    ``predict.json`` (COCO without annotations) or ``predict.jsonl``
``{output}``  ``ALLOOP_OUTPUT``     where to write the predictions (see below)
``{metrics}`` ``ALLOOP_METRICS``    optional ``metrics.json``: a JSON object of numbers
``{labels}``  ``ALLOOP_LABELS``     ``labels.json``, the list of label names (COCO category ``j + 1``)
``{run_dir}`` ``ALLOOP_RUN_DIR``    the run folder (the default working directory)
``{task}``    ``ALLOOP_TASK``       ``classification``, ``text`` or ``detection``
``{seed}``    ``ALLOOP_SEED``       the round's seed
``{python}``  ``ALLOOP_PYTHON``     the Python running alloop (its virtualenv), for Python scripts
============  ====================  ====================================================================

Predictions: for detection, ``predictions.json``, a COCO results list
``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` with the ids of
``predict.json`` (a whole COCO object works too), or ``predictions.jsonl`` with lines
``{"image": key or file_name, "box": [x, y, w, h], "label", "score"}``. Otherwise
``predictions.jsonl`` with one line per predicted sample, ``{"key": k, "proba": {label: p}}``
(or ``proba`` as a list in label order) or ``{"key": k, "label": name, "score": s}``.
The command's stdout and stderr are kept in ``stdout.log`` and ``stderr.log`` of the run folder.

The files are written and read by :mod:`alloop.learners.exchange`; the program runs in its own
process group under a timeout (:mod:`alloop.learners._process`).
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alloop.errors import ConfigError, LearnerError, format_list
from alloop.learners._process import run_logged
from alloop.learners.exchange import (
    check_unique_keys,
    read_detections,
    read_metrics,
    read_proba,
    write_inputs,
)
from alloop.protocols.context import PluginContext
from alloop.protocols.learner import ExportItem, ExternalResult

logger = logging.getLogger(__name__)

__all__ = ["PLACEHOLDERS", "TASKS", "CommandLearner", "CommandParams", "ExportItem", "ExternalResult"]

#: Names usable as ``{name}`` in the command's arguments.
PLACEHOLDERS = ("train", "predict", "output", "metrics", "run_dir", "labels", "task", "seed", "python")
TASKS = ("classification", "text", "detection")
_ENV = {name: f"ALLOOP_{name.upper()}" for name in PLACEHOLDERS}


class CommandParams(BaseModel):
    """Parameters of :class:`CommandLearner` (``[learner] params``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str | list[str]
    """The program and its arguments (a string is split like a shell would, but no shell runs)."""
    timeout_s: float | None = Field(default=3600, gt=0)
    """Stop the command after this many seconds (None: no limit)."""
    cwd: str | None = None
    """Working directory of the command; default: the run folder."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables (the command also inherits alloop's environment)."""


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------
def _argv_template(params: CommandParams) -> list[str]:
    """The command as a list of arguments, checked for unknown or malformed placeholders."""
    if isinstance(params.command, str):
        try:
            argv = shlex.split(params.command)
        except ValueError as exc:
            raise ConfigError(
                f"learner.params.command {params.command!r} cannot be split into arguments ({exc}). "
                "Close the quotes, or give the command as a list of arguments."
            ) from None
    else:
        argv = list(params.command)
    if not argv or not argv[0].strip():
        raise ConfigError(
            "learner.params.command is empty; give the program and its arguments, e.g. "
            '"python train.py --train {train} --output {output}".'
        )
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    for arg in argv:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
        except ValueError as exc:
            raise ConfigError(
                f"learner.params.command: argument {arg!r} has a malformed placeholder ({exc}). "
                f"Placeholders are {known}; write a literal brace as '{{{{' or '}}}}'."
            ) from None
        for name in fields:
            if name not in PLACEHOLDERS:
                hint = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
                raise ConfigError(
                    f"learner.params.command: unknown placeholder {{{name}}} in argument {arg!r}. "
                    f"Known placeholders: {known}."
                    + (f" Did you mean {{{hint[0]}}}?" if hint else "")
                    + " Write a literal brace as '{{' or '}}'."
                )
    reserved = sorted(set(params.env) & set(_ENV.values()))
    if reserved:
        raise ConfigError(
            f"learner.params.env sets {format_list(reserved)}, which alloop sets for every run "
            "(the paths of this run). Remove them from env; use the {placeholders} instead."
        )
    return argv


# ---------------------------------------------------------------------------------------------
# the learner
# ---------------------------------------------------------------------------------------------
class CommandLearner:
    """Trains and predicts by running an external command on files (see the module docstring).

    Parameters
    ----------
    params : CommandParams

    Raises
    ------
    ConfigError
        An empty or unsplittable command, an unknown placeholder, ``env`` setting an
        ``ALLOOP_*`` variable of the run.
    """

    name = "command"
    requires: frozenset[str] = frozenset({"files"})  # trains on exported samples, not on feature rows

    def __init__(self, params: CommandParams) -> None:
        self.params = params
        self._argv = _argv_template(params)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, *, context: PluginContext | None = None) -> CommandLearner:
        from alloop.params import parse_params

        return cls(parse_params(CommandParams, params, "command learner parameters"))

    def run(
        self,
        *,
        task: str,
        labels: Sequence[str],
        train: Sequence[ExportItem],
        predict: Sequence[ExportItem],
        run_dir: Path,
        seed: int,
    ) -> ExternalResult:
        """Export ``train`` and ``predict`` into ``run_dir``, run the command, read its predictions.

        Parameters
        ----------
        task : {"classification", "text", "detection"}
        labels : sequence of str
            The label set; probability columns and COCO categories follow its order.
        train, predict : sequences of ExportItem
        run_dir : Path
            Created if needed; receives the inputs, the outputs and the command's logs.
        seed : int

        Returns
        -------
        ExternalResult

        Raises
        ------
        LearnerError
            The program is missing, fails, runs past ``timeout_s``, writes no output or an
            output that cannot be read (the message names the file and the line or entry).
        """
        if task not in TASKS:
            raise ConfigError(f"The command learner handles the tasks {format_list(TASKS)}, got {task!r}.")
        labels = [str(x) for x in labels]
        if not labels or len(set(labels)) != len(labels):
            raise LearnerError(f"labels must be a non-empty list of distinct names, got {labels!r}.")
        check_unique_keys(train, "training")
        check_unique_keys(predict, "predict")
        run_dir = Path(run_dir).expanduser().absolute()
        run_dir.mkdir(parents=True, exist_ok=True)
        detection = task == "detection"
        ext = "json" if detection else "jsonl"
        paths = {
            "train": run_dir / f"train.{ext}",
            "predict": run_dir / f"predict.{ext}",
            "output": run_dir / f"predictions.{ext}",
            "metrics": run_dir / "metrics.json",
            "labels": run_dir / "labels.json",
            "run_dir": run_dir,
        }
        for stale in ("predictions.json", "predictions.jsonl", "metrics.json"):
            (run_dir / stale).unlink(missing_ok=True)
        files = write_inputs(task, labels, train, predict, paths)

        values: dict[str, Any] = {k: str(v) for k, v in paths.items()} | {
            "task": task, "seed": int(seed), "python": sys.executable}
        seconds = self._execute(values, run_dir)

        keys = tuple(item.key for item in predict)
        if not (paths["output"].exists() or (detection and (run_dir / "predictions.jsonl").exists())):
            raise LearnerError(
                f"The training command {shlex.join(self._format(values))} finished but wrote no "
                f"predictions: expected the file {paths['output']} (its path is given as {{output}} "
                f"in the arguments and as $ALLOOP_OUTPUT)"
                + (" or predictions.jsonl next to it" if detection else "")
                + f". Its logs are in {run_dir}."
            )
        proba = None if detection else read_proba(paths["output"], keys, labels)
        detections = read_detections(run_dir, files, labels, keys) if detection else None
        return ExternalResult(
            task=task,
            keys=keys,
            proba=proba,
            detections=detections,
            metrics=read_metrics(paths["metrics"]),
            run_dir=run_dir,
            seconds=seconds,
        )

    # -- running ------------------------------------------------------------------------------
    def _format(self, values: Mapping[str, Any]) -> list[str]:
        return [arg.format(**values) for arg in self._argv]

    def _execute(self, values: Mapping[str, Any], run_dir: Path) -> float:
        """Run the command; its duration in seconds, or a LearnerError."""
        cwd = Path(self.params.cwd).expanduser().absolute() if self.params.cwd else run_dir
        if not cwd.is_dir():
            raise LearnerError(
                f"The working directory {cwd} of the training command does not exist; fix `cwd` in the "
                "[learner] params."
            )
        env = {**os.environ, **self.params.env}
        env.update({_ENV[k]: str(v) for k, v in values.items()})
        return run_logged(self._format(values), cwd=cwd, env=env, run_dir=run_dir, timeout_s=self.params.timeout_s)
