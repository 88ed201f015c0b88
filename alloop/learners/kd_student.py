"""The ActiveKD student: two linear heads on frozen features, distilled from a teacher.

From "PCoreSet: Effective Active Learning through Knowledge Distillation from
Vision-Language Models" (ActiveKD), on frozen image features:

- ``ce_head`` is trained with cross-entropy on the labeled items;
- ``kd_head`` is trained with knowledge distillation on labeled **and** unlabeled items:
  ``KD = T^2 * KL(softmax(t / T) || softmax(s_kd / T))`` with ``T = 2``, where ``t`` are the
  teacher's logits (here ``log p_teacher``: a teacher is a probability source);
- loss = ``ce_weight * CE + kd_weight * (KD_labeled + KD_unlabeled)`` (0.5 and 0.5), AdamW,
  learning rate 1e-3; the student is re-initialized (seeded) every round;
- prediction ``p = (1 - alpha) * softmax(ce) + alpha * softmax(kd / beta)``, ``alpha = 0.5``,
  ``beta = 1``.

The CE head scores only the classes that have training labels (the others' logits are masked
out in training and prediction): a class nobody labeled yet gets its probability from the
teacher alone - 0 without one, as the learner protocol asks.

With ``kd_weight = 0`` and ``alpha = 0`` it is a plain linear classifier (the "without KD"
baseline) and needs no teacher.

With ``dropout > 0`` the heads' inputs are dropped out in training, and the student gives
``mc_samples`` Monte-Carlo dropout members (Gal & Ghahramani 2016) for the committee strategies
(``bald``, ``vote_entropy``): member ``s`` is the student with one seeded mask over the input
features, the same for every item, so an item's members do not depend on which shard scored it.

Project file::

    [learner]
    name = "kd_student"
    params = { temperature = 2.0, alpha = 0.5, epochs = 30 }
    [teacher]
    name = "clip_zeroshot"
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alloop.errors import LearnerError, NotFittedError
from alloop.protocols.context import PluginContext


class KDStudentParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)
    """Weight of the KD head in the prediction mix."""
    beta: float = Field(default=1.0, gt=0)
    """Temperature of the KD head in the prediction mix."""
    ce_weight: float = Field(default=0.5, ge=0)
    kd_weight: float = Field(default=0.5, ge=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    epochs: int = Field(default=30, ge=1)
    """Passes over the pool (unlabeled batches); each step also draws a labeled batch."""
    min_steps: int = Field(default=500, ge=1)
    """At least this many optimizer steps (small pools need more passes to converge)."""
    batch_size: int = Field(default=256, ge=1)
    standardize: bool = True
    """Standardize features with the pool's mean and std (frozen features vary in scale)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the heads' inputs in training; above 0 the student gives MC-dropout members."""
    mc_samples: int = Field(default=20, ge=2)
    """Monte-Carlo dropout members (with ``dropout > 0``): memory ``n x mc_samples x classes``."""


def kd_loss(student_logits: Any, teacher_proba: Any, temperature: float) -> Any:
    """``T^2 * KL(softmax(log p_t / T) || softmax(s / T))``, averaged over the batch.

    Parameters
    ----------
    student_logits : torch.Tensor of shape (n, C)
    teacher_proba : torch.Tensor of shape (n, C)
        Teacher probabilities; their logs serve as teacher logits.
    temperature : float
    """
    import torch

    t = torch.log_softmax(torch.log(teacher_proba.clamp_min(1e-12)) / temperature, dim=1)
    s = torch.log_softmax(student_logits / temperature, dim=1)
    return (temperature**2) * (t.exp() * (t - s)).sum(dim=1).mean()


class KDStudentLearner:
    """Linear CE and KD heads on frozen features (see the module docstring)."""

    name = "kd_student"

    def __init__(self, params: KDStudentParams | None = None) -> None:
        self.params = params or KDStudentParams()
        self.state_: dict[str, Any] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, *,
                    context: PluginContext | None = None) -> KDStudentLearner:
        from alloop.params import parse_params

        return cls(parse_params(KDStudentParams, params, "kd_student learner parameters"))

    @property
    def requires(self) -> frozenset[str]:
        """The pool's features (standardisation, unlabeled batches), and a teacher when it distills."""
        return frozenset({"pool", "teacher"}) if self.distills else frozenset({"pool"})

    @property
    def distills(self) -> bool:
        """Whether the KD head is trained or used (``kd_weight`` or ``alpha`` above 0)."""
        return self.params.kd_weight > 0 or self.params.alpha > 0

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        n_classes: int,
        seed: int,
        X_pool: np.ndarray | None = None,
        teacher_proba: np.ndarray | None = None,
        teacher_pool: np.ndarray | None = None,
    ) -> KDStudentLearner:
        """Train from scratch.

        Parameters
        ----------
        X : ndarray of shape (n_labeled, d)
        y : ndarray of shape (n_labeled,), class indices
        X_pool : ndarray of shape (n_pool, d), the whole pool (labeled items included)
        teacher_proba, teacher_pool : ndarrays of shape (n_labeled, C) and (n_pool, C)
            Teacher probabilities of the labeled rows and of the pool rows.
        """
        import torch

        p = self.params
        if self.distills and (teacher_proba is None or teacher_pool is None or X_pool is None):
            raise LearnerError(
                "kd_student distills from a teacher: configure one in [teacher] (e.g. name = \"clip_zeroshot\"), "
                "or set kd_weight = 0 and alpha = 0 for a plain linear student."
            )
        y = np.asarray(y, dtype=np.int64)
        if len(X) != len(y) or len(y) == 0:
            raise LearnerError(f"kd_student needs labeled rows: got {len(X)} feature rows and {len(y)} labels.")
        X_pool = X if X_pool is None else X_pool
        mean = X_pool.mean(axis=0) if p.standardize else np.zeros(X.shape[1])
        std = X_pool.std(axis=0) + 1e-6 if p.standardize else np.ones(X.shape[1])
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        d = X.shape[1]
        ce_head, kd_head = torch.nn.Linear(d, n_classes), torch.nn.Linear(d, n_classes)
        if y.min() < 0 or y.max() >= n_classes:
            raise LearnerError(f"kd_student: class indices must lie in 0..{n_classes - 1}; got {y.min()}..{y.max()}.")
        unseen = torch.ones(n_classes, dtype=torch.bool)
        unseen[torch.as_tensor(np.unique(y))] = False
        opt = torch.optim.AdamW([*ce_head.parameters(), *kd_head.parameters()], lr=p.lr, weight_decay=p.weight_decay)
        xl = torch.as_tensor((X - mean) / std, dtype=torch.float32)
        yl = torch.as_tensor(y)
        xu = torch.as_tensor((X_pool - mean) / std, dtype=torch.float32)
        tl = torch.as_tensor(teacher_proba, dtype=torch.float32) if teacher_proba is not None else None
        tu = torch.as_tensor(teacher_pool, dtype=torch.float32) if teacher_pool is not None else None

        def drop(x: Any) -> Any:
            if p.dropout == 0:
                return x
            keep = (torch.rand(x.shape, generator=gen) >= p.dropout).to(x.dtype)
            return x * keep / (1 - p.dropout)

        steps_per_epoch = max(1, -(-len(xu) // p.batch_size))
        epochs = max(p.epochs, -(-p.min_steps // steps_per_epoch))
        for _ in range(epochs):
            order = torch.randperm(len(xu), generator=gen)
            for step in range(steps_per_epoch):
                ub = order[step * p.batch_size : (step + 1) * p.batch_size]
                lb = torch.randint(len(xl), (min(p.batch_size, len(xl)),), generator=gen)
                xlb, xub = drop(xl[lb]), drop(xu[ub])
                ce_logits = ce_head(xlb).masked_fill(unseen, float("-inf"))
                loss = p.ce_weight * torch.nn.functional.cross_entropy(ce_logits, yl[lb])
                if p.kd_weight > 0 and tl is not None and tu is not None:
                    kd = (kd_loss(kd_head(xlb), tl[lb], p.temperature)
                          + kd_loss(kd_head(xub), tu[ub], p.temperature))
                    loss = loss + p.kd_weight * kd
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.state_ = {
            "ce": {k: v.detach().clone() for k, v in ce_head.state_dict().items()},
            "kd": {k: v.detach().clone() for k, v in kd_head.state_dict().items()},
            "mean": mean.astype(np.float32),
            "std": std.astype(np.float32),
            "n_classes": n_classes,
            "unseen": unseen.clone(),
            "params": p.model_dump(),
            "seed": int(seed),
        }
        return self

    def _mix(self, x: Any) -> Any:
        """The prediction of standardised rows ``x`` (a tensor)."""
        import torch

        st, p = self.state_, self.params
        assert st is not None
        ce = torch.nn.functional.linear(x, st["ce"]["weight"], st["ce"]["bias"])
        if "unseen" in st:  # models saved before the mask score every class
            ce = ce.masked_fill(st["unseen"], float("-inf"))
        kd = torch.nn.functional.linear(x, st["kd"]["weight"], st["kd"]["bias"])
        return (1 - p.alpha) * torch.softmax(ce, dim=1) + p.alpha * torch.softmax(kd / p.beta, dim=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(1 - alpha) * softmax(ce) + alpha * softmax(kd / beta)``, shape (n, C)."""
        import torch

        if self.state_ is None:
            raise NotFittedError("kd_student.predict_proba called before fit.")
        st = self.state_
        x = torch.as_tensor((X - st["mean"]) / st["std"], dtype=torch.float32)
        with torch.inference_mode():
            out = self._mix(x)
        return out.numpy().astype(np.float64)

    @property
    def gives_members(self) -> bool:
        """:meth:`member_proba` answers when the student was trained with dropout."""
        return self.params.dropout > 0

    def member_proba(self, X: np.ndarray) -> np.ndarray:
        """Monte-Carlo dropout members, shape (n, mc_samples, C): member ``s`` masks the input
        features with the ``s``-th mask drawn from the fit's seed (kept units scaled by
        ``1 / (1 - dropout)``), the same mask for every row."""
        import torch

        if self.state_ is None:
            raise NotFittedError("kd_student.member_proba called before fit.")
        p, st = self.params, self.state_
        if p.dropout == 0:
            raise LearnerError("kd_student gives Monte-Carlo dropout members only when trained with dropout > 0; "
                               "set [learner] params.dropout (e.g. 0.2).")
        x = torch.as_tensor((X - st["mean"]) / st["std"], dtype=torch.float32)
        gen = torch.Generator().manual_seed(int(st.get("seed", 0)) + 1)
        masks = (torch.rand((p.mc_samples, x.shape[1]), generator=gen) >= p.dropout).to(x.dtype) / (1 - p.dropout)
        out = np.empty((x.shape[0], p.mc_samples, st["n_classes"]), np.float64)
        with torch.inference_mode():
            for s in range(p.mc_samples):
                out[:, s] = self._mix(x * masks[s]).numpy()
        return out

    def embed(self, X: np.ndarray) -> np.ndarray | None:
        return None  # the heads sit on the frozen features: those are the student's features

    #: :meth:`penultimate` answers
    gives_penultimate = True

    def penultimate(self, X: np.ndarray) -> np.ndarray:
        """The input of the heads: the features standardised as in training."""
        if self.state_ is None:
            raise NotFittedError("kd_student.penultimate called before fit.")
        st = self.state_
        return np.asarray((X - st["mean"]) / st["std"], dtype=np.float64)

    def save(self, file: BinaryIO) -> None:
        import torch

        torch.save(self.state_, file)

    @classmethod
    def load(cls, path: Path, params: dict[str, Any] | None = None) -> KDStudentLearner:
        import torch

        obj = cls.from_params(params)
        obj.state_ = torch.load(io.BytesIO(Path(path).read_bytes()), weights_only=False)
        return obj
