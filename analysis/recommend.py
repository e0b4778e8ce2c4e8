"""Turn a fit (FitReport or the fit.json dict) into a concrete training recommendation for a FLOP budget.

Every quantity carries a 95% bootstrap interval obtained by pushing the stored bootstrap samples of the laws through
the same formulas as the point estimate:

- N (non-embedding params): approach 2 law N_opt(C) from `isoflop` if present, else the approach 3 allocation
  N_opt = G (C/k)^a with G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta), else the `envelope` law.
- D (tokens) = C / (k N), k from `meta.k` (C = k N D; 6 for the "6N" convention).
- batch size (tokens) and peak LR: `hyperparams` laws B_opt(C), lr_opt(C) when fitted, else the published DeepSeek LLM
  laws B_opt = 0.2920 C^0.3271 tokens, lr_opt = 0.3118 C^-0.1250 (flagged in `warnings`; no interval).
- steps = ceil(D / batch), warmup = warmup_frac * steps (the trainer's default warmup_frac is 0.05).
- expected loss: `loss_vs_compute` saturating law L(C) = E + A C^-gamma and/or the parametric L(N, D) at the
  recommended (N, D); both are reported when both exist (`expected_loss`, `expected_loss_parametric`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.result import FitResult, json_safe, percentile_interval
from scaling.errors import ConfigError

DEEPSEEK_BATCH = (0.2920, 0.3271)  # B_opt = 0.2920 C^0.3271 tokens (DeepSeek LLM 2024, C = M D)
DEEPSEEK_LR = (0.3118, -0.1250)  # lr_opt = 0.3118 C^-0.1250
LARGE_EXTRAPOLATION = 100.0
STRONG_EXTRAPOLATION = 1e4
WIDE_INTERVAL_RATIO = 4.0  # hi/lo above this on N, D, batch or lr is called wide
BACKTEST_TOL = 0.05  # backtest relative errors above this (loss, N_opt, D_opt) are warned about


@dataclass
class Recommendation(FitResult):
    """A recommended run for `budget` FLOPs. `params` holds the point estimates, `intervals` their 95% intervals."""

    budget: float = math.nan
    extrapolation_factor: float = math.nan  # budget / largest fitted budget
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # quantity -> which law produced it
    model: dict = field(default_factory=dict)  # the concrete ModelConfig as a dict
    name: str = "recommendation"

    def summary(self) -> str:
        p, iv = self.params, self.intervals
        conv = self.diagnostics.get("flop_convention", "6N")

        def row(key: str, label: str, fmt: str = ".4g") -> str:
            lo, hi = iv.get(key, (math.nan, math.nan))
            return f"  {label:<34s} {p[key]:{fmt}}   [{lo:{fmt}}, {hi:{fmt}}]"

        lines = [(f"recommendation for C = {self.budget:.3g} FLOPs ({conv}), "
                 f"{self.extrapolation_factor:.3g}x the largest fitted budget")]
        lines += [row("N", "N (non-embedding params)"), row("D", "D (tokens)")]
        lines.append(f"  {'shape':<34s} n_layer={p['n_layer']:.0f} d_model={p['d_model']:.0f} "
                     f"n_heads={p['n_heads']:.0f} d_ff={p['d_ff']:.0f} ({self.model.get('family', '?')}, "
                     f"N_shape = {p.get('N_shape', math.nan):.4g})")
        lines += [row("batch_size_tokens", "batch size (tokens)"), row("lr", "peak learning rate"),
                  row("steps", "steps", ".0f"), row("warmup_steps", "warmup steps", ".0f"),
                  row("expected_loss", "expected final loss (nats/token)")]
        if "expected_loss_parametric" in p:
            lines.append(row("expected_loss_parametric", "expected loss, parametric L(N, D)"))
        lines.append("  sources: " + ", ".join(f"{k} <- {v}" for k, v in self.sources.items()))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(json_safe({"budget": self.budget, "extrapolation_factor": self.extrapolation_factor,
                            "warnings": self.warnings, "sources": self.sources, "model": self.model}))
        return d


def recommend(fit, budget: float, *, family: str | None = None, seq_len: int | None = None,
              vocab_size: int | None = None, warmup_frac: float = 0.05) -> Recommendation:
    """Recommend N, D, shape, batch, LR, steps and expected loss for `budget` FLOPs (in the fit's convention).

    `fit` is a FitReport, its `to_dict()` (e.g. a reloaded fit.json) or a path to fit.json. The model family,
    context length and vocabulary come from the fit's meta unless given (defaults gpt2 / 256 / 256).
    """
    fit = _as_dict(fit)
    budget = _positive_budget(budget)
    meta = fit.get("meta", {}) or {}
    k = float(meta.get("k") or 6.0)
    warnings: list[str] = []
    sources: dict[str, str] = {}
    values: dict[str, tuple[float, np.ndarray]] = {}

    values["N"], sources["N"] = _n_opt(fit, budget, k)
    n_point, n_samples = values["N"]
    values["D"] = (budget / (k * n_point), budget / (k * n_samples))
    sources["D"] = f"C / ({k:.4g} N)"

    hp = fit.get("hyperparams") or {}
    for key, law_name, fallback, label in (("batch_size_tokens", "batch_opt", DEEPSEEK_BATCH, "batch size"),
                                           ("lr", "lr_opt", DEEPSEEK_LR, "learning rate")):
        law = _law(hp.get(law_name))
        if law is not None:
            values[key], sources[key] = _eval_law(law, budget), f"hyperparams.{law_name}"
        else:
            coef, exponent = fallback
            values[key] = (coef * budget ** exponent, np.empty(0))
            sources[key] = f"DeepSeek LLM fallback {coef} C^{exponent}"
            warnings.append(f"{label}: no fitted law; using the published DeepSeek LLM law {coef}*C^{exponent} "
                            "(fitted with C = non-embedding FLOPs/token x tokens; no interval)")

    seq = int(seq_len or meta.get("seq_len") or 256)
    values["batch_size_tokens"] = tuple(_round_batch(v, seq) for v in values["batch_size_tokens"])
    d_point, d_samples = values["D"]
    b_point, b_samples = values["batch_size_tokens"]
    values["steps"] = (math.ceil(d_point / b_point), np.ceil(_paired_ratio(d_samples, b_samples, d_point, b_point)))
    values["warmup_steps"] = tuple(np.round(warmup_frac * np.asarray(v)) for v in values["steps"])
    sources["steps"] = "ceil(D / batch size)"
    sources["warmup_steps"] = f"{warmup_frac:g} x steps"

    loss_values, loss_sources = _expected_losses(fit, budget, n_point, d_point)
    if not loss_values:
        raise ConfigError("fit", "a loss_vs_compute, parametric, isoflop or envelope law to predict the loss")
    values.update(loss_values)
    sources.update(loss_sources)

    params = {key: float(v[0]) for key, v in values.items()}
    intervals = {key: _interval(point, samples) for key, (point, samples) in values.items()}
    for key in ("steps", "warmup_steps"):  # counts: widen the interval to whole steps
        intervals[key] = (float(math.floor(intervals[key][0])), float(math.ceil(intervals[key][1])))
    rec = Recommendation(params=params, intervals=intervals, budget=budget, sources=sources, name="recommendation",
                         n_boot=max((len(s) for _, s in values.values()), default=0))
    rec.diagnostics["flop_convention"] = meta.get("flop_convention", "6N")
    rec.diagnostics["k"] = k
    _add_shape(rec, family or meta.get("family") or "gpt2", seq, int(vocab_size or meta.get("vocab_size") or 256),
               count="total" if meta.get("parameter_count") == "total" else "non_embedding",
               ladder=meta.get("ladder") or {})
    max_budget = meta.get("max_budget")
    rec.extrapolation_factor = budget / float(max_budget) if max_budget else math.nan
    rec.warnings = _extrapolation_warnings(rec.extrapolation_factor) + warnings + _diagnostic_warnings(fit, rec)
    return rec


def _as_dict(fit) -> dict:
    if isinstance(fit, (str, Path)):
        path = Path(fit)
        if not path.is_file():
            raise ConfigError("fit", "a fit.json file written by `scaling fit`", str(path))
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(str(path), f"valid JSON ({e})") from e
    if hasattr(fit, "to_dict"):
        return fit.to_dict()
    if isinstance(fit, dict):
        return fit
    raise ConfigError("fit", "a FitReport, a fit.json dict or a path to fit.json", type(fit).__name__)


def _positive_budget(budget) -> float:
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ConfigError("budget", "a positive number of FLOPs", budget) from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("budget", "a positive number of FLOPs", budget)
    return value


def _law(d) -> dict | None:
    """A law object {coef, exponent, samples} or None when absent / not finite."""
    if not isinstance(d, dict) or d.get("coef") is None or d.get("exponent") is None:
        return None
    return d


def _samples(d: dict, n_cols: int) -> np.ndarray:
    s = d.get("samples")
    if not s:
        return np.empty((0, n_cols))
    arr = np.asarray(s, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < n_cols:
        return np.empty((0, n_cols))
    return arr[:, :n_cols]


def _eval_law(law: dict, x: float) -> tuple[float, np.ndarray]:
    """coef * x^exponent at the point estimate and for every bootstrap draw."""
    s = _samples(law, 2)
    return float(law["coef"]) * x ** float(law["exponent"]), s[:, 0] * x ** s[:, 1]


def parametric_allocation(E, A, B, alpha, beta, compute, k: float = 6.0):
    """Compute-optimal N under C = k N D for L = E + A N^-alpha + B D^-beta (arrays broadcast)."""
    del E
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    return G * (compute / k) ** (beta / (alpha + beta))


def _n_opt(fit: dict, budget: float, k: float) -> tuple[tuple[float, np.ndarray], str]:
    iso_law = _law((fit.get("isoflop") or {}).get("N_opt"))
    if iso_law is not None:
        return _eval_law(iso_law, budget), "isoflop.N_opt (approach 2)"
    par = fit.get("parametric")
    if par and all(par.get(key) is not None for key in ("E", "A", "B", "alpha", "beta")):
        point = parametric_allocation(*(float(par[key]) for key in ("E", "A", "B", "alpha", "beta")), budget, k)
        s = _samples(par, 5)
        return (float(point), parametric_allocation(*s.T, budget, k)), "parametric allocation (approach 3)"
    env_law = _law((fit.get("envelope") or {}).get("N_opt"))
    if env_law is not None:
        return _eval_law(env_law, budget), "envelope.N_opt (approach 1)"
    raise ConfigError("fit", "an isoflop, parametric or envelope fit to choose N (none is in the fit)")


def _expected_losses(fit: dict, budget: float, n: float, d: float) -> tuple[dict, dict]:
    values, sources = {}, {}
    sat = fit.get("loss_vs_compute")
    if sat and all(sat.get(key) is not None for key in ("E", "A", "gamma")):
        s = _samples(sat, 3)
        point = float(sat["E"]) + float(sat["A"]) * budget ** -float(sat["gamma"])
        values["expected_loss"] = (point, s[:, 0] + s[:, 1] * budget ** -s[:, 2])
        sources["expected_loss"] = "loss_vs_compute (L = E + A C^-gamma)"
    par = fit.get("parametric")
    if par and all(par.get(key) is not None for key in ("E", "A", "B", "alpha", "beta")):
        E, A, B, alpha, beta = (float(par[key]) for key in ("E", "A", "B", "alpha", "beta"))
        s = _samples(par, 5)
        pair = (E + A * n ** -alpha + B * d ** -beta, s[:, 0] + s[:, 1] * n ** -s[:, 3] + s[:, 2] * d ** -s[:, 4])
        key = "expected_loss_parametric" if values else "expected_loss"
        values[key], sources[key] = pair, "parametric L(N, D) at the recommended N, D"
    for name in ("isoflop", "envelope"):
        law = _law((fit.get(name) or {}).get("L_opt"))
        if not values and law is not None:
            values["expected_loss"], sources["expected_loss"] = _eval_law(law, budget), f"{name}.L_opt power law"
    return values, sources


def _round_batch(tokens, seq_len: int):
    """Round a batch size in tokens to whole sequences (at least one)."""
    return np.maximum(np.round(np.asarray(tokens, dtype=float) / seq_len), 1) * seq_len


def _paired_ratio(num: np.ndarray, den: np.ndarray, num_point: float, den_point: float) -> np.ndarray:
    """num/den per bootstrap draw; a quantity without draws is held at its point estimate."""
    if num.size == 0 and den.size == 0:
        return np.empty(0)
    if num.size == 0:
        return num_point / den
    if den.size == 0:
        return num / den_point
    n = min(num.size, den.size)  # independent fits: pair draw i with draw i
    return num[:n] / den[:n]


def _interval(point: float, samples) -> tuple[float, float]:
    """95% percentile interval of the draws, widened to contain the point estimate (point, point without draws)."""
    lo, hi = percentile_interval(samples) if np.size(samples) else (point, point)
    if not math.isfinite(lo):
        lo, hi = point, point
    return (min(lo, point), max(hi, point))


def _add_shape(rec: Recommendation, family: str, seq_len: int, vocab_size: int, count: str = "non_embedding",
               ladder: dict | None = None) -> None:
    """Fill n_layer, d_model, n_heads, d_ff from the shape ladder at N (interval: shapes at the N interval ends).

    count: what N counts ("non_embedding" or "total"); ladder: n_layer / head_dim every fitted run shared (kept, so
    the shape stays in the family the laws were fitted on)."""
    from scaling.ladder import params_for_shape, shape_for_params

    def shape(n: float):
        return shape_for_params(max(float(n), 1.0), family, seq_len=seq_len, vocab_size=vocab_size, count=count,
                                **(ladder or {}))

    point = shape(rec.params["N"])
    shapes = [point]
    for n in rec.intervals["N"]:
        try:
            shapes.append(shape(n))
        except ConfigError:  # an interval end outside the ladder's range: keep the point shape there
            shapes.append(point)
    for key in ("n_layer", "d_model", "n_heads", "d_ff"):
        vals = [float(getattr(cfg, key)) for cfg in shapes]
        rec.params[key] = vals[0]
        rec.intervals[key] = (min(vals), max(vals))
    rec.params["N_shape"] = float(params_for_shape(shapes[0], count))
    rec.model = {key: getattr(shapes[0], key) for key in ("family", "n_layer", "d_model", "n_heads", "n_kv_heads",
                                                           "d_ff", "seq_len", "vocab_size")}
    rec.sources["shape"] = f"scaling.ladder.shape_for_params(N, count={count!r}, {ladder or {}})"


def _extrapolation_warnings(factor: float) -> list[str]:
    if not math.isfinite(factor):
        return ["extrapolation factor unknown (the fit has no meta.max_budget)"]
    if factor > STRONG_EXTRAPOLATION:
        return [(f"very strong extrapolation: {factor:.3g}x the largest fitted budget (> {STRONG_EXTRAPOLATION:.0e}x); "
                "treat the recommendation as a rough guess")]
    if factor > LARGE_EXTRAPOLATION:
        return [f"large extrapolation: {factor:.3g}x the largest fitted budget (> {LARGE_EXTRAPOLATION:.0f}x)"]
    return []


def _diagnostic_warnings(fit: dict, rec: Recommendation) -> list[str]:
    out = []
    iso = fit.get("isoflop") or {}
    flagged = [f"{b.get('budget', math.nan):.3g} ({', '.join(b['flags'])})" for b in iso.get("budgets") or []
               if b.get("flags")]
    if flagged:
        out.append("isoflop budgets flagged (excluded from the laws): " + "; ".join(flagged))
    for name in ("parametric", "isoflop", "loss_vs_compute", "hyperparams", "envelope"):
        member = fit.get(name)
        if isinstance(member, dict) and member.get("success") is False:
            out.append(f"{name} fit did not converge: {member.get('message', '')}".rstrip(": "))
    for key in ("N", "D", "batch_size_tokens", "lr"):
        lo, hi = rec.intervals[key]
        if lo > 0 and hi / lo > WIDE_INTERVAL_RATIO:
            out.append(f"wide interval on {key}: [{lo:.3g}, {hi:.3g}] spans {hi / lo:.1f}x")
    for row in (fit.get("backtest") or {}).get("rows") or []:
        for q in ("loss", "N_opt", "D_opt"):
            err = row.get(f"{q}_rel_error")
            if err is not None and abs(err) > BACKTEST_TOL:
                out.append(f"backtest: held-out budget {row.get('budget', math.nan):.3g} {q} predicted with "
                           f"{100 * err:+.1f}% error (> {100 * BACKTEST_TOL:.0f}%)")
    return out
