# Two entry points, both self-installing into .venv: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMULATOR_PORT := 18765
OFFLINE := --config config.json --config user_data/config.offline.json

.PHONY: demo test lint bench clean-results

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Backtest of the shipped real Bybit sample with the oracle in replay mode, offline, no API key;
# 1m detail candles decide the order of stop and target inside each 3m candle.
demo: $(STAMP)
	@mkdir -p user_data/logs
	$(BIN)/python -m bybit_emulator --port $(EMULATOR_PORT) --log user_data/logs/bybit-emulator.jsonl -- \
		$(BIN)/freqtrade backtesting $(OFFLINE) --cache none --enable-protections --export trades \
			--timeframe-detail 1m

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every row of the README's benchmark table (about 25 minutes on 2 cores).
bench: $(STAMP)
	$(BIN)/python bench/replay_overhead.py --runs 7
	$(BIN)/python bench/oracle_live.py
	$(BIN)/python bench/report_sample.py --runs 2
	$(BIN)/python bench/record_cost.py
