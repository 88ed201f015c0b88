"""The machine a benchmark ran on, recorded next to its figures."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["machine_info", "now"]


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict:
    """CPU model, cores, RAM, BLAS libraries (numpy's, and faiss's if loaded), versions, date,
    load average and git commit."""
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
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
        "platform": platform.platform(), "date": now(), "git_commit": commit,
        "loadavg_start": os.getloadavg(),
    }
