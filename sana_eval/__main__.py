"""`python -m sana_eval …` (also under torchrun): the `sana-eval` command."""
import sys

from sana_eval.cli.main import main

sys.exit(main())
