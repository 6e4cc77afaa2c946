"""A bench program's module, for the tests of its helpers: ``bench/`` is a folder of
scripts, not a package, so it is put on the path just for the import."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def import_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` imported (the modules it imports beside it found too)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
