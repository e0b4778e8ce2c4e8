"""Hyperparameter scaling laws: the loss-optimal learning rate and batch size per FLOP budget, and their power
laws lr_opt(C), B_opt(C); plus the Step-Law form lr = c·N^p·D^q.

Units: lr is the peak learning rate, batch_size in tokens, C in FLOPs, N in params, D in tokens. Logs are base 10.
Per budget the optimum comes from either
  "quadratic": a quadratic surface of loss in (log lr, log B) (a parabola in log lr when the budget has fewer
               than 3 batch sizes; then the batch size is that of the lowest-loss run), or
  "within":    the geometric mean of lr and B over the runs within `tolerance` (relative) of the best loss
               (the DeepSeek / Step-Law near-optimal rule).
Bootstrap: resample runs with replacement inside each budget and redo the optima and the laws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.data import budgets_of, require_columns
from analysis.isoflop import parabola_batch, vertex
from analysis.powerlaw import (
    PowerLawFit,
    bootstrap_counts,
    power_law_result,
    round_samples,
    samples_summary,
    summary_lines,
    weighted_line,
)
from analysis.result import FitResult, json_safe
from scaling.errors import ConfigError

FLAGS = ("edge_lr", "edge_batch", "not_convex", "too_few_points")


def quadratic_surface_batch(u: np.ndarray, v: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Coefficients of y ≈ c0 + c1·u + c2·v + c3·u² + c4·v² + c5·u·v for each row of weights W (B x n).

    Rows whose weighted design has rank < 6 give NaN. Center u, v beforehand.
    """
    X = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=1)
    XtWX = np.einsum("bn,ni,nj->bij", W, X, X)
    XtWy = np.einsum("bn,ni,n->bi", W, X, y)
    s = np.linalg.svd(XtWX, compute_uv=False)
    ok = s[:, -1] > 1e-10 * np.maximum(s[:, 0], 1e-300)
    out = np.full((len(W), 6), np.nan)
    if ok.any():
        out[ok] = np.linalg.solve(XtWX[ok], XtWy[ok][..., None])[..., 0]
    return out


def surface_minimum(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u*, v*, y*) at the stationary point of each quadratic surface; NaN unless it is a minimum."""
    h11, h22, h12 = 2 * c[..., 3], 2 * c[..., 4], c[..., 5]
    det = h11 * h22 - h12 * h12
    convex = (h11 > 0) & (det > 0)
    safe = np.where(convex, det, 1.0)
    us = np.where(convex, -(h22 * c[..., 1] - h12 * c[..., 2]) / safe, np.nan)
    vs = np.where(convex, -(-h12 * c[..., 1] + h11 * c[..., 2]) / safe, np.nan)
    ys = c[..., 0] + 0.5 * (c[..., 1] * us + c[..., 2] * vs)
    return us, vs, ys


def _within(u, v, y, W, tolerance):
    """Geometric-mean optimum (u, v, y_best) of runs within tolerance of the best loss, for each row of W."""
    drawn = W > 0
    best = np.where(drawn, y, np.inf).min(1)
    near = drawn & (y[None, :] <= best[:, None] * (1 + tolerance))
    wn = np.where(near, W, 0.0)
    return (wn * u).sum(1) / wn.sum(1), (wn * v).sum(1) / wn.sum(1), best


@dataclass
class _Optimum:
    budget: float
    u: float
    v: float
    loss: float
    boot_u: np.ndarray
    boot_v: np.ndarray
    flags: list[str]
    n_points: int
    n_lr: int
    n_batch: int
    varies_batch: bool
    coef: list[float]
    center: tuple[float, float]


def _inside_grid(draws: np.ndarray, x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Bootstrap optima bounded by what the grid can tell: a vertex beyond the grid is moved to its edge, and a
    resample with no minimum (not convex) gives the x of its best run. Runs cannot locate an optimum outside the
    values they tried; without this a nearly flat resample puts the optimum at 1e18 and the interval is meaningless."""
    draws = np.clip(np.asarray(draws, float), x.min(), x.max())
    bad = ~np.isfinite(draws)
    if bad.any():
        best = np.argmin(np.where(W[bad] > 0, y, np.inf), axis=1)
        draws[bad] = x[best]
    return draws


def _budget_optimum(budget, u, v, y, counts, method, tolerance) -> _Optimum:
    """Optimum (log10 lr, log10 B) of one budget with flags and bootstrap draws."""
    n_lr, n_b = np.unique(u).size, np.unique(v).size
    mu, mv = float(u.mean()), float(v.mean())
    best = int(np.argmin(y))
    flags: list[str] = []
    W = counts.astype(float)
    coef: list[float] = []
    two_d = n_b >= 3 if method == "quadratic" else n_b >= 2
    if method == "within":
        ou, ov, oy = (float(a[0]) for a in _within(u, v, y, np.ones((1, y.size)), tolerance))
        bu, bv, _ = _within(u, v, y, W, tolerance) if len(W) else (np.empty(0), np.empty(0), None)
        if n_lr < 2:
            flags.append("too_few_points")
    elif two_d:
        c = quadratic_surface_batch(u - mu, v - mv, y, np.ones((1, y.size)))
        coef = [float(a) for a in c[0]]
        us, vs, ys = surface_minimum(c)
        ou, ov, oy = float(us[0] + mu), float(vs[0] + mv), float(ys[0])
        if y.size < 6 or n_lr < 3 or not np.isfinite(c).all():
            flags.append("too_few_points")
        elif not np.isfinite(ou):
            flags.append("not_convex")
        bus, bvs, _ = surface_minimum(quadratic_surface_batch(u - mu, v - mv, y, W)) if len(W) else (
            np.empty(0), np.empty(0), None)
        bu, bv = bus + mu, bvs + mv
    else:  # 1-D scan in lr at the batch size of the best run
        at = v == v[best]
        c = parabola_batch(u[at] - mu, y[at], np.ones((1, int(at.sum()))))
        coef = [float(a) for a in c[0]]
        xv, yv = vertex(c[0], mu)
        ou, ov, oy = float(xv), float(v[best]), float(yv)
        if np.unique(u[at]).size < 3:
            flags.append("too_few_points")
        elif not np.isfinite(ou):
            flags.append("not_convex")
        bu = vertex(parabola_batch(u[at] - mu, y[at], W[:, at]), mu)[0] if len(W) else np.empty(0)
        bv = np.full(len(W), float(v[best]))
    if len(W) and method != "within":
        bu, bv = _inside_grid(bu, u, y, W), _inside_grid(bv, v, y, W)
    if not np.isfinite(ou):  # no usable surface: report the best run, flagged above
        ou, ov, oy = float(u[best]), float(v[best]), float(y[best])
    if u[best] in (u.min(), u.max()) or not (u.min() <= ou <= u.max()):
        flags.append("edge_lr")
    if n_b >= 2 and (v[best] in (v.min(), v.max()) or not (v.min() <= ov <= v.max())):
        flags.append("edge_batch")
    return _Optimum(budget=budget, u=ou, v=ov, loss=oy, boot_u=np.asarray(bu, float), boot_v=np.asarray(bv, float),
                    flags=flags, n_points=int(y.size), n_lr=int(n_lr), n_batch=int(n_b),
                    varies_batch=bool(two_d), coef=coef, center=(mu, mv))


@dataclass(repr=False, eq=False)
class StepLawFit(FitResult):
    """lr = c·N^p·D^q (N in params, D in tokens) fitted to near-optimal runs; samples (n_boot x 3) of (c, p, q)."""

    samples: np.ndarray | None = None

    def predict(self, N, D):
        """Learning rate c·N^p·D^q."""
        p = self.params
        return p["c"] * np.asarray(N, float) ** p["p"] * np.asarray(D, float) ** p["q"]

    def summary(self) -> str:
        p = self.params
        head = f"{self.name}: lr = {p['c']:.4g} · N^{p['p']:.4f} · D^{p['q']:.4f} (N in params, D in tokens)"
        return "\n".join(summary_lines(self, head, ["n_runs", "n_groups", "rmse_log"]))

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["samples"] = round_samples(self.samples)
        return d


@dataclass(repr=False, eq=False)
class HyperparamFit(FitResult):
    """Optimal-hyperparameter laws. params: lr_coef, lr_exponent (+ batch_coef, batch_exponent when fitted).

    .budgets: per-budget optima (lr_opt, batch_opt with 95% intervals, flags, surface coefficients);
    .lr_opt, .batch_opt (None when fewer than 2 budgets vary the batch size): PowerLawFit in C [FLOPs];
    .steplaw: StepLawFit or None when N and D do not vary independently; .samples (n_boot x n_params).
    """

    budgets: pd.DataFrame = field(default_factory=pd.DataFrame)
    lr_opt: PowerLawFit | None = None
    batch_opt: PowerLawFit | None = None
    steplaw: StepLawFit | None = None
    samples: np.ndarray | None = None

    def predict(self, C) -> dict:
        """Optimal peak lr and batch size [tokens] at C [FLOPs] (batch_size None without a batch law)."""
        return {"lr": self.lr_opt.predict(C),
                "batch_size": None if self.batch_opt is None else self.batch_opt.predict(C)}

    def summary(self) -> str:
        head = f"{self.name} ({self.diagnostics.get('method')}): lr in peak learning rate, batch in tokens, C in FLOPs"
        lines = summary_lines(self, head, ["n_budgets", "n_used_lr", "n_used_batch", "tolerance"])
        lines.append("  per budget:      C [FLOPs]   lr_opt (95% CI)                  batch_opt [tokens]   flags")
        for r in self.budgets.itertuples():
            lines.append(f"    {r.budget:14.4g}   {r.lr_opt:.4g} [{r.lr_lo:.3g}, {r.lr_hi:.3g}]   "
                         f"{r.batch_opt:12.4g} [{r.batch_lo:.3g}, {r.batch_hi:.3g}]   {','.join(r.flags) or '-'}")
        for law in (self.lr_opt, self.batch_opt, self.steplaw):
            if law is not None:
                lines.append("  " + law.summary().splitlines()[0])
        if self.steplaw is None and self.diagnostics.get("steplaw"):
            lines.append(f"  Step-Law form: {self.diagnostics['steplaw']}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["samples"] = round_samples(self.samples)
        d["budgets"] = json_safe(self.budgets.to_dict(orient="records"))
        for name in ("lr_opt", "batch_opt", "steplaw"):
            law = getattr(self, name)
            d[name] = None if law is None else law.to_dict()
        return d


def _interval(samples: np.ndarray) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size < 2:
        return (np.nan, np.nan)
    lo, hi = np.percentile(s, [2.5, 97.5])
    return (10 ** lo, 10 ** hi)


def _budget_table(opts: list[_Optimum], method: str) -> pd.DataFrame:
    rows = []
    for o in opts:
        lr_lo, lr_hi = _interval(o.boot_u)
        b_lo, b_hi = _interval(o.boot_v) if o.varies_batch else (np.nan, np.nan)
        rows.append({"budget": o.budget, "lr_opt": 10 ** o.u, "lr_lo": lr_lo, "lr_hi": lr_hi,
                     "batch_opt": 10 ** o.v, "batch_lo": b_lo, "batch_hi": b_hi, "loss_opt": o.loss,
                     "n_points": o.n_points, "n_lr": o.n_lr, "n_batch": o.n_batch, "flags": list(o.flags),
                     "method": method, "surface_coef": o.coef, "center_log10_lr_batch": list(o.center)})
    return pd.DataFrame(rows)


def _law(opts, key: str, n_boot: int, name: str, y_name: str) -> PowerLawFit:
    C = np.array([o.budget for o in opts])
    est = np.array([getattr(o, key) for o in opts])
    samples = None
    if n_boot:
        boot = np.stack([getattr(o, f"boot_{key}") for o in opts], 1)
        bi, bs = weighted_line(np.log10(C), boot, np.ones_like(boot))
        samples = np.column_stack([10 ** bi, bs])
    i0, s0 = weighted_line(np.log10(C), est, np.ones(len(opts)))
    return power_law_result(C, 10 ** est, float(10 ** i0), float(s0), samples, name=name, x_name="C [FLOPs]",
                            y_name=y_name, bootstrap="runs within budgets")


def fit_steplaw(df: pd.DataFrame, *, tolerance: float = 0.0025, n_boot: int = 1000, seed: int = 0) -> StepLawFit:
    """lr = c·N^p·D^q by least squares of log lr on (log N, log D) over near-optimal runs.

    Runs are grouped by (N, D); in each group the runs within `tolerance` of the group's best loss are
    near-optimal. Needs (log N, log D) to vary independently across groups (rank 3), else ConfigError.
    Bootstrap resamples the near-optimal runs.
    """
    require_columns(df, ["N", "D", "lr", "loss"], "Step-Law lr(N, D)")
    key = np.round(np.log10(df["N"].to_numpy(float)), 3) * 1e4 + np.round(np.log10(df["D"].to_numpy(float)), 3)
    loss = df["loss"].to_numpy(float)
    near = np.zeros(len(df), bool)
    for g in np.unique(key):
        m = key == g
        near |= m & (loss <= loss[m].min() * (1 + tolerance))
    sub = df[near]
    X = np.column_stack([np.ones(len(sub)), np.log10(sub["N"].to_numpy(float)), np.log10(sub["D"].to_numpy(float))])
    y = np.log10(sub["lr"].to_numpy(float))
    n_groups = np.unique(key[near]).size
    if n_groups < 3 or np.linalg.matrix_rank(X) < 3:
        raise ConfigError("Step-Law lr(N, D)", "near-optimal runs at >= 3 (N, D) pairs where N and D vary "
                          "independently (not one D per N)", f"{n_groups} pairs, rank {np.linalg.matrix_rank(X)}")
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    samples = None
    if n_boot:
        W = bootstrap_counts(len(sub), n_boot, seed).astype(float)
        A = np.einsum("bn,ni,nj->bij", W, X, X)
        rhs = np.einsum("bn,ni,n->bi", W, X, y)
        s = np.linalg.svd(A, compute_uv=False)
        ok = s[:, -1] > 1e-10 * s[:, 0]
        bb = np.full((n_boot, 3), np.nan)
        bb[ok] = np.linalg.solve(A[ok], rhs[ok][..., None])[..., 0]
        samples = np.column_stack([10 ** bb[:, 0], bb[:, 1], bb[:, 2]])
    params = {"c": float(10 ** beta[0]), "p": float(beta[1]), "q": float(beta[2])}
    intervals, stderr = samples_summary(samples, list(params))
    rmse = float(np.sqrt(np.mean((y - X @ beta) ** 2)) * np.log(10))
    return StepLawFit(params=params, intervals=intervals, stderr=stderr, n_boot=n_boot,
                      diagnostics={"n_runs": len(sub), "n_groups": int(n_groups), "rmse_log": rmse,
                                   "tolerance": tolerance}, samples=samples, name="Step-Law lr(N, D)")


def fit_hyperparams(df: pd.DataFrame, *, method: str = "quadratic", tolerance: float = 0.0025, n_boot: int = 1000,
                    seed: int = 0) -> HyperparamFit:
    """Per-budget optimal lr and batch size [tokens], then lr_opt(C) and B_opt(C) power laws across budgets.

    df: runs with lr, batch_size (tokens), loss and budget (or C). Flags per budget: edge_lr / edge_batch (best
    run or optimum at the edge of the grid), not_convex, too_few_points (quadratic needs >= 3 lr values, and
    >= 6 runs for a surface). Flagged budgets are left out of the law they concern; lr_opt needs >= 2 budgets,
    B_opt is fitted only when >= 2 unflagged budgets vary the batch size. The Step-Law form is added when N and
    D vary independently (see fit_steplaw); otherwise diagnostics["steplaw"] says why not.
    """
    require_columns(df, ["lr", "batch_size", "loss"], "hyperparams")
    if method not in ("quadratic", "within"):
        raise ConfigError("method", '"quadratic" or "within"', method)
    if not tolerance > 0:
        raise ConfigError("tolerance", "a positive relative loss tolerance (e.g. 0.0025 = 0.25%)", tolerance)
    df = df.copy(deep=False)
    df.attrs = {}
    for col in ("lr", "batch_size", "loss"):
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(vals) & (vals > 0)):
            raise ConfigError(f"hyperparams: column {col}", "positive finite values",
                              f"{int((~(np.isfinite(vals) & (vals > 0))).sum())} bad rows")
    budget = budgets_of(df, need=2, what="hyperparameter laws across budgets")
    u, v = np.log10(df["lr"].to_numpy(float)), np.log10(df["batch_size"].to_numpy(float))
    y = df["loss"].to_numpy(float)
    counts = bootstrap_counts(len(df), n_boot, seed, strata=budget)
    opts = [_budget_optimum(float(c), u[budget == c], v[budget == c], y[budget == c], counts[:, budget == c],
                            method, tolerance) for c in np.unique(budget)]
    lr_ok = [o for o in opts if not {"edge_lr", "not_convex", "too_few_points"} & set(o.flags)]
    b_ok = [o for o in opts if o.varies_batch and not {"edge_batch", "not_convex", "too_few_points"} & set(o.flags)]
    if len(lr_ok) < 2:
        raise ConfigError("hyperparams budgets", "at least 2 budgets whose lr optimum is interior to an lr grid of "
                          ">= 3 values", {f"{o.budget:.3g}": o.flags for o in opts if o.flags})
    lr_law = _law(lr_ok, "u", n_boot, "lr_opt(C)", "lr_opt")
    b_law = _law(b_ok, "v", n_boot, "B_opt(C)", "B_opt [tokens]") if len(b_ok) >= 2 else None
    params = {"lr_coef": lr_law.params["coef"], "lr_exponent": lr_law.params["exponent"]}
    cols = [lr_law.samples] if n_boot else []
    if b_law is not None:
        params.update(batch_coef=b_law.params["coef"], batch_exponent=b_law.params["exponent"])
        if n_boot:
            cols.append(b_law.samples)
    samples = np.column_stack(cols) if cols else None
    intervals, stderr = samples_summary(samples, list(params))
    diagnostics = {"method": method, "tolerance": tolerance, "n_budgets": len(opts), "n_used_lr": len(lr_ok),
                   "n_used_batch": len(b_ok), "bootstrap": "runs within budgets",
                   "flagged": {f"{o.budget:.4g}": o.flags for o in opts if o.flags}}
    steplaw = None
    if "N" in df.columns and "D" in df.columns:
        try:
            steplaw = fit_steplaw(df, tolerance=tolerance, n_boot=n_boot, seed=seed)
        except ConfigError as err:
            diagnostics["steplaw"] = f"not fitted: {err}"
    else:
        diagnostics["steplaw"] = "not fitted: needs N and D columns"
    return HyperparamFit(params=params, intervals=intervals, stderr=stderr, n_boot=n_boot, diagnostics=diagnostics,
                         name="hyperparameter laws", budgets=_budget_table(opts, method), lr_opt=lr_law,
                         batch_opt=b_law, steplaw=steplaw, samples=samples)
