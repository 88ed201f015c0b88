"""Real data sets for the benchmarks (import-free; each module loads its own dependencies).

Import as ``benchmarks.data.fashion_mnist`` from the repository root (pytest and the scripts put
the root on ``sys.path``).
"""
