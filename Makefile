# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# pip takes torch from PyPI by default. For the small CPU-only build elsewhere, run e.g.
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
BIN := $(VENV)/bin
# Without it, torch's OpenMP threads spin and a busy neighbour makes everything 5-15x slower.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The demo recipe end to end (<= 15 min on 2 cores); --resume: a second `make demo` reuses
# finished stages instead of refusing the existing folder.
demo: venv
	$(BIN)/modnet-prune pipeline --recipe recipes/demo.yaml --out runs/demo --resume

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
