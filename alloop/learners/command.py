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
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import shlex
import signal
import string
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alloop.detection.boxes import Proposals, clip_boxes, invalid_boxes
from alloop.errors import (
    ConfigError,
    LearnerError,
    PoolImportError,
    SampleDecodeError,
    format_list,
)
from alloop.protocols.context import PluginContext

logger = logging.getLogger(__name__)

__all__ = ["PLACEHOLDERS", "TASKS", "CommandLearner", "CommandParams", "ExportItem", "ExternalResult"]

#: Names usable as ``{name}`` in the command's arguments.
PLACEHOLDERS = ("train", "predict", "output", "metrics", "run_dir", "labels", "task", "seed", "python")
TASKS = ("classification", "text", "detection")
_ENV = {name: f"ALLOOP_{name.upper()}" for name in PLACEHOLDERS}
_STDERR_LINES = 20
_PROBA_EXAMPLE = '{"key": "img_001.png", "proba": {"cat": 0.9, "dog": 0.1}}'
_LABEL_EXAMPLE = '{"key": "img_001.png", "label": "cat", "score": 0.9}'
_RESULT_EXAMPLE = '{"image_id": 1, "category_id": 2, "bbox": [10, 20, 30, 40], "score": 0.87}'


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


@dataclass(frozen=True)
class ExportItem:
    """One sample handed to the command.

    Attributes
    ----------
    key : str
        The stable sample key.
    data : mapping
        ``{"path": absolute image path, optional "width", "height"}`` or ``{"text": ...}``.
    label : str, optional
        Classification/text: the training label.
    boxes : sequence of mappings, optional
        Detection: ``[{"bbox": [x, y, w, h] (pixels), "label": str}, ...]``.
    """

    key: str
    data: Mapping[str, Any]
    label: str | None = None
    boxes: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class ExternalResult:
    """What one run of the command produced.

    Attributes
    ----------
    task : str
    keys : tuple of str
        The predict items' keys, in the order given.
    proba : ndarray of shape (len(keys), n_labels), float32, or None
        Classification/text: rows sum to 1, columns in label order.
    detections : Proposals or None
        Detection: image keys, ``xywh`` pixel boxes clipped to the image, labels, scores.
    metrics : dict of str to float
        From ``metrics.json`` when the command wrote one.
    run_dir : Path
    seconds : float
        How long the command ran.
    """

    task: str
    keys: tuple[str, ...]
    proba: np.ndarray | None
    detections: Proposals | None
    metrics: dict[str, float]
    run_dir: Path
    seconds: float


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


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _stop(proc: subprocess.Popen) -> None:
    """Kill the command and whatever it started (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------------------------------------
# what the command reads
# ---------------------------------------------------------------------------------------------
def _image_path(item: ExportItem) -> str:
    path = item.data.get("path")
    if not path:
        raise LearnerError(
            f"Sample {item.key!r} has no image path (data {dict(item.data)!r}); a detection sample "
            "needs data={'path': ...}. Check the pool's source."
        )
    return os.path.abspath(os.path.expanduser(str(path)))


def _image_size(item: ExportItem, path: str) -> tuple[int, int]:
    from alloop.detection.annotations import image_size

    return image_size({**item.data, "path": path}, item.key)


def _unique_keys(items: Sequence[ExportItem], what: str) -> None:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.key] = counts.get(item.key, 0) + 1
    dupes = [key for key, n in counts.items() if n > 1]
    if dupes:
        raise LearnerError(
            f"The {what} samples repeat the key(s) {format_list(sorted(set(dupes)))}; keys must be unique."
        )


def _label_index(label: Any, labels: list[str], key: str) -> int:
    if label not in labels:
        raise LearnerError(
            f"Sample {key!r} has the label {label!r}, which is not one of the project's labels "
            f"({format_list(labels, 20)}). Fix the annotation or add the label to project.labels."
        )
    return labels.index(label)


def _write_coco(
    path: Path, items: Sequence[ExportItem], labels: list[str], with_boxes: bool
) -> list[tuple[str, int, int]]:
    """Write a COCO file; the (absolute path, width, height) of each item."""
    images, annotations, files = [], [], []
    for i, item in enumerate(items):
        file_name = _image_path(item)
        width, height = _image_size(item, file_name)
        files.append((file_name, width, height))
        images.append({"id": i + 1, "file_name": file_name, "width": width, "height": height, "alloop_key": item.key})
        for obj in (item.boxes or []) if with_boxes else []:
            try:
                bbox = [float(v) for v in obj["bbox"]]
                ok = len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0 and all(map(math.isfinite, bbox))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok or "label" not in obj:
                raise LearnerError(
                    f"Sample {item.key!r} has the object {dict(obj)!r}; an object needs 'bbox' [x, y, w, h] "
                    "(pixels, w, h > 0) and 'label'."
                )
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": _label_index(obj["label"], labels, item.key) + 1,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": j + 1, "name": name} for j, name in enumerate(labels)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(coco), encoding="utf-8")
    return files


def _write_jsonl(path: Path, items: Sequence[ExportItem], labels: list[str], with_label: bool) -> None:
    lines = []
    for item in items:
        row: dict[str, Any] = {"key": item.key}
        if item.data.get("path"):
            row["path"] = os.path.abspath(os.path.expanduser(str(item.data["path"])))
        if item.data.get("text") is not None:
            row["text"] = str(item.data["text"])
        if len(row) == 1:
            raise LearnerError(f"Sample {item.key!r} has neither a 'path' nor a 'text' (data {dict(item.data)!r}).")
        if with_label:
            if item.label is None:
                raise LearnerError(f"Training sample {item.key!r} has no label; only labeled samples can be exported.")
            _label_index(item.label, labels, item.key)
            row["label"] = item.label
        lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# what the command wrote
# ---------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_metrics(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LearnerError(
            f'{path}: not valid JSON ({exc}). Write a JSON object of numbers, e.g. {{"accuracy": 0.91}}.'
        ) from None
    if not isinstance(data, dict):
        raise LearnerError(f"{path}: expected a JSON object of numbers, got a JSON {type(data).__name__}.")
    bad = {k: v for k, v in data.items() if not _is_number(v)}
    if bad:
        name, value = next(iter(bad.items()))
        raise LearnerError(
            f"{path}: metric {name!r} is {json.dumps(value)}, but metrics must be finite numbers "
            f'({len(bad)} are not). Write numbers only, e.g. {{"accuracy": 0.91}}; leave out the others.'
        )
    return {str(k): float(v) for k, v in data.items()}


def _close(name: str, known: Sequence[str]) -> str:
    hint = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    return f" Did you mean {hint[0]!r}?" if hint else ""


def _proba_row(obj: dict[str, Any], labels: list[str], where: str) -> np.ndarray:
    n = len(labels)
    if "proba" in obj:
        proba = obj["proba"]
        if isinstance(proba, dict):
            row = np.zeros(n)
            for name, p in proba.items():
                if name not in labels:
                    raise LearnerError(
                        f"{where}: unknown label {name!r} in 'proba' (labels: {format_list(labels, 20)})."
                        + _close(name, labels)
                    )
                row[labels.index(name)] = p if _is_number(p) else math.nan
            values = list(proba.values())
        elif isinstance(proba, list) and len(proba) == n:
            values = proba
            row = np.array([p if _is_number(p) else math.nan for p in proba], float)
        else:
            raise LearnerError(
                f"{where}: 'proba' must be an object {{label: probability}} (or a list of {n} numbers in "
                f"label order), got {json.dumps(proba)[:200]}. E.g. {_PROBA_EXAMPLE}."
            )
        if not np.isfinite(row).all() or (row < 0).any():
            raise LearnerError(f"{where}: probabilities must be finite numbers >= 0, got {json.dumps(values)[:200]}.")
        if row.sum() <= 0:
            raise LearnerError(f"{where}: the probabilities sum to 0; give at least one positive value.")
        return row / row.sum()
    if "label" in obj:
        name = obj["label"]
        name = str(name) if isinstance(name, int) and not isinstance(name, bool) else name  # class 3 -> "3"
        if name not in labels:
            raise LearnerError(
                f"{where}: unknown label {name!r} (labels: {format_list(labels, 20)}).{_close(name, labels)}"
            )
        score = obj.get("score", 1.0)
        if not _is_number(score) or not 0.0 <= score <= 1.0:
            raise LearnerError(f"{where}: 'score' must be a number between 0 and 1, got {json.dumps(score)}.")
        # the score on the predicted label, the rest shared by the others
        row = np.full(n, (1.0 - score) / (n - 1) if n > 1 else 0.0)
        row[labels.index(name)] = score if n > 1 else 1.0
        return row / row.sum()
    raise LearnerError(
        f"{where}: a line needs 'proba' or 'label' (fields: {format_list(list(obj), 10) or 'none'}). "
        f"E.g. {_PROBA_EXAMPLE} or {_LABEL_EXAMPLE}."
    )


def _read_proba(path: Path, keys: Sequence[str], labels: list[str]) -> np.ndarray:
    position = {k: i for i, k in enumerate(keys)}
    proba = np.zeros((len(keys), len(labels)), np.float64)
    line_of: dict[str, int] = {}
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LearnerError(
                f"{where}: invalid JSON ({exc.msg} at column {exc.colno}). Each line must be one JSON "
                f"object, e.g. {_PROBA_EXAMPLE}."
            ) from None
        if not isinstance(obj, dict) or "key" not in obj:
            raise LearnerError(
                f"{where}: expected a JSON object with a 'key', got {line.strip()[:200]}. E.g. {_PROBA_EXAMPLE}."
            )
        key = str(obj["key"])
        if key not in position:
            raise LearnerError(
                f"{where}: key {key!r} is not one of the {len(keys)} samples in the predict file."
                f"{_close(key, keys)} Write the 'key' of each predict line as given."
            )
        if key in line_of:
            raise LearnerError(
                f"{where}: key {key!r} was already predicted on line {line_of[key]}; write each key once."
            )
        line_of[key] = lineno
        proba[position[key]] = _proba_row(obj, labels, where)
    missing = [k for k in keys if k not in line_of]
    if missing:
        raise LearnerError(
            f"{path}: {len(missing)} of the {len(keys)} samples to predict have no line, e.g. "
            f"{format_list(missing, 3)}. The command must write one line per line of the predict file."
        )
    return proba.astype(np.float32)


def _read_results(
    path: Path, results: list[Any], files: list[tuple[str, int, int]], labels: list[str], keys: Sequence[str]
) -> Proposals:
    """A COCO results list whose image and category ids are those of predict.json."""
    image, box, label, score = [], [], [], []
    for i, obj in enumerate(results):
        where = f"{path}, entry [{i}]"
        if not isinstance(obj, dict) or not all(f in obj for f in ("image_id", "category_id", "bbox")):
            raise LearnerError(
                f"{where}: expected an object with 'image_id', 'category_id', 'bbox' and 'score', got "
                f"{json.dumps(obj)[:200]}. E.g. {_RESULT_EXAMPLE}."
            )
        img, cat = obj["image_id"], obj["category_id"]
        if isinstance(img, bool) or not isinstance(img, int) or not 1 <= img <= len(files):
            raise LearnerError(
                f"{where}: image_id {json.dumps(img)} is not an image id of the predict file (1..{len(files)})."
            )
        if isinstance(cat, bool) or not isinstance(cat, int) or not 1 <= cat <= len(labels):
            raise LearnerError(
                f"{where}: category_id {json.dumps(cat)} is not a category id (1..{len(labels)}: "
                f"{format_list(labels, 20)}, the ids of the categories in the predict file)."
            )
        b = obj["bbox"]
        if not (isinstance(b, list) and len(b) == 4 and all(_is_number(v) for v in b) and b[2] > 0 and b[3] > 0):
            raise LearnerError(f"{where}: 'bbox' must be [x, y, w, h] in pixels with w, h > 0, got {json.dumps(b)}.")
        s = obj.get("score", 1.0)
        if not _is_number(s) or not 0.0 <= s <= 1.0:
            raise LearnerError(f"{where}: 'score' must be a number between 0 and 1, got {json.dumps(s)}.")
        _, width, height = files[img - 1]
        clipped = clip_boxes([b], width, height)
        if invalid_boxes(clipped)[0]:
            raise LearnerError(
                f"{where}: bbox {b} lies outside its {width}x{height} image {keys[img - 1]!r}; boxes are "
                "[x, y, w, h] in pixels, not fractions of the image size."
            )
        image.append(keys[img - 1])
        box.append(clipped[0])
        label.append(labels[cat - 1])
        score.append(float(s))
    if not image:
        return Proposals.empty()
    return Proposals(image=image, box=box, label=label, score=score)


def _read_detections(
    run_dir: Path, files: list[tuple[str, int, int]], labels: list[str], keys: Sequence[str]
) -> Proposals:
    from alloop.detection.proposals import read_autolabels

    order = {k: i for i, k in enumerate(keys)}
    json_path, jsonl_path = run_dir / "predictions.json", run_dir / "predictions.jsonl"
    path = json_path if json_path.exists() else jsonl_path
    text = path.read_text(encoding="utf-8", errors="replace")
    if path == json_path:
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise LearnerError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
        if isinstance(data, list):
            found = _read_results(path, data, files, labels, keys)
            return found[np.argsort([order[k] for k in found.image.tolist()], kind="stable")]
    # a whole COCO object or JSON lines: images named by absolute path (as in predict.json) or key
    key_of = {f[0]: k for f, k in zip(files, keys)} | {k: k for k in keys}
    sizes = {name: (float(files[order[k]][1]), float(files[order[k]][2])) for name, k in key_of.items()}
    try:
        found = read_autolabels(path, labels=labels, image_sizes=sizes)
    except (PoolImportError, ConfigError) as exc:
        raise LearnerError(f"The training command's predictions cannot be read: {exc}") from None
    if not len(found):
        return found
    image = [key_of[name] for name in found.image.tolist()]
    found = Proposals(image=image, box=found.box, label=found.label, score=found.score)
    return found[np.argsort([order[k] for k in image], kind="stable")]


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
        _unique_keys(train, "training")
        _unique_keys(predict, "predict")
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
        paths["labels"].write_text(json.dumps(labels, ensure_ascii=False), encoding="utf-8")
        files: list[tuple[str, int, int]] = []
        if detection:
            _write_coco(paths["train"], train, labels, with_boxes=True)
            files = _write_coco(paths["predict"], predict, labels, with_boxes=False)
        else:
            _write_jsonl(paths["train"], train, labels, with_label=True)
            _write_jsonl(paths["predict"], predict, labels, with_label=False)

        values: dict[str, Any] = {k: str(v) for k, v in paths.items()} | {
            "task": task, "seed": int(seed), "python": sys.executable}
        seconds = self._execute(values, run_dir)

        keys = tuple(item.key for item in predict)
        if not (paths["output"].exists() or detection and (run_dir / "predictions.jsonl").exists()):
            raise LearnerError(
                f"The training command {shlex.join(self._format(values))} finished but wrote no "
                f"predictions: expected the file {paths['output']} (its path is given as {{output}} "
                f"in the arguments and as $ALLOOP_OUTPUT)"
                + (" or predictions.jsonl next to it" if detection else "")
                + f". Its logs are in {run_dir}."
            )
        proba = None if detection else _read_proba(paths["output"], keys, labels)
        detections = _read_detections(run_dir, files, labels, keys) if detection else None
        return ExternalResult(
            task=task,
            keys=keys,
            proba=proba,
            detections=detections,
            metrics=_read_metrics(paths["metrics"]),
            run_dir=run_dir,
            seconds=seconds,
        )

    # -- running ------------------------------------------------------------------------------
    def _format(self, values: Mapping[str, Any]) -> list[str]:
        return [arg.format(**values) for arg in self._argv]

    def _execute(self, values: Mapping[str, Any], run_dir: Path) -> float:
        """Run the command; its duration in seconds, or a LearnerError."""
        argv = self._format(values)
        shown = shlex.join(argv)
        cwd = Path(self.params.cwd).expanduser().absolute() if self.params.cwd else run_dir
        if not cwd.is_dir():
            raise LearnerError(
                f"The working directory {cwd} of the training command does not exist; fix `cwd` in the "
                "[learner] params."
            )
        env = {**os.environ, **self.params.env}
        env.update({_ENV[k]: str(v) for k, v in values.items()})
        out_log, err_log = run_dir / "stdout.log", run_dir / "stderr.log"
        logger.info("running the training command in %s: %s", cwd, shown)
        start = time.perf_counter()
        with open(out_log, "wb") as out, open(err_log, "wb") as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
                raise LearnerError(
                    f"Cannot start the training command: program {argv[0]!r} "
                    f"{'was not found' if isinstance(exc, FileNotFoundError) else 'cannot be executed'} "
                    f"({exc.strerror}). Check `command` in the [learner] params: the program must be "
                    f"on PATH or a path (relative paths start from {cwd})."
                ) from None
            try:
                code = proc.wait(timeout=self.params.timeout_s)
            except subprocess.TimeoutExpired:
                _stop(proc)
                raise LearnerError(
                    f"The training command {shown} did not finish within timeout_s = "
                    f"{self.params.timeout_s:g} s and was stopped. Raise `timeout_s` in the [learner] "
                    f"params if it needs longer. Its logs and inputs are in {run_dir}."
                ) from None
            finally:
                _stop(proc)  # also on KeyboardInterrupt: leave nothing running
        seconds = time.perf_counter() - start
        logger.debug("training command logs: %s, %s", out_log, err_log)
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            tail = _tail(err_log, _STDERR_LINES)
            tail = (
                f" Last lines of its stderr:\n{tail}\n"
                if tail.strip()
                else (" Its stderr is empty; last lines of its stdout:\n" + _tail(out_log, _STDERR_LINES) + "\n")
            )
            raise LearnerError(
                f"The training command {shown} {how} after {seconds:.1f} s.{tail}"
                f"(full logs and the inputs it got are in {run_dir})"
            )
        logger.info("training command finished in %.1f s", seconds)
        return seconds
