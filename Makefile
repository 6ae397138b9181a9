# The two commands of the README. Each sets up what it needs in .venv by itself.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench
CHROMIUM := /usr/bin/chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch is pinned in pyproject.toml to the CPU build these machines carry.
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sparsecircuits demo --out runs/demo

# The viewer's browser tests drive Debian's Chromium (playwright cannot download browsers here).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	else echo "note: $(CHROMIUM) is missing: the browser tests skip (sudo apt-get install chromium)"; fi

test: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/ruff check .
	TRITON_INTERPRET=1 $(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/train_throughput.py
	$(VENV)/bin/python benchmarks/kernels_bench.py
