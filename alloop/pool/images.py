"""Folder-of-images pool source.

:func:`scan_folder` walks a folder (recursively, in sorted order), fully decodes every image
file with Pillow and returns the readable images as :class:`~alloop.pool.base.PoolItem` and the
unreadable ones as :class:`~alloop.pool.base.QuarantinedItem` with the reason. It never touches
the database and never fails because of one bad file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from alloop.config import FolderSource
from alloop.errors import PoolImportError, format_list
from alloop.pool.base import PoolItem, QuarantinedItem, ScanResult, sha256_bytes
from alloop.progress import NULL_PROGRESS, Progress

logger = logging.getLogger(__name__)

__all__ = ["decode_error", "list_image_files", "scan_folder"]


def _normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    """Lower-case the extensions and make sure each starts with a dot (``"PNG"`` -> ``".png"``)."""
    out = []
    for ext in extensions:
        ext = ext.strip().lower()
        if ext and not ext.startswith("."):
            ext = "." + ext
        if ext:
            out.append(ext)
    return tuple(dict.fromkeys(out))


def list_image_files(root: Path, extensions: Sequence[str]) -> tuple[list[PurePosixPath], list[str]]:
    """The image files under ``root``, as sorted POSIX paths relative to ``root``.

    Hidden files and folders (name starting with ``"."``, e.g. ``.ipynb_checkpoints`` or macOS
    ``._x.png`` resource forks) are skipped. Symbolic links to folders are not followed.

    Returns
    -------
    files : list of PurePosixPath
        Relative paths whose suffix is one of ``extensions`` (case-insensitive), sorted.
    other_suffixes : list of str
        Sorted distinct suffixes of the other files seen (for a helpful "empty" error).
    """
    exts = set(_normalise_extensions(extensions))
    files: list[PurePosixPath] = []
    other: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in exts:
                files.append(PurePosixPath((rel_dir / name).as_posix()))
            else:
                other.add(suffix or "(no extension)")
    files.sort(key=str)
    return files, sorted(other)


def decode_error(path: Path) -> str | None:
    """Fully decode the image at ``path``; return ``None`` if it is readable, else the reason.

    The file is checked with ``Image.verify()`` (structure, checksums) and then re-opened and
    decoded with ``Image.load()`` (pixel data), as ``verify`` leaves the image unusable.

    Returns
    -------
    str or None
        ``"<ExceptionClass>: <message>"`` for an unreadable image, ``"empty file (0 bytes)"``
        for a zero-size file, ``None`` for a good image.
    """
    from PIL import Image

    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_root(root: Path) -> None:
    if not root.exists():
        raise PoolImportError(
            f"The image folder {str(root)!r} does not exist. Expected a folder of image files "
            "there; fix `path` in the [pool.source] section of alloop.toml (relative paths are "
            "resolved against the folder of alloop.toml)."
        )
    if not root.is_dir():
        raise PoolImportError(
            f"{str(root)!r} is a file, but a folder of images was expected. Point `path` in "
            "[pool.source] of alloop.toml to the folder that contains the images."
        )


def scan_folder(
    source: FolderSource, work_dir: Path, progress: Progress = NULL_PROGRESS
) -> ScanResult:
    """Scan a folder of images into pool items.

    Parameters
    ----------
    source : FolderSource
        ``path`` (the folder, walked recursively; hidden files and folders are skipped,
        symlinked folders are not followed), ``extensions`` (matched case-insensitively) and
        ``labels_from_subfolders``; ``annotations`` (detection): a COCO file of ground-truth
        boxes, stored as ``data["reference_boxes"]`` (pixels) with the image ``width`` and
        ``height``; its categories become ``label_names``.
    work_dir : Path
        The project's work directory (unused: images are referenced in place).
    progress : Progress
        Reporter; one step per file.

    Returns
    -------
    ScanResult
        Items sorted by key. Key = POSIX path relative to the folder, ``content_hash`` = sha256
        of the file bytes, ``data = {"path": "<absolute path>"}``. With
        ``labels_from_subfolders`` the reference label is the first path component; files
        directly in the folder get no label (``None``) and a warning is logged;
        ``label_names`` is then the sorted set of sub-folder names that hold images.
        Unreadable files are quarantined with ``"<ExceptionClass>: <message>"``.

    Raises
    ------
    PoolImportError
        If the folder is missing, is a file, or holds no file with one of the extensions.
    """
    root = Path(source.path).expanduser().resolve()
    _check_root(root)
    files, other = list_image_files(root, source.extensions)
    if not files:
        exts = ", ".join(_normalise_extensions(source.extensions))
        seen = f" It holds only files ending in: {', '.join(other)}." if other else " It is empty."
        raise PoolImportError(
            f"No image files in {str(root)!r} (looked for {exts}, in all sub-folders).{seen} "
            "Put images there, or change `path` / `extensions` in [pool.source] of alloop.toml."
        )

    truth = _ground_truth(source, {str(f) for f in files})
    result = ScanResult()
    unlabeled: list[str] = []
    labels: set[str] = set()
    with progress.task("Scanning images", total=len(files)) as bar:
        for rel in files:
            key = str(rel)
            path = root.joinpath(*rel.parts)
            data: dict = {"path": str(path)}
            if truth is not None:
                _, boxes, sizes = truth
                if key in sizes:
                    data["width"], data["height"] = sizes[key]
                if key in boxes:
                    data["reference_boxes"] = boxes[key]
            label = None
            if source.labels_from_subfolders:
                if len(rel.parts) > 1:
                    label = rel.parts[0]
                    labels.add(label)
                else:
                    unlabeled.append(key)
            try:
                content = path.read_bytes()
            except OSError as exc:
                reason = f"cannot read file: {type(exc).__name__}: {exc}"
                result.quarantined.append(QuarantinedItem(key, "image", reason, data))
                bar.advance()
                continue
            digest = sha256_bytes(content)
            error = decode_error(path)
            if error is None:
                result.items.append(PoolItem(key, "image", digest, data, label))
            else:
                logger.debug("Quarantined %s: %s", key, error)
                result.quarantined.append(QuarantinedItem(key, "image", error, data, digest))
            bar.advance()

    if unlabeled:
        logger.warning(
            "labels_from_subfolders is set but %d image(s) lie directly in %s and get no "
            "reference label: %s. Move them into a class sub-folder to give them one.",
            len(unlabeled), root, format_list(unlabeled),
        )
    if result.quarantined:
        logger.info(
            "%d of %d image(s) in %s could not be decoded and were quarantined: %s",
            len(result.quarantined), len(files), root,
            format_list(q.key for q in result.quarantined),
        )
    if labels:
        result.label_names = sorted(labels)
    if truth is not None:
        result.label_names = truth[0]
    return result


def _ground_truth(source: FolderSource, keys: set[str]) -> tuple | None:
    """The COCO ground truth named by ``source.annotations`` (detection), checked against the folder."""
    if source.annotations is None:
        return None
    from alloop.detection.truth import read_coco_truth

    truth = read_coco_truth(source.annotations)
    listed = set(truth[1])
    if not listed & keys:
        raise PoolImportError(
            f"None of the {len(listed)} images of {str(source.annotations)!r} is in the folder "
            f"{str(source.path)!r} (e.g. {format_list(sorted(listed)[:3])}; folder keys e.g. "
            f"{format_list(sorted(keys)[:3])}). COCO file_name must be the image path relative to the folder."
        )
    absent = sorted(listed - keys)
    if absent:
        logger.warning("%d image(s) of %s are not in the folder and are ignored: %s",
                       len(absent), source.annotations, format_list(absent))
    return truth
