# Two commands on a fresh machine:  `make demo` (the main job on the built-in default) and `make test`.
# Both create/reuse the virtualenv in $(VENV): torch first (2.13.0 from the local wheel here; elsewhere any
# torch >= 2.4 already importable in the venv is kept), then this package with its extras.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.tardis-installed
REPORT := $(CURDIR)/build-report
CPP_OPTIONS ?=
DLC_VENV ?= .venv-dlc

.PHONY: setup demo test test-dlc test-slow cpp lint clean-venv bench-kernels test-gpu gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch, sys; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 4))" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The stubs' metadata depends on the real TensorRT wheel (NVIDIA's index only): install the stubs alone.
	$(BIN)/python -m pip install --quiet --no-deps "tensorrt-stubs>=10"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m training.full

# pytest, then tests/dlc in the DeepLabCut venv when $(DLC_VENV) exists (scripts/setup_dlc_env.sh makes it), then the
# C/C++ build + ctest (each also after a failure before it), then one summary of what did not run and why; the exit
# status is pytest's, the DeepLabCut tests' and ctest's. CPP_OPTIONS: -D options for scripts/build_cpp.sh (CI
# requires OpenCV).
test: $(STAMP)
	@rm -rf $(REPORT) && mkdir -p $(REPORT)
	@export TARDIS_REPORT_DIR=$(REPORT); \
	$(BIN)/python -m pytest -q --junitxml=$(REPORT)/pytest.xml; pytest_status=$$?; \
	dlc_status=0; \
	if [ -x $(DLC_VENV)/bin/python ]; then $(MAKE) --no-print-directory test-dlc; dlc_status=$$?; \
	else echo "tests/dlc: not run ($(DLC_VENV) missing: bash scripts/setup_dlc_env.sh)"; fi; \
	bash scripts/build_cpp.sh --sanitize $(CPP_OPTIONS); cpp_status=$$?; \
	$(BIN)/python scripts/test_summary.py $(REPORT) --pytest-exit $$pytest_status --cpp-exit $$cpp_status; \
	test $$pytest_status = 0 && test $$dlc_status = 0 && test $$cpp_status = 0

# The tests that call DeepLabCut's own code (tests/dlc), in the DeepLabCut venv; the setup is a no-op when it is current.
test-dlc:
	DLC_VENV=$(DLC_VENV) bash scripts/setup_dlc_env.sh
	env -u TARDIS_REPORT_DIR $(DLC_VENV)/bin/python -m pytest -q tests/dlc

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-venv:
	rm -rf $(VENV)

cpp:
	bash scripts/build_cpp.sh

bench-kernels: $(STAMP)
	$(BIN)/python -m kernels.bench

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

# Every GPU check in one command, at most 8 minutes on one GPU (results under benchmarks/results/); without a GPU it
# prints what it would run.
gpu-check: $(STAMP)
	TARDIS_PYTHON=$(BIN)/python bash scripts/gpu_check.sh
