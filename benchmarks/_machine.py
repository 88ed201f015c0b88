"""The machine a benchmark ran on, and the code it ran, recorded next to its figures.

Every script under ``benchmarks/`` that writes results stores :func:`machine_info` in them (under
``"machine"`` or ``"meta" -> "machine"``). Its provenance fields say which code produced them:

* ``git_commit``: the full hash of HEAD when the run started;
* ``dirty``: whether tracked files differed from that commit (``git status --porcelain``), and
  ``dirty_files``: which ones (empty when clean). A dirty run cannot be reproduced from its
  commit: run benchmarks from a clean, committed tree;
* ``script``: the script that ran, relative to the repository root.

``tests/unit/test_benchmark_provenance.py`` checks the committed results against them.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["REPO", "git_provenance", "machine_info", "now", "provenance_note"]

REPO = Path(__file__).resolve().parent.parent


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True, cwd=REPO).stdout


def git_provenance(script: str | Path) -> dict:
    """``git_commit`` (full hash of HEAD), ``dirty`` and ``dirty_files`` (tracked files that
    differ from it), and ``script`` (``script``'s path relative to the repository root).

    Without git or outside a repository the commit and dirty flags are None and ``git_error``
    says why. A dirty tree is reported on stderr: its results will not pass the provenance test.
    """
    path = Path(script).resolve()
    try:
        rel = path.relative_to(REPO).as_posix()
    except ValueError:
        raise ValueError(f"expected a script inside the repository {REPO}; got {path}.") from None
    try:
        head = _git("rev-parse", "HEAD").strip()
        status = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", None) or str(e)
        return {"git_commit": None, "dirty": None, "dirty_files": None, "script": rel,
                "git_error": err.strip()}
    files = sorted(line[3:] for line in status.splitlines() if line.strip())
    if files:
        print(f"warning: {rel} runs on a tree with uncommitted changes to {', '.join(files)}; its "
              f"results will name commit {head[:12]} but not be reproducible from it. Commit first.",
              file=sys.stderr)
    return {"git_commit": head, "dirty": bool(files), "dirty_files": files, "script": rel}


def provenance_note(info: dict) -> str:
    """One line for a results page: ``git <commit>`` plus the uncommitted files, if any."""
    if not info.get("git_commit"):
        return f"git n/a ({info.get('git_error', 'not recorded')})"
    if "dirty" not in info:  # an older record
        return f"git {info['git_commit'][:12]}, clean or not: not recorded"
    if info["dirty"]:
        return f"git {info['git_commit'][:12]} + uncommitted changes to {', '.join(info['dirty_files'])}"
    return f"git {info['git_commit'][:12]}, clean"


def machine_info(script: str | Path) -> dict:
    """CPU model, cores, RAM, BLAS libraries (numpy's, and faiss's if loaded), versions, date,
    load average, and the provenance of ``script`` (the caller's ``__file__``; see
    :func:`git_provenance`)."""
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    blas = []
    for lib in threadpool_info():
        b = {k: v for k, v in lib.items() if k in ("user_api", "internal_api", "version", "num_threads",
                                                  "architecture", "threading_layer")}
        b["owner"] = "faiss" if "faiss" in lib.get("filepath", "") else "numpy"
        blas.append(b)
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(), "numpy": np.__version__, "blas": blas,
        "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
        "platform": platform.platform(), "date": now(), **git_provenance(script),
        "loadavg_start": os.getloadavg(),
    }
