"""Real data sets for the benchmarks (import-free; each module loads its own dependencies).

Import as ``benchmarks.data.fmnist_features`` from the repository root (pytest and the scripts put
the root on ``sys.path``). The raw data sets themselves are read by :mod:`alloop.datasets`
(Fashion-MNIST: :mod:`alloop.datasets.fashion_mnist`).
"""
