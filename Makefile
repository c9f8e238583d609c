# geoseg: `make demo` sets up and runs the main job on the sample data; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.geoseg-installed

.PHONY: install demo test lint docs figures clean

# Python writes the bytecode of what the targets import (see the install step)
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing geoseg and its dependencies into $(VENV) (log: $(VENV)/pip.log) ..."
	@# --no-compile: Python compiles only the modules it imports, when first imported (135 s instead of 220 s
	@# for this install on a 2-core machine: torch's CUDA build alone unpacks several GB)
	@$(BIN)/python -m pip install --no-compile -e '.[dev]' > $(VENV)/pip.log 2>&1 || (tail -n 40 $(VENV)/pip.log; exit 1)
	@# ... which needs Python to write the bytecode it compiles: where PYTHONDONTWRITEBYTECODE is set, every
	@# process would compile torch, timm and torchvision's imports again (import 3.4 s and model 8.4 s instead
	@# of 1.9 s and 3.8 s before the first chip); so the modules geoseg imports are compiled once, here
	@# (the unexport above lets this write them)
	@# (every geoseg module, and the libraries its functions import when they run)
	@$(BIN)/python -c "import importlib, pkgutil, geoseg; \
	  [importlib.import_module(m.name) for m in pkgutil.walk_packages(geoseg.__path__, 'geoseg.') \
	   if not m.name.endswith('__main__')]; \
	  import segmentation_models_pytorch, onnxruntime, onnx, sklearn.ensemble, dask.distributed, wandb"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/geoseg train --config pipelines/sample.yaml
	@mkdir -p outputs
	$(BIN)/geoseg predict sample_data/test_1.tif -o outputs/landcover.gpkg --overwrite
	@echo "held-out scene sample_data/test_1.tif vs its labels:"
	$(BIN)/geoseg evaluate outputs/landcover.tif --truth sample_data/test_1_classes.tif --json outputs/heldout_metrics.json

# The tests in $(TEST_PROCESSES) processes, a test file to each (one pytest keeps about one of 2 cores busy), then
# the timing-sensitive ones (marked serial: a time budget's run) alone on the machine.
TEST_PROCESSES ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -q -m "serial"

lint: $(STAMP)
	$(BIN)/ruff check .

# The documentation site from docs/ into site/ (strict: a broken link, anchor or reference fails the build);
# the reference pages are generated from the code (docs/hooks.py, mkdocs-click, mkdocstrings)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "documentation: site/index.html"

# The README's and the docs' pictures, from the demo's outputs (run make demo first); the QGIS picture needs
# QGIS (/usr/bin/python3 with its python3-qgis)
figures: $(STAMP)
	$(BIN)/python docs/make_figures.py

clean:
	rm -rf runs outputs .pytest_cache site
