"""Sweeps: grid design from a TOML spec, the results store, launching (local / SLURM), and loading results."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SweepSpec": "sweeps.spec",
    "load_spec": "sweeps.spec",
    "validate_resources": "sweeps.spec",
    "PlannedRun": "sweeps.grid",
    "design": "sweeps.grid",
    "plan": "sweeps.grid",
    "Store": "sweeps.store",
    "load_results": "sweeps.results",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Import on first use, so `import sweeps` stays cheap (no pandas, no torch)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
