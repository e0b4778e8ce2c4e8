"""Models, exact parameter/FLOP accounting, offline data, and the trainer for one run."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelConfig": "scaling.config",
    "ConfigError": "scaling.errors",
    "build_model": "scaling.model",
    "CONVENTIONS": "scaling.accounting",
    "all_flops_per_token": "scaling.accounting",
    "count_params": "scaling.accounting",
    "flops_per_token": "scaling.accounting",
    "params_for_shape": "scaling.ladder",
    "shape_for_params": "scaling.ladder",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Import on first use, so `import scaling` stays cheap and submodules import independently."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scaling' has no attribute {name!r}")
