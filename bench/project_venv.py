"""Every bench script runs under the project's ``.venv``, with ``bench/`` and the repository importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def enter(script: str) -> None:
    """Re-execute ``script`` under ``.venv/bin/python`` unless already there; then fix ``sys.path``."""
    python = ROOT / ".venv" / "bin" / "python"
    if sys.prefix != str(ROOT / ".venv") and python.exists():
        os.execv(python, [str(python), script, *sys.argv[1:]])
    sys.path[:0] = [str(HERE), str(ROOT)]
