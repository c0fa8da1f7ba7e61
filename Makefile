# vislab: `make demo` sets everything up and runs the main job; `make test` runs the tests.
# Both create .venv and install vislab with pinned torch/torchvision (constraints.txt) when needed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN    ?= runs/fashion-mnist-fast

.PHONY: setup data test-deps demo test test-cpus test-all bench clean docs docs-serve

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,pretrained,hf,deploy,docs]"
	touch $(STAMP)

# The editable install leaves vislab's own modules uncompiled; where PYTHONDONTWRITEBYTECODE is set (containers,
# CI) every command would compile them again (0.2-0.4 s a run, parent and helper). Only changed files recompile.
setup: $(STAMP)
	@$(BIN)/python -m compileall -q src/vislab >/dev/null

# Fashion-MNIST from Debian's package where apt exists; otherwise vislab downloads it on first use.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
		|| echo "apt-get could not install dataset-fashion-mnist; vislab will try to download Fashion-MNIST"; \
	fi

# The main job: train the fast recipe on Fashion-MNIST, evaluate on the 10k test images, report.
demo: setup data
	rm -rf $(RUN)
	$(BIN)/vislab train --data fashion-mnist --recipe fast --out $(RUN)
	@echo "run folder: $(RUN)  (open $(RUN)/report.html)"

# What the tests need beyond Python packages, where apt exists (as .ci/run does): headless Chromium
# for the report's browser tests, which skip themselves without it.
test-deps:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null \
		|| echo "apt-get could not install chromium; the three browser tests will skip"; \
	fi

# One pytest-xdist worker per core (at most 4), each on one torch thread (tests/conftest.py); a test file's
# tests stay on one worker, sharing its module fixtures. TEST_WORKERS=0 runs them in this process, in order.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))" 2>/dev/null || echo 2)
test: setup data test-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The speed-choice tests and the examples' smoke runs under each CPU class this machine can emulate:
# as it is, AVX-512 without BF16 (oneDNN limited), and AVX2 only (oneDNN and ATen limited). One choice
# cache for all three, as a user who changes nothing has. Minutes; CI runs `make test`.
CPU_TESTS := tests/test_measure.py tests/test_speed_paths.py tests/test_examples.py src/vislab
test-cpus: setup data test-deps
	$(BIN)/python -m pytest -q $(CPU_TESTS)
	ONEDNN_MAX_CPU_ISA=AVX512_CORE $(BIN)/python -m pytest -q $(CPU_TESTS)
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q $(CPU_TESTS)

# Including the slow checks (minutes).
test-all: setup data test-deps
	$(BIN)/python -m pytest -q -m "slow or not slow"

# The documentation site (mkdocs-material, offline: no web fonts or CDN scripts) into site/; the command-line
# reference is generated from the parsers at build time (docs/_hooks/cli_reference.py).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The same, served with live reload on this machine only.
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

clean:
	rm -rf $(VENV) runs .pytest_cache site
