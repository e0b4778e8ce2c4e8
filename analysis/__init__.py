"""Fit scaling laws with bootstrap intervals, backtest them, recommend a configuration, and write reports."""

from __future__ import annotations

import importlib

# `backtest` and `recommend` are both submodules and functions: import the functions now, so the package attribute
# is the function (a later `import analysis.backtest` finds the module in sys.modules and leaves it alone).
from analysis.backtest import backtest
from analysis.fitreport import FitReport, load_fit
from analysis.recommend import Recommendation, recommend

_EXPORTS = {
    "load_runs": "analysis.data",
    "fit_power_law": "analysis.powerlaw",
    "fit_saturating": "analysis.powerlaw",
    "fit_isoflop": "analysis.isoflop",
    "fit_envelope": "analysis.envelope",
    "fit_parametric": "analysis.parametric",
    "fit_hyperparams": "analysis.hyperparams",
    "fit_all": "analysis.report",
    "write_report": "analysis.report",
}

__all__ = [
    "FitReport",
    "Recommendation",
    "backtest",
    "fit_all",
    "fit_envelope",
    "fit_hyperparams",
    "fit_isoflop",
    "fit_parametric",
    "fit_power_law",
    "fit_saturating",
    "load_fit",
    "load_runs",
    "recommend",
    "write_report",
]


def __getattr__(name: str):
    """Import on first use, so `import analysis` stays cheap and a half-written module breaks only its own names."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
