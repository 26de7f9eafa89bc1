"""`python -m torch.distributed.run ... tests/dist_worker.py ASSETS ARGS...`: the `sana-eval ARGS...` command with
tiny scoring networks (tests/_tiny_scorers.py) built in ASSETS/<rank>, for the multi-process scoring tests."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from _tiny_scorers import patch_scorers
from sana_eval.cli.main import main

if __name__ == "__main__":
    patch_scorers(Path(sys.argv[1]) / f"rank{os.environ.get('RANK', '0')}")
    sys.exit(main(sys.argv[2:]))
