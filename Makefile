# Every target works on a fresh clone by itself: each depends on what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CORPUS := data/shakespeare.txt
DEMO := runs/demo

.PHONY: install data demo test lint bench bench-quality clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sweep]'
	touch $@

data: $(CORPUS)

$(CORPUS): | $(INSTALLED)
	$(BIN)/python data/fetch_shakespeare.py $@

demo: install data
	$(BIN)/rnn train $(CORPUS) --config configs/demo.yaml --out $(DEMO) --force
	$(BIN)/rnn eval $(DEMO)/best.npz --split test
	$(BIN)/rnn sample $(DEMO)/best.npz --length 400 --temperature 0.5 --prime "ROMEO:" --seed 1
	$(BIN)/rnn sample $(DEMO)/best.npz --length 400 --temperature 1.0 --prime "ROMEO:" --seed 1

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check rnncli tests data
	$(BIN)/ruff format --check rnncli tests data

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m tests.bench.run_bench --markdown docs/benchmarks.md

bench-quality: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m tests.bench.quality --markdown docs/benchmarks.md

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
