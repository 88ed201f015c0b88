# alloop: one-command set-up, demo and tests on a fresh machine.
#   make demo   -> .venv with everything, then a full active-learning session on the bundled digits
#   make test   -> .venv with everything, then the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The torch pair that open_clip and transformers import cleanly with (installed first).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/alloop demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo .pytest_cache
