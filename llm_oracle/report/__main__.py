"""`python -m llm_oracle.report ARGS` = `llm-oracle report ARGS`."""

import sys

from llm_oracle.report.cli import main

sys.exit(main())
