# make test: set up .venv (package + dev tools) and run lint + tests.  make demo: set up and run the demo.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Unpinned torch on purpose: pip resolves torch and torchvision (imported by timm) as a working pair.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "import timm, torch, torchvision; timm.create_model('test_resnet', num_classes=0)"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check lscdistill tests benchmarks
	$(BIN)/ruff format --check lscdistill tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/lscdistill demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_nearest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
