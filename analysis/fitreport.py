"""The typed fit report (`FitReport`) and fit.json: writing it (`to_dict`), reading it back (`from_dict`, `load_fit`).

fit.json members: `schema_version` (analysis.result.SCHEMA_VERSION), `meta` (the runs and how they were counted),
one member per fitted law (`isoflop`, `loss_vs_compute`, `parametric`, `envelope`, `hyperparams`: each its result's
`to_dict()`), `backtest` and `convention_sensitivity` when computed. Everything read back is validated: a malformed
file raises `ConfigError` naming the file and the member, never a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.backtest import BacktestResult
from analysis.data import PARAM_COUNTS
from analysis.result import SCHEMA_VERSION, FitResult, Interval, json_safe
from scaling.errors import ConfigError

LAW_KINDS = {  # fit.json member -> the `kind` of its result class (FitResult.from_dict dispatches on it)
    "isoflop": "isoflop", "loss_vs_compute": "saturating", "parametric": "parametric", "envelope": "envelope",
    "hyperparams": "hyperparams"}
LAWS = tuple(LAW_KINDS)
UNSPECIFIED_COUNT = "unspecified"  # meta.parameter_count of a table that did not declare what N counts
PARAMETER_COUNTS = (*PARAM_COUNTS, UNSPECIFIED_COUNT)  # what meta.parameter_count may say


@dataclass(eq=False)
class FitReport:
    """Everything fitted from one set of runs: `fits` maps a law name (LAWS) to its typed result."""

    meta: dict
    fits: dict[str, FitResult] = field(default_factory=dict)
    backtest: BacktestResult | None = None
    convention_sensitivity: pd.DataFrame | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # law -> why it was not fitted
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        """The data, then every law's summary (intervals with n_ok/n_total, UNRELIABLE marks), backtest, skips."""
        m = self.meta
        lines = [(f"{m['n_runs']} runs ({m['n_excluded']} excluded), {len(m['budgets'])} budgets "
                 f"{min(m['budgets']):.4g}..{m['max_budget']:.4g} FLOPs ({m['flop_convention']}, k = {m['k']:.4g}; "
                 f"N counts {m['parameter_count']} params)")]
        lines += [fit.summary() for fit in self.fits.values()]
        unreliable = self.unreliable()
        if unreliable:
            lines.append("UNRELIABLE quantities (see the recommendation for the fallback used):")
            lines += [f"  {name}: UNRELIABLE: {why}" for name, why in unreliable.items()]
        if self.backtest is not None:
            lines.append(self.backtest.summary())
        if self.convention_sensitivity is not None:
            table = self.convention_sensitivity
            shown = table.drop(columns=[c for c in ("a_lo", "a_hi", "a_n_ok", "a_n_total", "a_reason") if c in table])
            if "a_reason" in table:
                shown.insert(shown.columns.get_loc("a") + 1, "a 95% interval",
                             [sensitivity_interval(r).describe() for r in table.to_dict("records")])
            lines.append("convention sensitivity (approach 2 refit per FLOP/parameter convention):")
            lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        lines += [f"skipped {law}: {why}" for law, why in self.skipped.items()]
        return "\n".join(lines)

    def unreliable(self) -> dict[str, str]:
        """'law.quantity' -> reason for every quantity a fit marked unreliable (law members included)."""
        out = {}
        for law, fit in self.fits.items():
            out.update({f"{law}.{name}": why for name, why in fit.unreliable.items()})
            for member in ("N_opt", "D_opt", "L_opt", "lr_opt", "batch_opt", "power_law"):
                sub = getattr(fit, member, None)
                if isinstance(sub, FitResult):
                    out.update({f"{law}.{member}.{name}": why for name, why in sub.unreliable.items()})
        return out

    def to_dict(self) -> dict:
        """fit.json: schema_version, meta, each law via its result's to_dict, backtest, convention_sensitivity."""
        d = {"schema_version": SCHEMA_VERSION, "meta": json_safe({**self.meta, "skipped": self.skipped})}
        for law in LAWS:
            if law in self.fits:
                d[law] = self.fits[law].to_dict()
        if self.backtest is not None:
            d["backtest"] = self.backtest.to_dict()
        if self.convention_sensitivity is not None:
            d["convention_sensitivity"] = json_safe({
                "target_budget": self.meta.get("target_budget"),
                "rows": self.convention_sensitivity.to_dict("records"),
                **sensitivity_spread(self.convention_sensitivity)})
        return json_safe(d)

    @classmethod
    def from_dict(cls, d, source: str = "fit.json") -> FitReport:
        """The typed report from a fit.json dict; ConfigError naming `source` and the member on any defect."""
        if not isinstance(d, dict):
            raise ConfigError(source, "a JSON object written by `scaling fit`", type(d).__name__)
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConfigError(f"{source}: schema_version", f"{SCHEMA_VERSION} (re-run `scaling fit` to rewrite the file)",
                              version)
        known = {"schema_version", "meta", "backtest", "convention_sensitivity", *LAWS}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: {unknown[0]}", f"only the members {sorted(known)}", unknown[0])
        meta = validate_meta(d.get("meta"), f"{source}: meta")
        fits = {law: _law_from_dict(d[law], law, source) for law in LAWS if d.get(law) is not None}
        backtest = None
        if d.get("backtest") is not None:
            backtest = _member(BacktestResult.from_dict, d["backtest"], f"{source}: backtest")
        sensitivity = None
        if d.get("convention_sensitivity") is not None:
            sensitivity = _sensitivity_from_dict(d["convention_sensitivity"], f"{source}: convention_sensitivity")
        skipped = meta.pop("skipped")
        return cls(meta=meta, fits=fits, backtest=backtest, convention_sensitivity=sensitivity, skipped=skipped,
                   runs=pd.DataFrame(meta["runs"]))


def load_fit(path) -> FitReport:
    """Read and validate fit.json (written by `scaling fit --json/--out`) into a FitReport."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("fit", "a fit.json file written by `scaling fit`", str(path))
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"valid JSON ({e})") from None
    return FitReport.from_dict(d, source=str(path))


def as_report(fit) -> FitReport:
    """A FitReport from a FitReport, a fit.json dict or a path to fit.json."""
    if isinstance(fit, FitReport):
        return fit
    if isinstance(fit, (str, Path)):
        return load_fit(fit)
    if isinstance(fit, dict):
        return FitReport.from_dict(fit)
    raise ConfigError("fit", "a FitReport, a fit.json dict or a path to fit.json", type(fit).__name__)


# ---------------------------------------------------------------- validation of what is read back


def _member(build, value, where: str):
    """build(value), with any defect it trips over reported as a ConfigError naming `where`."""
    try:
        return build(value)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.field}", e.expected, e.got) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ConfigError(where, "a member as written by `scaling fit`", f"{type(e).__name__}: {e}") from None


def _law_from_dict(value, law: str, source: str) -> FitResult:
    where = f"{source}: {law}"
    if not isinstance(value, dict):
        raise ConfigError(where, "a JSON object (a fit result)", type(value).__name__)
    expected = LAW_KINDS[law]
    if value.get("kind") != expected:
        raise ConfigError(f"{where}: kind", repr(expected), value.get("kind"))
    return _member(FitResult.from_dict, value, where)


def _number(value, where: str, *, positive: bool = False, integer: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer() and value >= 0
    if ok and positive:
        ok = value > 0
    if not ok:
        kind = "a non-negative integer" if integer else "a positive finite number" if positive else "a finite number"
        raise ConfigError(where, kind, value)
    return int(value) if integer else float(value)


def validate_meta(meta, where: str = "meta") -> dict:
    """meta as written by fit_all, checked member by member (a copy; ConfigError names the member)."""
    if not isinstance(meta, dict):
        raise ConfigError(where, "a JSON object", type(meta).__name__)
    m = dict(meta)
    for key in ("flop_convention", "k", "n_runs", "n_excluded", "excluded", "budgets", "max_budget", "target_budget",
                "parameter_count", "runs", "ladder"):
        if key not in m:
            raise ConfigError(f"{where}.{key}", "present (fit.json as written by `scaling fit`)", "missing")
    if not isinstance(m["flop_convention"], str):
        raise ConfigError(f"{where}.flop_convention", "a string", m["flop_convention"])
    m["k"] = _number(m["k"], f"{where}.k", positive=True)
    m["n_runs"] = _number(m["n_runs"], f"{where}.n_runs", integer=True)
    m["n_excluded"] = _number(m["n_excluded"], f"{where}.n_excluded", integer=True)
    budgets = m["budgets"]
    if not isinstance(budgets, list) or not budgets:
        raise ConfigError(f"{where}.budgets", "a non-empty list of FLOP budgets", budgets)
    m["budgets"] = [_number(b, f"{where}.budgets[{i}]", positive=True) for i, b in enumerate(budgets)]
    m["max_budget"] = _number(m["max_budget"], f"{where}.max_budget", positive=True)
    m["target_budget"] = _number(m["target_budget"], f"{where}.target_budget", positive=True)
    if m["parameter_count"] not in PARAMETER_COUNTS:
        raise ConfigError(f"{where}.parameter_count", f"one of {PARAMETER_COUNTS}", m["parameter_count"])
    for key in ("excluded", "runs"):
        if not isinstance(m[key], list) or not all(isinstance(r, dict) for r in m[key]):
            raise ConfigError(f"{where}.{key}", "a list of JSON objects", type(m[key]).__name__)
    skipped = m.get("skipped", {})
    if not isinstance(skipped, dict) or not all(isinstance(v, str) for v in skipped.values()):
        raise ConfigError(f"{where}.skipped", "a JSON object of law -> reason", skipped)
    m["skipped"] = dict(skipped)
    if m.get("family") is not None and not isinstance(m["family"], str):
        raise ConfigError(f"{where}.family", "a model family name", m["family"])
    for key in ("seq_len", "vocab_size"):
        if m.get(key) is not None:
            m[key] = _number(m[key], f"{where}.{key}", positive=True, integer=True)
    if m.get("batch_unit") is not None and not isinstance(m["batch_unit"], str):
        raise ConfigError(f"{where}.batch_unit", "a unit name", m["batch_unit"])
    counts = m.get("excluded_counts", {})
    if not isinstance(counts, dict) or not all(isinstance(v, int) and v >= 0 for v in counts.values()):
        raise ConfigError(f"{where}.excluded_counts", "a JSON object of category -> count", counts)
    ladder = m["ladder"]
    if not isinstance(ladder, dict) or not all(isinstance(v, int) and v > 0 for v in ladder.values()):
        raise ConfigError(f"{where}.ladder", "a JSON object of shape options -> positive integers", ladder)
    if m.get("lr_width_exponent") is not None:
        m["lr_width_exponent"] = _number(m["lr_width_exponent"], f"{where}.lr_width_exponent")
    return m


def sensitivity_spread(table: pd.DataFrame) -> dict:
    """How far the conventions move the answer: ranges of a, b and max/min ratios of N_opt, D_opt at the target."""
    out = {}
    for col in ("a", "b", "a_param"):
        if col in table and table[col].notna().any():
            out[f"{col}_range"] = [float(table[col].min()), float(table[col].max())]
    for col in ("N_opt_target", "D_opt_target", "N_opt_target_param"):
        if col in table and table[col].notna().any():
            out[f"{col}_max_over_min"] = float(table[col].max() / table[col].min())
    return out


def sensitivity_interval(row: dict) -> Interval:
    """The interval of approach 2's exponent a in one convention-sensitivity row (undetermined, with the reason,
    when that convention's refit failed or had no draws)."""
    if not isinstance(row.get("a_reason"), str):  # the refit failed: the row has an `error` instead
        return Interval.undetermined(str(row.get("error") or "not fitted"))
    ends = [row["a_lo"], row["a_hi"]]
    if row["a_reason"] or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ends):
        return Interval.undetermined(row["a_reason"] or "no interval", n_ok=int(row["a_n_ok"]),
                                     n_total=int(row["a_n_total"]))
    return Interval(float(ends[0]), float(ends[1]), int(row["a_n_ok"]), int(row["a_n_total"]), "bootstrap")


def _sensitivity_from_dict(value, where: str) -> pd.DataFrame:
    if not isinstance(value, dict) or not isinstance(value.get("rows"), list):
        raise ConfigError(where, "a JSON object with a `rows` list", type(value).__name__)
    if not all(isinstance(r, dict) and isinstance(r.get("convention"), str) for r in value["rows"]):
        raise ConfigError(f"{where}.rows", "a list of objects, each with a `convention`", value["rows"][:1])
    return pd.DataFrame(value["rows"])
