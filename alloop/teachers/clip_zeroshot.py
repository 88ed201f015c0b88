"""The ``clip_zeroshot`` teacher: CLIP zero-shot classification with a prompt ensemble.

The teacher of ActiveKD / PCoreSet (see reference ALGORITHMS.md): class probabilities from a
vision-language model that has seen no label of the project, following CLIP's zero-shot
classifier with prompt ensembling (Radford et al., 2021, "Learning Transferable Visual Models
From Natural Language Supervision", section 3.1.4):

- class weights: for each label, every template (``"a photo of the small {}."``) is filled with
  the class name; each text embedding is L2-normalized, the class's embeddings are averaged and
  the mean is L2-normalized again, giving ``W`` of shape (n_labels, embed_dim);
- probabilities: ``softmax(logit_scale * normalize(image_features) @ W.T)``, logit scale 100.

Image features come from an :class:`~alloop.features.open_clip.OpenClipImageEncoder` with the
same model and weights, read through the project's feature cache: when the project's encoder is
that CLIP model, each image is embedded once for both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alloop.errors import ConfigError, SampleDecodeError, format_list
from alloop.features.open_clip import OpenClipImageEncoder
from alloop.params import parse_params
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef, TeacherContext

__all__ = ["DEFAULT_TEMPLATES", "ClipZeroShotParams", "ClipZeroShotTeacher"]

#: The 7 ImageNet prompt templates the CLIP authors found best as an ensemble
#: (CLIP repository, notebooks/Prompt_Engineering_for_ImageNet.ipynb).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


class ClipZeroShotParams(BaseModel):
    """Parameters of the ``clip_zeroshot`` teacher ([teacher] params in alloop.toml).

    ``model``, ``pretrained``, ``model_config``, ``batch_size`` and ``device`` mean what they mean
    for the ``open_clip`` encoder. ``templates`` each contain ``{}`` (replaced by the class name);
    ``class_names`` maps a label to the words used in prompts (default: the label with ``_``
    turned into spaces).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default="ViT-B-32", min_length=1)
    pretrained: str | None = "openai"
    config_file: Path | None = Field(default=None, alias="model_config")
    templates: tuple[str, ...] | None = None
    class_names: dict[str, str] | None = None
    logit_scale: float = Field(default=100.0, gt=0)
    batch_size: int = Field(default=64, ge=1)
    device: str = "cpu"

    @field_validator("templates")
    @classmethod
    def _check_templates(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one template, e.g. ['a photo of a {}.'], or leave it out")
        bad = [t for t in value if "{}" not in t]
        if bad:
            raise ValueError(f"every template needs a '{{}}' where the class name goes; these have none: {bad}")
        return value

    @field_validator("class_names")
    @classmethod
    def _check_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        empty = [k for k, v in (value or {}).items() if not v.strip()]
        if empty:
            raise ValueError(f"class names must not be empty; empty for labels {empty}")
        return value


class ClipZeroShotTeacher:
    """CLIP zero-shot probabilities over the project's labels, from a prompt ensemble.

    Build it with :meth:`from_params`. Columns of :meth:`predict_proba` follow
    ``context.labels``.
    """

    name: ClassVar[str] = "clip_zeroshot"
    version: ClassVar[str] = "1"

    def __init__(self, params: ClipZeroShotParams, context: TeacherContext) -> None:
        self.params = params
        self.context = context
        self.labels = tuple(context.labels)
        if not self.labels:
            raise ConfigError("The clip_zeroshot teacher needs the project's labels; got none. Set project.labels.")
        unknown = sorted(set(params.class_names or {}) - set(self.labels))
        if unknown:
            raise ConfigError(
                f"class_names of teacher 'clip_zeroshot' names labels that are not in the project: "
                f"{format_list(unknown)}. Known labels: {format_list(self.labels, limit=20)}."
            )
        self.templates: tuple[str, ...] = params.templates or DEFAULT_TEMPLATES
        names = params.class_names or {}
        #: the words put into the templates, one per label, in label order
        self.class_names: tuple[str, ...] = tuple(names.get(lb, lb.replace("_", " ")) for lb in self.labels)
        self.encoder = OpenClipImageEncoder(
            model=params.model, pretrained=params.pretrained, model_config=params.config_file,
            batch_size=params.batch_size, device=params.device,
        )
        self._weights: np.ndarray | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any] | None = None, *, context: TeacherContext) -> ClipZeroShotTeacher:
        """Validate ``params`` (bad or unknown keys raise ConfigError) and build the teacher."""
        where = f"parameters of teacher {cls.name!r} ([teacher] params in alloop.toml)"
        return cls(parse_params(ClipZeroShotParams, params, where), context)

    def prompts(self) -> list[list[str]]:
        """The prompts of each label: ``prompts()[c][t]`` is template ``t`` filled for label ``c``."""
        return [[t.replace("{}", name) for t in self.templates] for name in self.class_names]

    def fingerprint(self) -> str:
        """Image encoder fingerprint + a hash of templates, class names and logit scale."""
        payload = json.dumps([self.version, list(self.templates), list(self.class_names), self.params.logit_scale])
        return f"{self.name}-{self.encoder.fingerprint()}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def class_weights(self) -> np.ndarray:
        """Zero-shot class weights ``W`` of shape (n_labels, embed_dim), float32, unit rows."""
        if self._weights is None:
            n_labels, n_templates = len(self.labels), len(self.templates)
            flat = [p for per_label in self.prompts() for p in per_label]
            emb = self.encoder.encode_text(flat, normalize=True).astype(np.float64)
            mean = emb.reshape(n_labels, n_templates, -1).mean(axis=1)
            self._weights = (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)
        return self._weights

    def predict_proba(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Class probabilities of shape (len(samples), n_labels), float32, rows summing to 1.

        Raises
        ------
        SampleDecodeError
            For the first sample (in input order) whose image cannot be read.
        ConfigError
            A sample is not an image, or the CLIP weights cannot be loaded.
        """
        feats, failures = self.context.cache.get(samples, self.encoder, progress)
        for s in samples:
            if s.key in failures:
                raise SampleDecodeError(s.key, failures[s.key])
        if len(samples) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        x = feats.astype(np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        logits = self.params.logit_scale * (x @ self.class_weights().astype(np.float64).T)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba.astype(np.float32)
