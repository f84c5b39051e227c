# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# pip takes torch from PyPI by default. For the small CPU-only build elsewhere, run e.g.
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
BIN := $(VENV)/bin
# onnxruntime-web for `modnet-prune web`, pinned by its package-lock.json; npm ci puts it here
WEB_STATIC := src/modnet_prune/deploy/web_static
ORT_WEB := $(WEB_STATIC)/node_modules/.package-lock.json
# Without it, torch's OpenMP threads spin and a busy neighbour makes everything 5-15x slower.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test venv clean

venv: $(VENV)/.installed $(ORT_WEB)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# Without npm only the browser page is missing (`make demo` still runs; `web` and its tests say why).
$(ORT_WEB): $(WEB_STATIC)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(WEB_STATIC) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: skipping onnxruntime-web (needed by modnet-prune web and tests/test_web.py)"; fi

# The demo recipe end to end (<= 15 min on 2 cores); --resume: a second `make demo` reuses
# finished stages instead of refusing the existing folder.
demo: venv
	$(BIN)/modnet-prune pipeline --recipe recipes/demo.yaml --out runs/demo --resume

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info $(WEB_STATIC)/node_modules
