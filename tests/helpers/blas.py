"""OpenBLAS kernel families this CPU can run, for tests that compare results across them.

numpy's OpenBLAS picks a kernel family (``Haswell``, ``SkylakeX``...) for the CPU when it loads,
unless the environment variable ``OPENBLAS_CORETYPE`` names one; each family sums float32
products in its own order. A test that compares families runs each in a fresh process (the
variable is read once, when numpy loads) and checks, through threadpoolctl, that the family
asked for is the one that ran.
"""

from __future__ import annotations

import platform
from pathlib import Path

# family -> the /proc/cpuinfo flags its kernels need (a family the CPU lacks would crash on an
# illegal instruction); from the most to the least capable
FAMILIES: dict[str, tuple[str, ...]] = {
    "SkylakeX": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
    "Haswell": ("avx2", "fma"),
    "Sandybridge": ("avx",),
    "Nehalem": ("sse4_2",),
    "Prescott": ("pni",),  # SSE3: every x86-64 CPU; OpenBLAS reports these kernels as "Katmai"
}


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def kernel_families(at_least: int = 2) -> list[str]:
    """The OpenBLAS kernel families this CPU can run, most capable first.

    Raises RuntimeError (the test then fails, it does not skip) when fewer than ``at_least``
    are available: these tests are meant for the project's x86-64 machines.
    """
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(
            f"expected an x86-64 CPU (OpenBLAS kernel families {', '.join(FAMILIES)}); got "
            f"{platform.machine()}. Run this test on an x86-64 machine, or add this "
            "architecture's OPENBLAS_CORETYPE names to tests/helpers/blas.py."
        )
    flags = cpu_flags()
    found = [name for name, need in FAMILIES.items() if flags.issuperset(need)]
    if len(found) < at_least:
        raise RuntimeError(
            f"expected at least {at_least} OpenBLAS kernel families this CPU can run; got "
            f"{found} from /proc/cpuinfo flags. Check /proc/cpuinfo, or run on another machine."
        )
    return found
