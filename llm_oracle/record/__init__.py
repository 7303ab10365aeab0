"""`llm-oracle record`: a backtest that asks the source backend on every journal miss.

- `command`: the command itself (config merge, estimate, one progress bar, exit codes)
- `child`: freqtrade in its own process group, signals forwarded, never outliving `record`
- `link`: the child's side (inside the oracle): progress events out, the parent's lifeline in
- `emulator`: the offline Bybit emulator the offline overlay points at, started when needed
Kept import-light: the oracle imports `link` in every process.
"""
