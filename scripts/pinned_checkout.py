"""The one check the golden-data makers share: the reference checkout is at the commit the data is pinned to."""
from __future__ import annotations

import subprocess
from pathlib import Path


def pin_error(checkout: Path, commit: str) -> str | None:
    """Why `checkout` cannot be used (its HEAD is not `commit`), or None when it can."""
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    found = head.stdout.strip()
    return None if found == commit else f"{checkout}: HEAD is {found or '?'}, expected {commit}"
