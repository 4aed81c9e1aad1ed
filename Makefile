# make test: set up .venv (package + dev tools) and run lint + tests.  make demo: set up and run the demo.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench docs install clean

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

# two workers (pytest-xdist), each test file on one of them: a module's shared fixture (a trained run) is made once
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	$(BIN)/lscdistill demo --overwrite  # writes ./lscdistill-demo (report.md, runs, stores, PNGs)

bench: $(STAMP)  # the full suite (make bench BENCH_ARGS=--quick for the short one)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks run $(BENCH_ARGS)

# generated docs: the CLI reference and the recipe field tables (their tests fail when they are stale)
docs: $(STAMP)
	$(BIN)/python -m lscdistill.cli.reference docs/cli.md
	$(BIN)/python -c "from lscdistill.cli.run import update_fields_docs; update_fields_docs('docs/recipes.md')"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
