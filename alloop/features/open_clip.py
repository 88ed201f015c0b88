"""The ``open_clip`` encoder: CLIP image embeddings (and text embeddings, for zero-shot teachers).

Weights come from a hub tag (``pretrained = "openai"``, ``"laion2b_s34b_b79k"``; downloaded and
cached by open_clip / huggingface_hub) or from a local checkpoint file
(``pretrained = "/path/to/model.pt"``, e.g. saved with ``torch.save(model.state_dict(), path)``).
Custom architectures are brought as an open_clip model config JSON (``model_config``), registered
with ``open_clip.add_model_config``; open_clip names such a model by the file's stem.

The fingerprint (the feature cache's key) follows the weights: the sha256 of a local checkpoint's
bytes, or the model name + tag + open_clip version for a hub tag; plus the model config file's
content and ``normalize``. Batch size and device are left out: they do not change the embeddings
(beyond float rounding), so an encoder and a teacher using the same CLIP share cached features.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from alloop.errors import ConfigError, format_list
from alloop.features._io import file_sha256, read_rgb
from alloop.features.base import EncoderParams, check_kinds
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef

__all__ = ["OpenClipImageEncoder", "file_sha256"]

logger = logging.getLogger(__name__)

_SCHEMAS = ("hf-hub:", "local-dir:")
_COMMON_MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "convnext_base_w", "ViT-SO400M-14-SigLIP")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_SAVE_HINT = (
    'Give a local checkpoint instead: `pretrained = "/path/to/file.pt"` in the encoder/teacher '
    "params (save one where the weights are at hand with `torch.save(model.state_dict(), path)`; "
    "the model must be created with the same open_clip model name/config)."
)
_LOAD_ERRORS = (RuntimeError, ValueError, OSError, EOFError, KeyError, pickle.UnpicklingError)
class OpenClipImageEncoder(EncoderParams):
    """L2-normalized CLIP image embeddings from open_clip.

    Images are decoded with Pillow (turned upright from EXIF, converted to RGB) and go through
    the model's *eval* preprocessing (resize, centre crop, normalize). The model is loaded on the
    first call and kept by the instance.

    Parameters
    ----------
    model : str, default "ViT-B-32"
        open_clip model name (``open_clip.list_models()``), a ``hf-hub:org/repo`` or
        ``local-dir:/folder`` identifier, or the stem of ``model_config``.
    pretrained : str or None, default "openai"
        A pretrained tag of that model, or the path of a local checkpoint file. None only with
        ``hf-hub:``/``local-dir:`` models (which carry their weights). Tags trained with
        QuickGELU (``"openai"``) get it even when ``model`` lacks the ``-quickgelu`` suffix.
    model_config : Path or None
        An open_clip model config JSON (keys ``embed_dim``, ``vision_cfg``, ``text_cfg``) named
        ``<model>.json``, registered before the model is created.
    batch_size : int, default 64
        Images per forward pass.
    device : str, default "cpu"
        torch device, e.g. ``"cuda"``.
    normalize : bool, default True
        L2-normalize the embeddings (the CLIP convention).
    """

    name: ClassVar[str] = "open_clip"
    version: ClassVar[str] = "1"

    model: str = Field(default="ViT-B-32", min_length=1)
    pretrained: str | None = "openai"
    config_file: Path | None = Field(default=None, alias="model_config")
    batch_size: int = Field(default=64, ge=1)
    device: str = "cpu"
    normalize: bool = True

    _source: tuple[str, str, str] | None = PrivateAttr(default=None)
    _loaded: tuple[Any, Any] | None = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_pretrained(self) -> OpenClipImageEncoder:
        if self.pretrained is None and not self.model.startswith(_SCHEMAS):
            raise ValueError(
                f"pretrained is None, so {self.model!r} would get random weights; give a pretrained "
                "tag (e.g. 'openai') or a checkpoint path"
            )
        return self

    # -- weights ------------------------------------------------------------------------------
    def _register_config(self) -> str:
        """Register ``model_config`` with open_clip; return a hash of its content."""
        import open_clip

        path = Path(self.config_file).expanduser()  # type: ignore[arg-type]
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"Cannot read the open_clip model config {str(path)!r} ({type(exc).__name__}: {exc}). "
                "model_config must be an existing JSON file."
            ) from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if not isinstance(cfg, dict) or k not in cfg]
        if missing:
            raise ConfigError(
                f"The open_clip model config {str(path)!r} lacks {', '.join(missing)}; expected an "
                "open_clip config like open_clip/model_configs/ViT-B-32.json."
            )
        if path.stem != self.model:
            raise ConfigError(
                f"open_clip names a model config by its file name: {path.name!r} defines model "
                f"{path.stem!r}, but model = {self.model!r}. Set model = {path.stem!r} or rename the file "
                f"to '{self.model}.json'."
            )
        if open_clip.get_model_config(self.model) != cfg:
            open_clip.add_model_config(path)
        return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()

    def _resolve(self) -> tuple[str, str, str]:
        """(kind, value, config hash): kind "tag" (clean tag), "file" (path) or "schema"."""
        if self._source is not None:
            return self._source
        import open_clip

        config_hash = self._register_config() if self.config_file is not None else ""
        if self.model.startswith(_SCHEMAS):
            self._source = ("schema", "", config_hash)
            return self._source
        if open_clip.get_model_config(self.model) is None:
            models = open_clip.list_models()
            lower = {m.lower(): m for m in models}
            close = [lower[m] for m in difflib.get_close_matches(self.model.lower(), list(lower), n=1)]
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown open_clip model {self.model!r}.{hint} Known models include "
                f"{format_list([m for m in _COMMON_MODELS if m in models], limit=6)} ({len(models)} in all: "
                "`open_clip.list_models()`). For a custom architecture give its open_clip config JSON "
                "as model_config."
            )
        tag = str(self.pretrained)
        if open_clip.get_pretrained_cfg(self.model, tag):
            self._source = ("tag", tag.lower().replace("-", "_"), config_hash)
        elif Path(tag).expanduser().is_file():
            self._source = ("file", str(Path(tag).expanduser().resolve()), config_hash)
        elif os.sep in tag or "/" in tag or tag.endswith(_CHECKPOINT_SUFFIXES):
            raise ConfigError(f"No checkpoint file at pretrained = {tag!r}. Check the path.")
        else:
            tags = open_clip.list_pretrained_tags_by_model(self.model)
            raise ConfigError(
                f"pretrained = {tag!r} is neither a pretrained tag of {self.model!r} (known tags: "
                f"{format_list(tags, limit=8) if tags else 'none'}) nor an existing file. {_SAVE_HINT}"
            )
        return self._source

    def fingerprint(self) -> str:
        """``open_clip-v<version>-<12 hex>``; changes with the weights, model config and ``normalize``."""
        import open_clip

        kind, value, config_hash = self._resolve()
        if kind == "file":
            weights = f"sha256={file_sha256(Path(value))}"
        elif kind == "tag":
            weights = f"tag={value};open_clip={open_clip.__version__}"
        elif self.model.startswith("local-dir:"):
            folder = Path(self.model[len("local-dir:"):]).expanduser()
            files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            weights = "local-dir=" + ",".join(f"{p.name}:{file_sha256(p)}" for p in files)
        else:
            weights = f"open_clip={open_clip.__version__}"
        payload = json.dumps([self.model, weights, config_hash, self.normalize])
        return f"{self.name}-v{self.version}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def load(self) -> tuple[Any, Any]:
        """The model (eval mode, on ``device``) and its eval preprocess transform; loaded once."""
        if self._loaded is not None:
            return self._loaded
        import open_clip
        import torch

        kind, value, _ = self._resolve()
        if self.config_file is not None:  # another config of the same name may be registered since
            self._register_config()
        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(
                f"device = {self.device!r} is not a torch device ({exc}); use e.g. 'cpu' or 'cuda'."
            ) from None
        extra: dict[str, Any] = {}
        if kind == "tag":
            tag_cfg = open_clip.get_pretrained_cfg(self.model, value)
            try:
                fetched = open_clip.download_pretrained(tag_cfg)
            except (OSError, RuntimeError, ValueError) as exc:  # hub errors arrive as FileNotFoundError
                raise ConfigError(
                    f"The weights of open_clip model {self.model!r} with pretrained tag {value!r} could "
                    f"not be fetched ({type(exc).__name__}: {exc}). {_SAVE_HINT} Without network, set "
                    "HF_HUB_OFFLINE=1 to skip the download retries."
                ) from exc
            if not fetched:
                raise ConfigError(f"open_clip has no download for {self.model!r}/{value!r}. {_SAVE_HINT}")
            # weights trained with QuickGELU (e.g. OpenAI's) need it in the model; open_clip only warns
            if tag_cfg.get("quick_gelu") and not open_clip.get_model_config(self.model).get("quick_gelu"):
                extra["force_quick_gelu"] = True
        pretrained = None if kind == "schema" else (value if kind == "file" else self.pretrained)
        logger.info("Loading open_clip model %s (pretrained=%s) on %s", self.model, pretrained, device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model, pretrained=pretrained, device=device, **extra
            )
        except _LOAD_ERRORS as exc:
            raise ConfigError(
                f"Cannot load open_clip model {self.model!r} with pretrained = {pretrained!r} "
                f"({type(exc).__name__}: {exc}). A checkpoint must be a state dict of that exact "
                "architecture (model name / model_config)."
            ) from exc
        self._loaded = (model.eval(), preprocess)
        return self._loaded

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Return image embeddings of shape (len(samples), embed_dim), float32.

        Raises
        ------
        ConfigError
            A sample is not an image, or the model/weights cannot be loaded.
        SampleDecodeError
            An image cannot be read; names the sample key and the reason.
        """
        import torch

        check_kinds(samples, "image", self.name)
        model, preprocess = self.load()
        device = next(model.parameters()).device
        rows: list[np.ndarray] = []
        with progress.task(f"Encoding images (open_clip {self.model})", total=len(samples)) as bar:
            for start in range(0, len(samples), self.batch_size):
                batch = samples[start : start + self.batch_size]
                pixels = torch.stack([preprocess(read_rgb(s)) for s in batch]).to(device)
                with torch.inference_mode():
                    feats = model.encode_image(pixels).float()
                    if self.normalize:
                        feats = torch.nn.functional.normalize(feats, dim=-1)
                rows.append(feats.cpu().numpy())
                bar.advance(len(batch))
        if not rows:
            return np.zeros((0, getattr(model.visual, "output_dim", 0)), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Text embeddings of shape (len(texts), embed_dim), float32, L2-normalized by default.

        Uses ``open_clip.get_tokenizer(model)``; texts longer than the context are truncated.
        """
        import open_clip
        import torch

        model, _ = self.load()
        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self.model)
        device = next(model.parameters()).device
        rows = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(list(texts[start : start + self.batch_size])).to(device)
            with torch.inference_mode():
                feats = model.encode_text(tokens).float()
                if normalize:
                    feats = torch.nn.functional.normalize(feats, dim=-1)
            rows.append(feats.cpu().numpy())
        if not rows:
            return np.zeros((0, getattr(model.visual, "output_dim", 0)), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
