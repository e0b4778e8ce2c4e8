"""Typed fit results: estimates, intervals that say how they were made, bootstrap draws by name, round-tripping JSON.

Every law result subclasses FitResult, sets a `kind` (written into to_dict() and used by FitResult.from_dict to
rebuild the right class) and evaluates its formula in exactly one place: its predict / predict_samples.
Intervals are Interval objects: a percentile range with the number of resamples that succeeded, the method, and a
reason when no honest range could be computed (then lo = hi = NaN; never a point or a zero-width range).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import pandas as pd

from scaling.errors import ConfigError

SCHEMA_VERSION = 2  # fit.json top-level "schema_version"
DEFAULT_LEVEL = 0.95  # nominal coverage of every interval
MIN_OK_FRACTION = 0.9  # fewer successful resamples than this fraction: the interval is undetermined
MIN_RESAMPLE_UNITS = 5  # fewer members of the resampling unit (points, runs, budgets): use the residual bootstrap
MAX_SPAN_RATIO = 10.0  # an interval of a positive quantity wider than hi/lo = 10 marks it unreliable
_ZERO_SPREAD_RTOL = 1e-9  # draws whose percentile range is below this (relative) have no spread: degenerate

# Modules whose result classes register a kind; imported on demand when from_dict meets a kind not yet registered.
_RESULT_MODULES = ("analysis.powerlaw", "analysis.parametric", "analysis.isoflop", "analysis.envelope",
                   "analysis.hyperparams")


def json_safe(x):
    """Convert numpy scalars/arrays and nested containers into plain JSON types (NaN/inf become None)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


# ---------------------------------------------------------------- intervals


def _number(value, where: str, *, allow_none: bool = True) -> float:
    """A JSON number as float (None -> NaN when allowed); ConfigError for strings, bools, lists, ..."""
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(where, "a number", repr(value)[:60])
    return float(value)


def _count(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(where, "a non-negative integer", repr(value)[:60])
    return int(value)


def _mapping(value, where: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(where, "a JSON object", type(value).__name__)
    return dict(value)


@dataclass(frozen=True, eq=False)
class Interval:
    """A `level` interval of one quantity, with how it was obtained.

    lo, hi: the range (NaN when undetermined); n_ok / n_total: resamples that succeeded / were attempted;
    method: "bootstrap:runs", "bootstrap:budgets", "bootstrap:points", "bootstrap:residual", "none", ...;
    reason: why no range could be given (empty when determined). `lo, hi = interval` unpacks the range.
    """

    lo: float
    hi: float
    n_ok: int
    n_total: int
    method: str
    level: float = DEFAULT_LEVEL
    reason: str = ""

    @property
    def determined(self) -> bool:
        """True for a real range: finite lo < hi and no reason against it."""
        return not self.reason and math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi

    def span_ratio(self) -> float:
        """hi / lo for a non-negative quantity (inf when lo == 0 < hi); NaN when undetermined or lo < 0."""
        if not self.determined or self.lo < 0:
            return math.nan
        return math.inf if self.lo == 0 else self.hi / self.lo

    def contains(self, value: float) -> bool:
        """Whether value lies in [lo, hi] (False when undetermined)."""
        return self.determined and self.lo <= value <= self.hi

    def __eq__(self, other) -> bool:
        """Equal when every member is (NaN equals NaN, so two identical undetermined intervals are equal)."""
        return isinstance(other, Interval) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def __iter__(self):
        """Unpack as `lo, hi = interval`."""
        yield self.lo
        yield self.hi

    def describe(self, digits: int = 4) -> str:
        """'[lo, hi] (n_ok/n_total)' or 'undetermined: reason (n_ok/n_total)'."""
        counts = f"({self.n_ok}/{self.n_total})"
        if not self.determined:
            return f"undetermined: {self.reason or 'no range'} {counts}"
        return f"[{self.lo:.{digits}g}, {self.hi:.{digits}g}] {counts}"

    def to_dict(self) -> dict:
        return json_safe({"lo": self.lo, "hi": self.hi, "n_ok": self.n_ok, "n_total": self.n_total,
                          "method": self.method, "level": self.level, "reason": self.reason})

    @classmethod
    def from_dict(cls, d, where: str = "interval") -> Interval:
        """Rebuild from to_dict() output; ConfigError on anything malformed."""
        d = _mapping(d, where)
        missing = {"lo", "hi", "n_ok", "n_total", "method"} - set(d)
        if missing:
            raise ConfigError(where, "an interval with lo, hi, n_ok, n_total, method", f"missing {sorted(missing)}")
        n_ok, n_total = _count(d["n_ok"], f"{where}.n_ok"), _count(d["n_total"], f"{where}.n_total")
        if n_ok > n_total:
            raise ConfigError(f"{where}.n_ok", f"at most n_total ({n_total})", n_ok)
        level = _number(d.get("level", DEFAULT_LEVEL), f"{where}.level", allow_none=False)
        if not 0 < level < 1:
            raise ConfigError(f"{where}.level", "a coverage level in (0, 1)", level)
        if not isinstance(d["method"], str) or not isinstance(d.get("reason", ""), str):
            raise ConfigError(where, "method and reason as strings", (d["method"], d.get("reason")))
        return cls(lo=_number(d["lo"], f"{where}.lo"), hi=_number(d["hi"], f"{where}.hi"), n_ok=n_ok,
                   n_total=n_total, method=d["method"], level=level, reason=d.get("reason", ""))

    @classmethod
    def undetermined(cls, reason: str, *, n_ok: int = 0, n_total: int = 0, method: str = "none",
                     level: float = DEFAULT_LEVEL) -> Interval:
        """An interval that could not be computed, and why."""
        return cls(math.nan, math.nan, int(n_ok), int(n_total), method, level, reason or "undetermined")


def interval_from_draws(draws, *, method: str, level: float = DEFAULT_LEVEL,
                        min_ok_fraction: float = MIN_OK_FRACTION) -> Interval:
    """Percentile interval of finite draws; undetermined (with the reason) when fewer than 90% of the draws
    succeeded (non-finite = failed), when there are no draws, or when the draws have (near) zero spread."""
    d = np.asarray(draws, dtype=float).ravel()
    n_total = int(d.size)
    ok = d[np.isfinite(d)]
    n_ok = int(ok.size)
    if n_total == 0:
        return Interval.undetermined("no resamples", method=method, level=level)
    if n_ok < min_ok_fraction * n_total or n_ok < 2:
        return Interval.undetermined(f"only {n_ok}/{n_total} resamples succeeded (< {min_ok_fraction:.0%})",
                                     n_ok=n_ok, n_total=n_total, method=method, level=level)
    lo, hi = (float(v) for v in np.percentile(ok, [50 * (1 - level), 50 * (1 + level)]))
    if not hi - lo > _ZERO_SPREAD_RTOL * max(abs(lo), abs(hi), 1e-300):
        return Interval.undetermined(f"the central {level:.0%} of the resamples have no spread (all {lo:.4g}): "
                                     "degenerate resampling",
                                     n_ok=n_ok, n_total=n_total, method=method, level=level)
    return Interval(lo, hi, n_ok, n_total, method, level)


def intervals_from_draws(draws: Mapping[str, np.ndarray], *, method: str,
                         level: float = DEFAULT_LEVEL) -> dict[str, Interval]:
    """interval_from_draws for every named draw array."""
    return {name: interval_from_draws(v, method=method, level=level) for name, v in draws.items()}


# ---------------------------------------------------------------- the unreliable rule


@dataclass(frozen=True)
class Plausible:
    """A plausible range for an exponent, e.g. Plausible(0, 1) for a, b; Plausible(0, 2, lo_open=True) for alpha."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return bool(math.isfinite(v) and above and below)

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


ALLOCATION_EXPONENT = Plausible(0.0, 1.0)  # a, b in N_opt ~ C^a, D_opt ~ C^b
HYPERPARAM_EXPONENT = Plausible(-1.0, 1.0)  # lr_opt, batch_opt ~ C^e
LOSS_EXPONENT = Plausible(0.0, 2.0, lo_open=True)  # alpha, beta in L(N, D); gamma in L(C)


def unreliable_reasons(params: Mapping[str, float], intervals: Mapping[str, Interval], *,
                       exponents: Mapping[str, Plausible] | None = None, spans: tuple[str, ...] = (),
                       max_span: float = MAX_SPAN_RATIO) -> dict[str, str]:
    """The unreliable rule: name -> reason.

    exponents: name -> plausible range; the point estimate must lie inside, and the interval may not be wider than
    the range itself. spans: names of positive quantities whose interval may not span more than max_span (hi/lo).
    """
    out: dict[str, str] = {}
    for name, rng in (exponents or {}).items():
        v = params.get(name, math.nan)
        iv = intervals.get(name)
        if not rng.contains(v):
            out[name] = f"exponent {v:.3g} outside {rng}"
        elif iv is not None and iv.determined and iv.hi - iv.lo > rng.hi - rng.lo:
            out[name] = f"interval [{iv.lo:.3g}, {iv.hi:.3g}] is wider than the plausible range {rng}"
    for name in spans:
        iv = intervals.get(name)
        ratio = iv.span_ratio() if iv is not None else math.nan
        if ratio > max_span:
            out.setdefault(name, f"interval [{iv.lo:.3g}, {iv.hi:.3g}] spans "
                           + ("from 0" if math.isinf(ratio) else f"{ratio:.3g}x"))
    return out


# ---------------------------------------------------------------- results


def _draws_to_json(draws: Mapping[str, np.ndarray]) -> dict:
    return {name: json_safe(np.asarray(v, dtype=float)) for name, v in draws.items()}


def _draws_from_json(d, where: str) -> dict[str, np.ndarray]:
    out = {}
    for name, values in _mapping(d, where).items():
        if not isinstance(values, list):
            raise ConfigError(f"{where}.{name}", "a list of numbers (null = failed draw)", type(values).__name__)
        out[name] = np.array([_number(v, f"{where}.{name}") for v in values], dtype=float)
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise ConfigError(where, "draw lists of one length", sorted(lengths))
    return out


def _member_to_json(value):
    if isinstance(value, FitResult):
        return value.to_dict()
    if isinstance(value, pd.DataFrame):
        return json_safe(value.to_dict(orient="records"))
    return json_safe(value)


@dataclass(eq=False, repr=False)
class FitResult:
    """Base of every fit result. Subclasses set `kind`, add members, and implement predict / predict_samples.

    Subclass members are written by to_dict beside the base members; `fit_members` names those that are FitResults
    and `table_members` those that are DataFrames, so from_dict can rebuild them; any other member is plain JSON.
    `positive_params` / `non_negative_params` / `finite_params` are checked when reading a result back.
    """

    kind: ClassVar[str] = ""
    fit_members: ClassVar[tuple[str, ...]] = ()
    table_members: ClassVar[tuple[str, ...]] = ()
    positive_params: ClassVar[tuple[str, ...]] = ()
    non_negative_params: ClassVar[tuple[str, ...]] = ()
    finite_params: ClassVar[tuple[str, ...]] = ()
    summary_keys: ClassVar[tuple[str, ...] | None] = None  # diagnostics shown by summary() (None: every scalar)
    _registry: ClassVar[dict[str, type[FitResult]]] = {}

    params: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # NaN = failed draw; one length for all names
    diagnostics: dict = field(default_factory=dict)  # JSON-safe
    noise: dict = field(default_factory=dict)  # {"sigma", "dof", "source"} or {}
    unreliable: dict[str, str] = field(default_factory=dict)
    success: bool = True
    message: str = ""
    name: str = "fit"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind:
            if kind in FitResult._registry and FitResult._registry[kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"result kind {kind!r} registered twice")
            FitResult._registry[kind] = cls

    def __getattr__(self, item):
        params = self.__dict__.get("params", {})
        if item in params:
            return params[item]
        raise AttributeError(item)

    def __repr__(self) -> str:
        return self.summary()

    @property
    def n_draws(self) -> int:
        """Number of bootstrap draws stored (failed ones included)."""
        return len(next(iter(self.draws.values()))) if self.draws else 0

    # ---- evaluation (subclasses)

    def predict(self, *x):
        raise NotImplementedError(f"{type(self).__name__} has no predict")

    def predict_samples(self, *x):
        raise NotImplementedError(f"{type(self).__name__} has no predict_samples")

    # ---- text

    def headline(self) -> str:
        """First summary line (subclasses show their formula)."""
        return f"{self.name}: {'converged' if self.success else 'NOT CONVERGED'}" + (
            f" ({self.message})" if self.message else "")

    def param_lines(self) -> list[str]:
        """One line per parameter (and per other interval) with its interval and any UNRELIABLE mark."""
        lines = []
        for k in list(self.params) + [k for k in self.intervals if k not in self.params]:
            v = self.params.get(k)
            line = f"  {k:>12s} = {v:.6g}" if v is not None else f"  {k:>12s}"
            if k in self.intervals:
                line += f"   {self.intervals[k].level:.0%} " + self.intervals[k].describe(6)
            if k in self.unreliable:
                line += f"   UNRELIABLE: {self.unreliable[k]}"
            lines.append(line)
        methods = sorted({iv.method for iv in self.intervals.values() if iv.method != "none"})
        if methods and self.n_draws:
            lines.append(f"  intervals: {', '.join(methods)}, {self.n_draws} draws")
        for k in sorted(set(self.unreliable) - set(self.params) - set(self.intervals)):
            lines.append(f"  {k}: UNRELIABLE: {self.unreliable[k]}")
        if self.noise:
            lines.append(f"  noise: sigma {self.noise.get('sigma', math.nan):.3g} with {self.noise.get('dof')} dof "
                         f"({self.noise.get('source', '?')})")
        return lines

    def summary(self) -> str:
        lines = [self.headline(), *self.param_lines()]
        keys = self.summary_keys if self.summary_keys is not None else list(self.diagnostics)
        for k in keys:
            v = self.diagnostics.get(k)
            if isinstance(v, (int, float, str, bool, np.floating, np.integer)):
                lines.append(f"  {k}: {format_value(v)}")
        return "\n".join(lines)

    # ---- JSON

    def _extra_members(self) -> list[str]:
        base = {f.name for f in fields(FitResult)}
        return [f.name for f in fields(self) if f.name not in base]

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "name": self.name, "params": json_safe(self.params),
             "intervals": {k: iv.to_dict() for k, iv in self.intervals.items()},
             "draws": _draws_to_json(self.draws), "diagnostics": json_safe(self.diagnostics),
             "noise": json_safe(self.noise), "unreliable": dict(self.unreliable), "success": bool(self.success),
             "message": self.message}
        for member in self._extra_members():
            d[member] = _member_to_json(getattr(self, member))
        return d

    @classmethod
    def from_dict(cls, d) -> FitResult:
        """Rebuild a result from to_dict() output, dispatching on d["kind"]; ConfigError on malformed input."""
        d = _mapping(d, "fit result")
        kind = d.get("kind")
        target = cls._class_for(kind)
        if not issubclass(target, cls):
            raise ConfigError("kind", f"a {cls.kind or cls.__name__} result", kind)
        return target._from_dict(d)

    @classmethod
    def _class_for(cls, kind) -> type[FitResult]:
        if not isinstance(kind, str) or not kind:
            raise ConfigError("kind", "the result kind as a string", repr(kind)[:60])
        if kind not in FitResult._registry:
            for module in _RESULT_MODULES:
                importlib.import_module(module)
        if kind not in FitResult._registry:
            raise ConfigError("kind", f"one of {sorted(FitResult._registry)}", kind)
        return FitResult._registry[kind]

    @classmethod
    def _from_dict(cls, d: dict) -> FitResult:
        where = cls.kind or cls.__name__
        params = {k: _number(v, f"{where}.params.{k}") for k, v in _mapping(d.get("params"), f"{where}.params").items()}
        for k in cls.positive_params:
            if not 0 < params.get(k, math.nan) < math.inf:
                raise ConfigError(f"{where}.params.{k}", "a positive number", params.get(k))
        for k in cls.non_negative_params:
            if not 0 <= params.get(k, math.nan) < math.inf:
                raise ConfigError(f"{where}.params.{k}", "a non-negative number", params.get(k))
        for k in cls.finite_params:
            if not math.isfinite(params.get(k, math.nan)):
                raise ConfigError(f"{where}.params.{k}", "a finite number", params.get(k))
        intervals = {k: Interval.from_dict(v, f"{where}.intervals.{k}")
                     for k, v in _mapping(d.get("intervals", {}), f"{where}.intervals").items()}
        unreliable = _mapping(d.get("unreliable", {}), f"{where}.unreliable")
        if not all(isinstance(v, str) for v in unreliable.values()):
            raise ConfigError(f"{where}.unreliable", "reasons as strings", unreliable)
        if not isinstance(d.get("success", True), bool) or not isinstance(d.get("message", ""), str):
            raise ConfigError(where, "success as true/false and message as a string",
                              (d.get("success"), d.get("message")))
        kwargs = {"params": params, "intervals": intervals,
                  "draws": _draws_from_json(d.get("draws", {}), f"{where}.draws"),
                  "diagnostics": _mapping(d.get("diagnostics", {}), f"{where}.diagnostics"),
                  "noise": _mapping(d.get("noise", {}), f"{where}.noise"), "unreliable": unreliable,
                  "success": d.get("success", True), "message": d.get("message", ""),
                  "name": str(d.get("name", cls.__name__))}
        base = {f.name for f in fields(FitResult)}
        for f in fields(cls):
            if f.name in base or f.name not in d:
                continue
            value = d[f.name]
            if f.name in cls.fit_members:
                value = None if value is None else FitResult.from_dict(value)
            elif f.name in cls.table_members:
                if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
                    raise ConfigError(f"{where}.{f.name}", "a list of row objects", type(value).__name__)
                value = pd.DataFrame.from_records(value)
            else:
                value = _like_default(value, f.default, f"{where}.{f.name}")
            kwargs[f.name] = value
        return cls(**kwargs)


def _like_default(value, default, where: str):
    """A plain member read back: a number where the default is a number, a string where it is a string (other
    members pass as they are)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(where, "true or false", repr(value)[:60])
        return value
    if isinstance(default, int):
        number = _number(value, where, allow_none=False)
        if not number.is_integer():
            raise ConfigError(where, "an integer", value)
        return int(number)
    if isinstance(default, float):
        return _number(value, where)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(where, "a string", repr(value)[:60])
    return value


def format_value(v) -> str:
    """Short human form of a diagnostic value (floats to 4 significant digits)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)
