"""`llm-oracle report`: is the oracle worth its cost?

The same data and money rules are backtested with real Freqtrade under several variants of the
recorded decisions (pre-filter alone, the oracle, placebo seeds, the oracle inverted), every
candidate is valued by the trade it would have been (the veto ledger, evaluation only), and the
API bill, the models' knowledge cutoffs and weekly stability are weighed into one verdict.
This package never imports Freqtrade: `llm_oracle_ft/report_runner.py` is a script run by
Freqtrade's interpreter in a subprocess.
"""
