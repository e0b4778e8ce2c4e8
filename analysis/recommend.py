"""Turn a fit (FitReport, fit.json dict or path) into a concrete training recommendation for a FLOP budget.

Every number comes from a law's own result object (predict / predict_samples / optimal_allocation_samples), and its
interval from pushing the law's bootstrap draws through the same call (analysis.result.interval_from_draws):

- N (params, counted as the fit counts them): approach 2 (isoflop N_opt(C)), else approach 3 (the parametric
  allocation), else approach 1 (envelope N_opt(C)). A law marked unreliable, or whose N interval at the budget spans
  more than MAX_SPAN_RATIO, is passed over for the next one, and the recommendation says which fallback it used.
- D (tokens) = C / (k N), k from meta.k (C = k N D; 6 for "6N").
- batch size (tokens) and peak LR: the hyperparams laws B_opt(C), lr_opt(C) when fitted and reliable, else the
  published DeepSeek LLM laws B_opt = 0.2920 C^0.3271 tokens, lr_opt = 0.3118 C^-0.1250 (no interval).
- steps = ceil(D / batch), warmup = warmup_frac * steps.
- expected loss: L(C) (loss_vs_compute) and L(N, D) (parametric) at the recommended (N, D); both are reported, and
  the recommendation warns when they disagree beyond their intervals (likewise approach 2 vs approach 3 N_opt).
- shape: from the fit's family / vocab / seq_len (or the options); without them no shape is invented.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from analysis.data import PARAM_COUNTS
from analysis.fitreport import UNSPECIFIED_COUNT, FitReport, as_report
from analysis.powerlaw import PowerLawFit
from analysis.result import MAX_SPAN_RATIO, FitResult, Interval, interval_from_draws, json_safe
from scaling.config import FAMILIES
from scaling.errors import ConfigError
from scaling.ladder import MAX_PARAMS, params_for_shape, shape_for_params

DEEPSEEK_BATCH = (0.2920, 0.3271)  # B_opt = 0.2920 C^0.3271 tokens (DeepSeek LLM 2024, C = M D)
DEEPSEEK_LR = (0.3118, -0.1250)  # lr_opt = 0.3118 C^-0.1250
PUBLISHED_LAWS = {  # the fallbacks as law objects, so they are evaluated by PowerLawFit.predict like a fitted law
    name: PowerLawFit(params={"coef": coef, "exponent": exponent}, name=f"DeepSeek LLM published law {coef} C^{exponent}",
                      x_name="C [FLOPs]", y_name=name)
    for name, (coef, exponent) in (("lr_opt", DEEPSEEK_LR), ("batch_opt", DEEPSEEK_BATCH))}
LARGE_EXTRAPOLATION = 100.0
STRONG_EXTRAPOLATION = 1e4
BACKTEST_TOL = {"loss": 0.01, "N_opt": 0.15, "D_opt": 0.15}  # backtest relative errors above these are warned
# about: a 1% loss miss is ~10% of compute at the loss-compute slopes of small LMs (0.05-0.1), while an isoFLOP
# vertex is located to +-5-20% even in a clean sweep
UNCHECKED_DISAGREEMENT = 0.10  # two predictions without intervals differing by more than this are warned about
NO_DRAWS = "no bootstrap draws (the fit ran with n_boot = 0)"
EXPONENTS = ("exponent", "a", "b", "alpha", "beta", "gamma")  # the laws' exponents, judged by their plausible range

LABELS = {  # quantity -> (label with unit, number format)
    "N": ("N (params)", ".4g"), "D": ("D (tokens)", ".4g"), "batch_size_tokens": ("batch size (tokens)", ".4g"),
    "lr": ("peak learning rate", ".4g"), "steps": ("steps", ".6g"), "warmup_steps": ("warmup steps", ".6g"),
    "expected_loss": ("expected final loss (nats/token)", ".4g"),
    "expected_loss_parametric": ("expected loss, parametric L(N, D)", ".4g"),
    "n_layer": ("n_layer", ".0f"), "d_model": ("d_model", ".0f"), "n_heads": ("n_heads", ".0f"),
    "d_ff": ("d_ff", ".0f")}


@dataclass(frozen=True)
class Estimate:
    """One candidate value of a quantity: its point, its bootstrap draws, where it came from and any doubt."""

    point: float
    draws: np.ndarray
    method: str
    source: str
    unreliable: str = ""  # why the law behind it is not to be trusted ("" when it is)
    no_interval: str = ""  # why there is no interval at all (a published law), overriding the draws
    measured: Interval | None = None  # an interval measured directly (e.g. one cell's LR scan), not from law draws
    cell_N: float | None = None  # the N of the measured cell, for a measured optimum

    def interval(self) -> Interval:
        if self.no_interval:
            return Interval.undetermined(self.no_interval)
        if self.measured is not None:
            return self.measured
        if self.draws.size == 0:
            return Interval.undetermined(NO_DRAWS)
        return interval_from_draws(self.draws, method=self.method)


@dataclass(eq=False)
class Recommendation:
    """A recommended run for `budget` FLOPs: `params` (point values), `intervals` (Interval per quantity),
    `sources` (which law), `fallbacks` (quantity -> the fallback used and why), `unreliable` (quantity -> reason),
    `warnings`, `model` (the ModelConfig fields, or None with `shape_note` saying what is missing)."""

    budget: float
    params: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, str] = field(default_factory=dict)
    unreliable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    model: dict | None = None
    shape_note: str = ""
    extrapolation_factor: float = math.nan  # budget / largest fitted budget
    diagnostics: dict = field(default_factory=dict)

    def label(self, key: str) -> str:
        """The quantity's label with its unit (N says what it counts)."""
        if key == "N":
            count = self.diagnostics.get("parameter_count", UNSPECIFIED_COUNT)
            return "N (params, count unspecified)" if count == UNSPECIFIED_COUNT else f"N ({count} params)"
        return LABELS.get(key, (key,))[0]

    def row(self, key: str) -> str:
        """'label  value  [lo, hi] (n_ok/n_total)' with 'undetermined: reason' and 'UNRELIABLE: reason' marks."""
        fmt = LABELS.get(key, (key, ".4g"))[1]
        line = f"  {self.label(key):<36s} {self.params[key]:{fmt}}   {describe(self.intervals.get(key), fmt)}"
        if key in self.unreliable:
            line += f"   UNRELIABLE: {self.unreliable[key]}"
        return line

    def summary(self) -> str:
        conv = self.diagnostics.get("flop_convention", "?")
        lines = [(f"recommendation for C = {self.budget:.3g} FLOPs ({conv}), "
                 f"{self.extrapolation_factor:.3g}x the largest fitted budget")]
        lines += [self.row(key) for key in ("N", "D") if key in self.params]
        if self.model is not None:
            lines.append(f"  {'shape':<36s} n_layer={self.model['n_layer']} d_model={self.model['d_model']} "
                         f"n_heads={self.model['n_heads']} d_ff={self.model['d_ff']} ({self.model['family']}, "
                         f"vocab {self.model['vocab_size']}, seq {self.model['seq_len']}; "
                         f"N_shape = {self.params['N_shape']:.4g})")
        else:
            lines.append(f"  {'shape':<36s} none: {self.shape_note}")
        lines += [self.row(key) for key in ("batch_size_tokens", "lr", "steps", "warmup_steps", "expected_loss",
                                            "expected_loss_parametric") if key in self.params]
        lines.append("  sources: " + ", ".join(f"{k} <- {v}" for k, v in self.sources.items()))
        lines += [f"  fallback for {k}: {v}" for k, v in self.fallbacks.items()]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return json_safe({"budget": self.budget, "params": self.params,
                          "intervals": {k: iv.to_dict() for k, iv in self.intervals.items()},
                          "sources": self.sources, "fallbacks": self.fallbacks, "unreliable": self.unreliable,
                          "warnings": self.warnings, "model": self.model, "shape_note": self.shape_note,
                          "extrapolation_factor": self.extrapolation_factor, "diagnostics": self.diagnostics})

    @classmethod
    def from_dict(cls, d) -> Recommendation:
        """Rebuild from to_dict() output; ConfigError on malformed input."""
        if not isinstance(d, dict) or not isinstance(d.get("params"), dict):
            raise ConfigError("recommendation", "a JSON object with params", type(d).__name__)
        try:
            params = {k: math.nan if v is None else float(v) for k, v in d["params"].items()}
            return cls(budget=float(d["budget"]), params=params,
                       intervals={k: Interval.from_dict(v, f"recommendation.intervals.{k}")
                                  for k, v in d["intervals"].items()},
                       sources=dict(d["sources"]), fallbacks=dict(d["fallbacks"]), unreliable=dict(d["unreliable"]),
                       warnings=list(d["warnings"]), model=d["model"], shape_note=str(d["shape_note"]),
                       extrapolation_factor=math.nan if d["extrapolation_factor"] is None
                       else float(d["extrapolation_factor"]), diagnostics=dict(d["diagnostics"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError("recommendation", "members as written by Recommendation.to_dict",
                              f"{type(e).__name__}: {e}") from None


def describe(iv: Interval | None, fmt: str = ".4g") -> str:
    """'[lo, hi] (n_ok/n_total)' or 'undetermined: reason (n_ok/n_total)'; never a point or [x, x]."""
    if iv is None:
        return "undetermined: no interval"
    if not iv.determined:
        return iv.describe()
    return f"[{iv.lo:{fmt}}, {iv.hi:{fmt}}] ({iv.n_ok}/{iv.n_total})"


def recommend(fit, budget: float, *, family: str | None = None, seq_len: int | None = None,
              vocab_size: int | None = None, param_count: str | None = None,
              warmup_frac: float = 0.05) -> Recommendation:
    """Recommend N, D, batch, LR, steps, expected loss and (when the family and vocab are known) a shape for
    `budget` FLOPs (in the fit's convention).

    fit: a FitReport, a fit.json dict or a path to fit.json. family, seq_len, vocab_size, param_count ("non-embedding"
    or "total": what N counts) override the fit's meta.
    """
    report = as_report(fit)
    budget = _positive_budget(budget)
    meta = report.meta
    k = float(meta["k"])
    rec = Recommendation(budget=budget, diagnostics={"flop_convention": meta["flop_convention"], "k": k})
    estimates: dict[str, Estimate] = {}

    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing law is refused below, not warned about
        n_candidates = _n_candidates(report, budget)
    estimates["N"] = _choose("N", n_candidates, rec)
    n = estimates["N"]
    if not (math.isfinite(n.point) and n.point > 0):
        raise ConfigError("budget", f"a budget at which {n.source} gives a finite positive N", budget)
    estimates["D"] = Estimate(budget / (k * n.point), budget / (k * n.draws), n.method, f"C / ({k:.4g} N)",
                              n.unreliable)
    _compare(rec, "N_opt", n_candidates)

    seq = seq_len or meta.get("seq_len")
    estimates["batch_size_tokens"] = _round_batch(_hyperparam("batch_opt", report, budget, rec), seq)
    estimates["lr"] = _hyperparam("lr_opt", report, budget, rec)
    estimates["steps"] = _steps(estimates["D"], estimates["batch_size_tokens"])
    estimates["warmup_steps"] = dataclasses.replace(
        estimates["steps"], point=float(np.round(warmup_frac * estimates["steps"].point)),
        draws=np.round(warmup_frac * estimates["steps"].draws), source=f"{warmup_frac:g} x steps")

    losses = _loss_candidates(report, budget, n.point, estimates["D"].point)
    if not losses:
        raise ConfigError("fit", "a loss_vs_compute, parametric, isoflop or envelope law to predict the loss")
    estimates["expected_loss"] = _choose("expected_loss", losses, rec)
    parametric = [e for e in losses if e.source.startswith("parametric")]
    if parametric and estimates["expected_loss"].source != parametric[0].source:
        estimates["expected_loss_parametric"] = parametric[0]
    _compare(rec, "expected loss", [e for e in losses if e.source.startswith(("L(C)", "parametric"))])

    for key, est in estimates.items():
        rec.params[key] = float(est.point)
        rec.intervals[key] = est.interval()
        rec.sources[key] = est.source
        if est.unreliable and key not in rec.unreliable:
            rec.unreliable[key] = est.unreliable
    for key in ("steps", "warmup_steps"):  # counts: widen a real interval to whole steps
        iv = rec.intervals[key]
        if iv.determined:
            rec.intervals[key] = dataclasses.replace(iv, lo=float(math.floor(iv.lo)), hi=float(math.ceil(iv.hi)))

    _mark_bent_frontier(rec, report)
    _add_shape(rec, report, family=family, seq_len=seq_len, vocab_size=vocab_size, param_count=param_count)
    _place_measured_lr(rec, report)
    for key, iv in rec.intervals.items():
        ratio = iv.span_ratio()
        if ratio > MAX_SPAN_RATIO and key not in rec.unreliable:
            rec.unreliable[key] = f"interval spans {ratio:.3g}x (> {MAX_SPAN_RATIO:g}x)"
    rec.extrapolation_factor = budget / float(meta["max_budget"])
    rec.warnings = (_range_warnings(budget, meta) + rec.warnings + _diagnostic_warnings(report)
                    + [f"{rec.label(key)} is UNRELIABLE: {why}" for key, why in rec.unreliable.items()])
    return rec


# ---------------------------------------------------------------- candidates per quantity


def _method(result: FitResult) -> str:
    """How the result's draws were made (its intervals' method), for the intervals derived from them."""
    methods = sorted({iv.method for iv in result.intervals.values() if iv.method != "none"})
    return "+".join(methods) or "none"


def _reasons(*results_and_keys) -> str:
    """'; '-joined unreliable reasons of (result, names) pairs (names None: the result's EXPONENTS).

    Only exponents (and quantities named explicitly) count: a poorly determined coefficient or irreducible loss
    shows in the prediction's own interval at the budget, which is checked separately (_with_span)."""
    out = []
    for result, keys in results_and_keys:
        if result is None:
            continue
        keys = EXPONENTS if keys is None else keys
        out += [f"{name}: {why}" for name, why in result.unreliable.items() if name in keys]
    return "; ".join(out)


def _n_candidates(report: FitReport, budget: float) -> list[Estimate]:
    """N at the budget from approach 2, approach 3, approach 1 (in that order of preference), those that exist."""
    out = []
    iso = report.fits.get("isoflop")
    if iso is not None:
        out.append(Estimate(float(iso.N_opt.predict(budget)), iso.N_opt.predict_samples(budget), _method(iso.N_opt),
                            "isoflop.N_opt (approach 2)", _reasons((iso, ("a", "N_opt")), (iso.N_opt, None))))
    par = report.fits.get("parametric")
    if par is not None:
        n_point, _ = par.optimal_allocation(budget)
        n_draws, _ = par.optimal_allocation_samples(budget)
        out.append(Estimate(float(n_point), np.asarray(n_draws, dtype=float), _method(par),
                            "parametric allocation (approach 3)",
                            _reasons((par, None))))
    env = report.fits.get("envelope")
    if env is not None:
        out.append(Estimate(float(env.N_opt.predict(budget)), env.N_opt.predict_samples(budget), _method(env.N_opt),
                            "envelope.N_opt (approach 1)", _reasons((env, ("a", "N_opt")), (env.N_opt, None))))
    if not out:
        raise ConfigError("fit", "an isoflop, parametric or envelope fit to choose N (none is in the fit)")
    return out


def _loss_candidates(report: FitReport, budget: float, n: float, d: float) -> list[Estimate]:
    """Expected loss from L(C), then L(N, D) at the recommended point, then the isoflop / envelope L_opt laws."""
    out = []
    sat = report.fits.get("loss_vs_compute")
    if sat is not None:
        out.append(Estimate(float(sat.predict(budget)), sat.predict_samples(budget), _method(sat),
                            "L(C) = E + A C^-gamma (loss_vs_compute)", _reasons((sat, None))))
    par = report.fits.get("parametric")
    if par is not None:
        out.append(Estimate(float(par.predict(n, d)), par.predict_samples(n, d), _method(par),
                            "parametric L(N, D) at the recommended N, D", _reasons((par, None))))
    for name in ("isoflop", "envelope"):
        fit = report.fits.get(name)
        if fit is not None:
            out.append(Estimate(float(fit.L_opt.predict(budget)), fit.L_opt.predict_samples(budget),
                                _method(fit.L_opt), f"{name}.L_opt power law", _reasons((fit.L_opt, None))))
    return out


def _with_span(est: Estimate) -> Estimate:
    """The estimate with its interval at this budget added to its doubts: wider than MAX_SPAN_RATIO, or undetermined
    although there were draws (too many failed, or no spread). Without any draws (n_boot = 0) nothing is added."""
    iv = est.interval()
    ratio = iv.span_ratio()
    why = ""
    if ratio > MAX_SPAN_RATIO:
        why = f"interval at this budget spans {ratio:.3g}x (> {MAX_SPAN_RATIO:g}x)"
    elif est.draws.size and not iv.determined and not est.no_interval:
        why = f"interval at this budget undetermined: {iv.reason}"
    if why:
        return dataclasses.replace(est, unreliable="; ".join(filter(None, (est.unreliable, why))))
    return est


def _choose(key: str, candidates: list[Estimate], rec: Recommendation) -> Estimate:
    """The first reliable candidate, recording the fallback; the first one, marked UNRELIABLE, when none is."""
    checked = [_with_span(c) for c in candidates]
    chosen = next((c for c in checked if not c.unreliable), None)
    if chosen is None:
        rec.unreliable[key] = checked[0].unreliable
        if len(checked) > 1:
            rec.warnings.append(f"{key}: every law is unreliable ("
                                + "; ".join(f"{c.source}: {c.unreliable}" for c in checked) + f"); using {checked[0].source}")
        return checked[0]
    if chosen is not checked[0]:
        first = checked[0]
        rec.fallbacks[key] = f"{chosen.source} instead of {first.source}, which is UNRELIABLE: {first.unreliable}"
    return chosen


def _hyperparam(law_name: str, report: FitReport, budget: float, rec: Recommendation) -> Estimate:
    """lr_opt / batch_opt at the budget from the hyperparams law, else the published DeepSeek LLM law."""
    law = PUBLISHED_LAWS[law_name]
    published = Estimate(float(law.predict(budget)), np.empty(0), "none", law.name,
                         no_interval="published law, no interval")
    key = "lr" if law_name == "lr_opt" else "batch_size_tokens"
    hp = report.fits.get("hyperparams")
    law = getattr(hp, law_name, None) if hp is not None else None
    measured = _measured_lr(hp) if law_name == "lr_opt" and hp is not None else None
    if law is None:
        why = "no hyperparams fit" if hp is None else f"no {law_name} law in the hyperparams fit"
        return _fall_back(rec, key, measured, published, f"({why})")
    fitted = _with_span(Estimate(float(law.predict(budget)), law.predict_samples(budget), _method(law),
                                 f"hyperparams.{law_name}",
                                 _reasons((hp, (law_name, law_name.replace("_opt", "_exponent"),
                                               f"{law_name}_at_largest_budget")), (law, None))))
    if fitted.unreliable:
        return _fall_back(rec, key, measured, published,
                          f"instead of {fitted.source}, which is UNRELIABLE: {fitted.unreliable}")
    return fitted


def _fall_back(rec: Recommendation, key: str, measured: tuple[Estimate, float] | None, published: Estimate,
               why: str) -> Estimate:
    """Use the measured optimum when there is one, else the published law; record which and why."""
    if measured is None:
        rec.fallbacks[key] = f"{published.source} {why} (fitted with C = non-embedding FLOPs/token x tokens)"
        return published
    estimate, measured_at = measured
    rec.fallbacks[key] = f"{estimate.source} {why}"
    rec.diagnostics["lr_measured_cell"] = {"C": measured_at, "N": estimate.cell_N}
    return estimate


def _measured_lr(hp) -> tuple[Estimate, float] | None:
    """The LR optimum of the compute-optimal cell at the largest scanned budget with that cell's own interval, held
    constant in C, and that budget: the fallback when the lr_opt(C) law cannot be trusted (None without such a
    cell)."""
    cells = hp.cells
    needed = {"compute_optimal", "C", "N", "lr_opt", "lr_lo", "lr_hi", "lr_n_ok", "lr_n_total"}
    if cells.empty or not needed <= set(cells.columns):
        return None
    lo, hi = cells["lr_lo"].to_numpy(float), cells["lr_hi"].to_numpy(float)
    ok = cells["compute_optimal"].astype(bool).to_numpy() & np.isfinite(lo) & np.isfinite(hi) & (lo < hi)
    if not ok.any():
        return None
    scanned = cells[ok]
    row = scanned.loc[scanned["C"].idxmax()]
    interval = Interval(float(row["lr_lo"]), float(row["lr_hi"]), int(row["lr_n_ok"]), int(row["lr_n_total"]),
                        "cell scan, held constant in C")
    estimate = Estimate(float(row["lr_opt"]), np.empty(0), interval.method,
                        f"lr_opt measured at C = {float(row['C']):.3g} FLOPs (compute-optimal cell, N = "
                        f"{float(row['N']):.4g}), held constant", measured=interval, cell_N=float(row["N"]))
    return estimate, float(row["C"])


def _mark_bent_frontier(rec: Recommendation, report: FitReport) -> None:
    """Mark the expected loss UNRELIABLE when the isoFLOP optimal losses bend downward in log-log (their curvature's
    interval is below 0): every loss law here is a power law or decelerates, so beyond the fitted budgets each one
    overpredicts the loss."""
    iso = report.fits.get("isoflop")
    bend = iso.diagnostics.get("frontier_bend") if iso is not None else None
    if not bend or not bend.get("accelerates") or "expected_loss" in rec.unreliable:
        return
    slopes, (lo, hi) = bend["local_slopes"], bend["curvature_interval"]
    rec.unreliable["expected_loss"] = (
        f"the budgets' optimal losses fall faster at larger budgets (d ln L / d ln C from {slopes[0]:.3f} to "
        f"{slopes[-1]:.3f}; curvature in ln C {bend['curvature']:.3g}, 95% [{lo:.3g}, {hi:.3g}]): the loss laws "
        "cannot bend that way, so they overpredict the loss beyond the fitted budgets")


def _place_measured_lr(rec: Recommendation, report: FitReport) -> None:
    """When the LR is a measured cell's optimum: if the sweep trained its isoFLOP models with a width rule lr ~
    d_model^-w (read from its runs: meta lr_width_exponent) and the cell's and the recommended widths are known, move
    the optimum to the recommended width by that rule (the cell's interval scaled at both ends of the recommended
    width's interval); otherwise it stays held constant, and a warning says how far the published law would drift."""
    cell = rec.diagnostics.get("lr_measured_cell")
    if not cell:
        return
    d_cell = _cell_width(report, cell)
    w, d_target = report.meta.get("lr_width_exponent"), rec.params.get("d_model")
    if not (w and d_target and d_cell):
        drift = float(PUBLISHED_LAWS["lr_opt"].predict(rec.budget) / PUBLISHED_LAWS["lr_opt"].predict(cell["C"]))
        rec.warnings.append(f"lr: held at the optimum measured at {cell['C']:.3g} FLOPs; the data do not say how it "
                            f"drifts with C (DeepSeek LLM's published exponent {DEEPSEEK_LR[1]} would scale it by "
                            f"x{drift:.2f} at this budget)")
        return
    runs = report.runs
    d_iv = rec.intervals.get("d_model")
    d_lo, d_hi = (d_iv.lo, d_iv.hi) if d_iv is not None and d_iv.determined else (d_target, d_target)
    lr_iv = rec.intervals["lr"]
    factor = (d_cell / d_target) ** w
    ends = [end * (d_cell / d) ** w for end in (lr_iv.lo, lr_iv.hi) for d in (d_lo, d_hi)]
    rec.params["lr"] *= factor
    rec.intervals["lr"] = dataclasses.replace(lr_iv, lo=min(ends), hi=max(ends), method="cell scan, moved by the "
                                              "sweep's width rule over d_model's interval")
    held = rec.sources["lr"]
    rec.sources["lr"] = (f"lr_opt measured at C = {cell['C']:.3g} FLOPs (compute-optimal cell, N = {cell['N']:.4g}, "
                         f"d_model {d_cell:.0f}), moved to d_model {d_target:.0f} by the sweep's width rule lr ~ "
                         f"d_model^-{w:g} (x{factor:.3g})")
    rec.fallbacks["lr"] = rec.fallbacks["lr"].replace(held, rec.sources["lr"])
    widths_run = runs["d_model"].dropna().astype(float)
    rec.warnings.append(f"lr: the optimum measured at {cell['C']:.3g} FLOPs (d_model {d_cell:.0f}) is moved to d_model "
                        f"{d_target:.0f} by the width rule the sweep trained its models with (lr ~ d_model^-{w:g}, "
                        f"read from its isoFLOP runs), x{factor:.3g}; the sweep tested that rule only over d_model "
                        f"{widths_run.min():.0f}-{widths_run.max():.0f}")


def _cell_width(report: FitReport, cell: dict) -> float | None:
    """d_model of the runs of the measured cell (its N at its budget), None when the runs do not record it."""
    runs = report.runs
    if "d_model" not in runs.columns or cell.get("N") is None:
        return None
    same = np.isclose(runs["N"].astype(float), cell["N"], rtol=1e-3) & np.isclose(runs["budget"].astype(float),
                                                                                  cell["C"], rtol=0.02)
    widths = runs.loc[same, "d_model"].dropna()
    return float(widths.mode().iloc[0]) if not widths.empty else None


def _round_batch(est: Estimate, seq_len: int | None) -> Estimate:
    """The batch size rounded to whole sequences of seq_len tokens (at least one), or to whole tokens."""
    unit = seq_len or 1

    def rounded(tokens):
        return np.maximum(np.round(np.asarray(tokens, dtype=float) / unit), 1) * unit

    return dataclasses.replace(est, point=float(rounded(est.point)), draws=rounded(est.draws))


def _steps(d: Estimate, batch: Estimate) -> Estimate:
    """ceil(D / batch), per draw; a quantity without draws is held at its point (and the method says so)."""
    if d.draws.size and batch.draws.size:
        m = min(d.draws.size, batch.draws.size)  # independent fits: pair draw i with draw i
        draws, method = d.draws[:m] / batch.draws[:m], f"{d.method} x {batch.method}"
    elif d.draws.size:
        draws, method = d.draws / batch.point, f"{d.method} (batch held at its point)"
    elif batch.draws.size:
        draws, method = d.point / batch.draws, f"{batch.method} (D held at its point)"
    else:
        draws, method = np.empty(0), "none"
    return Estimate(float(math.ceil(d.point / batch.point)), np.ceil(np.asarray(draws, dtype=float)), method,
                    "ceil(D / batch size)", "; ".join(filter(None, (d.unreliable, batch.unreliable))))


def _compare(rec: Recommendation, what: str, estimates: list[Estimate]) -> None:
    """Warn when two predictions of the same quantity disagree beyond their intervals."""
    if len(estimates) < 2:
        return
    a, b = estimates[0], estimates[1]
    ia, ib = a.interval(), b.interval()
    text = f"{what}: {a.source} gives {a.point:.4g} {describe(ia)}, {b.source} gives {b.point:.4g} {describe(ib)}"
    if ia.determined and ib.determined:
        if ia.hi < ib.lo or ib.hi < ia.lo:
            rec.warnings.append(f"{text}: they disagree beyond their intervals")
    elif abs(a.point / b.point - 1) > UNCHECKED_DISAGREEMENT:
        rec.warnings.append(f"{text}: they differ by {100 * abs(a.point / b.point - 1):.0f}% and without both "
                            "intervals the difference cannot be judged")


# ---------------------------------------------------------------- shape


def _add_shape(rec: Recommendation, report: FitReport, *, family, seq_len, vocab_size, param_count) -> None:
    """Fill n_layer, d_model, n_heads, d_ff from the shape ladder at N, when the family, vocab and context length
    are known (from the options or the fit's meta); otherwise say which options the shape needs."""
    meta = report.meta
    family = family or meta.get("family")
    seq_len = seq_len or meta.get("seq_len")
    vocab_size = vocab_size or meta.get("vocab_size")
    if param_count is not None and param_count not in PARAM_COUNTS:
        raise ConfigError("param_count", f"one of {PARAM_COUNTS}", param_count)
    count = param_count or meta["parameter_count"]
    rec.diagnostics["parameter_count"] = count
    missing = [opt for opt, v in (("--family", family), ("--vocab-size", vocab_size), ("--seq-len", seq_len),
                                  ("--param-count", count != UNSPECIFIED_COUNT)) if not v]
    if missing:
        rec.shape_note = (f"the shape needs {', '.join(missing)} (the fit's metadata does not say the model "
                          "family / vocabulary / context length / whether N counts embeddings)")
        return
    if family not in FAMILIES:
        raise ConfigError("family", f"one of {FAMILIES}", family)
    n = rec.params["N"]
    if n > MAX_PARAMS:
        rec.shape_note = f"N = {n:.3g} params is beyond the shape ladder's range (at most {MAX_PARAMS:.0e})"
        return
    ladder_count = count.replace("-", "_")
    ladder = meta["ladder"]

    def shape(params: float):
        return shape_for_params(max(params, 1.0), family, seq_len=int(seq_len), vocab_size=int(vocab_size),
                                count=ladder_count, **ladder)

    try:
        point = shape(n)
    except ConfigError as e:
        rec.shape_note = f"no shape within the ladder's tolerance of N = {n:.4g} ({e})"
        return
    shapes = [point]
    iv = rec.intervals["N"]
    if iv.determined:
        for end in iv:
            if end <= MAX_PARAMS:
                try:
                    shapes.append(shape(end))
                except ConfigError:  # an interval end the ladder cannot reach: that end has no shape
                    pass
    for key in ("n_layer", "d_model", "n_heads", "d_ff"):
        rec.params[key] = float(getattr(point, key))
        vals = sorted({float(getattr(cfg, key)) for cfg in shapes})
        rec.intervals[key] = (Interval(vals[0], vals[-1], iv.n_ok, iv.n_total, "shapes at the ends of N's interval")
                              if len(vals) > 1 else Interval.undetermined(
                                  "one shape across N's interval" if iv.determined else "N has no interval"))
    rec.params["N_shape"] = float(params_for_shape(point, ladder_count))
    rec.model = {key: getattr(point, key) for key in ("family", "n_layer", "d_model", "n_heads", "n_kv_heads",
                                                       "d_ff", "seq_len", "vocab_size")}
    rec.sources["shape"] = f"shape ladder at N ({ladder_count} params" + "".join(
        f", {k} {v}" for k, v in ladder.items()) + ")"


# ---------------------------------------------------------------- warnings


def _positive_budget(budget) -> float:
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ConfigError("budget", "a positive number of FLOPs", budget) from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("budget", "a positive number of FLOPs", budget)
    return value


def _range_warnings(budget: float, meta: dict) -> list[str]:
    """Budgets below the fitted range, and large / very strong extrapolation above it."""
    lowest, factor = min(meta["budgets"]), budget / meta["max_budget"]
    if budget < lowest * (1 - 1e-9):
        return [(f"budget {budget:.3g} FLOPs is below the fitted range ({lowest:.3g}..{meta['max_budget']:.3g}): "
                "the laws are extrapolated downward, where nothing was measured")]
    if factor > STRONG_EXTRAPOLATION:
        return [(f"very strong extrapolation: {factor:.3g}x the largest fitted budget (> {STRONG_EXTRAPOLATION:.0e}x); "
                "treat the recommendation as a rough guess")]
    if factor > LARGE_EXTRAPOLATION:
        return [f"large extrapolation: {factor:.3g}x the largest fitted budget (> {LARGE_EXTRAPOLATION:.0f}x)"]
    return []


def _diagnostic_warnings(report: FitReport) -> list[str]:
    out = []
    iso = report.fits.get("isoflop")
    if iso is not None and "flags" in iso.budgets:
        flagged = [f"{r['budget']:.3g} ({', '.join(r['flags'])})" for r in iso.budgets.to_dict("records")
                   if r["flags"]]
        if flagged:
            out.append("isoflop budgets flagged (excluded from the laws): " + "; ".join(flagged))
    for name, fit in report.fits.items():
        if not fit.success:
            out.append(f"{name} fit did not converge: {fit.message}".rstrip(": "))
    if report.backtest is not None:
        for row in report.backtest.held_out():
            for q, pred in row["predictions"].items():
                tol = BACKTEST_TOL.get(q, max(BACKTEST_TOL.values()))
                if abs(pred["rel_error"]) > tol:
                    where = {True: "; inside its 95% interval", False: "; OUTSIDE its 95% interval"}.get(
                        pred.get("inside"), "")
                    out.append(f"backtest: held-out budget {row['budget']:.3g} {q} predicted with "
                               f"{100 * pred['rel_error']:+.1f}% error (> {100 * tol:g}%{where})")
    return out
