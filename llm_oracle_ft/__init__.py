"""Freqtrade-side helpers of `llm_oracle`'s tools: scripts run by Freqtrade's interpreter.

`llm_oracle` never imports Freqtrade; what must (e.g. the report's backtest runner, which drives
Freqtrade's own `Backtesting`) lives here and is run as a subprocess, never imported by it.
"""
