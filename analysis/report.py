"""Fit every law the runs allow (`fit_all` -> FitReport -> fit.json) and write a readable report (`write_report`).

fit.json members (docs/design.md): `meta`, `parametric` (approach 3), `isoflop` (approach 2), `envelope`
(approach 1), `loss_vs_compute` (L(C) = E + A C^-gamma on per-budget optimal losses), `hyperparams` (lr/batch laws),
`backtest`, `convention_sensitivity`; each present when the data allows. `meta.skipped` says why a law is absent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.result import FitResult, json_safe
from analysis.selection import budget_optima, hyperparam_runs, select_size_runs
from scaling.errors import ConfigError

LAWS = ("isoflop", "loss_vs_compute", "parametric", "envelope", "hyperparams")
LAW_ALIASES = {"loss": "loss_vs_compute", "approach1": "envelope", "approach2": "isoflop", "approach3": "parametric"}
CONVENTIONS = ("6N", "6N_total", "exact", "exact_causal", "deepseek")  # scaling.accounting.CONVENTIONS
RUN_COLUMNS = ("run_id", "kind", "N", "D", "C", "loss", "budget", "lr", "batch_size")
DEFAULT_TARGET_FACTOR = 100.0  # target budget = this x the largest fitted budget when none is given


@dataclass
class FitReport:
    """Everything fitted from one set of runs. `fits` maps a law name (see LAWS) to its FitResult."""

    meta: dict
    fits: dict[str, FitResult] = field(default_factory=dict)
    backtest: FitResult | None = None
    convention_sensitivity: pd.DataFrame | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # law -> why it was not fitted
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __getattr__(self, item):
        fits = self.__dict__.get("fits", {})
        if item in fits:
            return fits[item]
        raise AttributeError(item)

    def summary(self) -> str:
        m = self.meta
        lines = [(f"{m['n_runs']} runs ({m['n_excluded']} excluded), {len(m['budgets'])} budgets "
                 f"{_fmt(min(m['budgets']))}..{_fmt(m['max_budget'])} FLOPs ({m['flop_convention']}, k = {m['k']:.4g})")]
        for fit in self.fits.values():
            lines.append(fit.summary())
        if self.backtest is not None:
            lines.append(self.backtest.summary())
        if self.convention_sensitivity is not None:
            lines.append("convention sensitivity (approach 2 refit per FLOP/parameter convention):")
            lines.append(self.convention_sensitivity.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        lines += [f"skipped {law}: {why}" for law, why in self.skipped.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = {"meta": json_safe({**self.meta, "skipped": self.skipped})}
        for law in LAWS:
            if law in self.fits:
                d[law] = self.fits[law].to_dict()
        if self.backtest is not None:
            d["backtest"] = self.backtest.to_dict()
        if self.convention_sensitivity is not None:
            d["convention_sensitivity"] = json_safe({
                "target_budget": self.meta.get("target_budget"),
                "rows": self.convention_sensitivity.to_dict("records"),
                **_sensitivity_spread(self.convention_sensitivity)})
        return json_safe(d)  # NaN/inf (e.g. an overflowed bootstrap draw) become null


def fit_all(source, *, laws="all", n_boot: int = 1000, seed: int = 0, columns: dict[str, str] | None = None,
            backtest: bool = True, target_budget: float | None = None, drop_highest_loss: int = 0,
            parametric_n_boot: int | None = None, window: float | None = None) -> FitReport:
    """Fit every law in `laws` ("all" or a list from LAWS; "loss" means loss_vs_compute) that the runs allow.

    source: DataFrame, CSV/Parquet path or sweep results dir (analysis.load_runs; `columns` maps canonical names to
    source columns). Requirements: parametric >= 5 runs; isoflop >= 2 budgets with >= 3 runs each; loss_vs_compute
    >= 4 budgets (per-budget optimal loss: parabola vertex, or lowest loss where the parabola is flagged);
    envelope per-checkpoint metrics; hyperparams a budget with >= 3 learning rates. A law the data does not allow is
    listed in `skipped` with the reason. drop_highest_loss: drop the K highest-loss runs first (Epoch AI drop 5 of
    the Chinchilla points). target_budget (FLOPs) is where the convention-sensitivity table compares allocations
    (default 100x the largest budget). parametric_n_boot overrides n_boot for the (slow) approach 3 bootstrap.
    """
    from analysis.data import load_runs

    wanted = _parse_laws(laws)
    df = load_runs(source, columns)
    excluded = list(df.attrs.get("excluded", []))
    df, dropped = _drop_highest_loss(df, drop_highest_loss)
    excluded += dropped
    meta = _meta(df, excluded, target_budget)
    size_runs = select_size_runs(df)
    report = FitReport(meta=meta, runs=df)

    def attempt(law: str, fn):
        if law not in wanted:
            return
        try:
            report.fits[law] = fn()
        except ConfigError as e:
            report.skipped[law] = str(e)

    attempt("isoflop", lambda: _fit_isoflop(size_runs, n_boot, seed, window, meta["k"]))
    attempt("loss_vs_compute", lambda: _fit_loss_vs_compute(size_runs, report.fits.get("isoflop"), n_boot, seed))
    attempt("parametric", lambda: _fit_parametric(size_runs, meta["k"], n_boot if parametric_n_boot is None
                                                  else parametric_n_boot, seed))
    attempt("envelope", lambda: _fit_envelope(df, n_boot, seed))
    attempt("hyperparams", lambda: _fit_hyperparams(df, n_boot, seed))
    if backtest and "isoflop" in wanted:
        try:
            from analysis.backtest import backtest as run_backtest

            report.backtest = run_backtest(size_runs, n_boot=min(n_boot, 200), seed=seed, window=window)
        except ConfigError as e:
            report.skipped["backtest"] = str(e)
    if "isoflop" in report.fits:
        report.convention_sensitivity = _convention_sensitivity(size_runs, report, min(n_boot, 100), seed, window)
    return report


# ---------------------------------------------------------------- the individual fits


def _parse_laws(laws) -> set[str]:
    if laws is None or laws == "all":
        return set(LAWS)
    names = [laws] if isinstance(laws, str) else list(laws)
    out = set()
    for name in names:
        if name == "all":
            return set(LAWS)
        name = LAW_ALIASES.get(name, name)
        if name not in LAWS:
            raise ConfigError("laws", f"'all' or names from {LAWS + tuple(LAW_ALIASES)}", name)
        out.add(name)
    return out


def _fit_isoflop(df: pd.DataFrame, n_boot: int, seed: int, window, k: float):
    from analysis.isoflop import fit_isoflop

    counts = df.groupby("budget").size()
    if (counts >= 3).sum() < 2:
        raise ConfigError("isoflop", "at least 2 FLOP budgets with >= 3 runs each",
                          f"{int((counts >= 3).sum())} such budgets")
    return fit_isoflop(df, window=window, n_boot=n_boot, seed=seed, k=k)


def _fit_loss_vs_compute(df: pd.DataFrame, iso, n_boot: int, seed: int):
    from analysis.powerlaw import fit_saturating

    opt = budget_optima(df, iso)
    if len(opt) < 4:
        raise ConfigError("loss_vs_compute", "at least 4 FLOP budgets for L(C) = E + A C^-gamma", len(opt))
    fit = fit_saturating(opt["budget"].to_numpy(), opt["L_opt"].to_numpy(), n_boot=n_boot, seed=seed)
    fit.diagnostics["points"] = json_safe(opt.to_dict("records"))
    fit.diagnostics["point_source"] = "per-budget parabola vertex L_opt; lowest loss where the parabola is flagged"
    return fit


def _fit_parametric(df: pd.DataFrame, k: float, n_boot: int, seed: int):
    from analysis.parametric import fit_parametric

    if len(df) < 5:
        raise ConfigError("parametric", "at least 5 runs to fit L = E + A N^-alpha + B D^-beta", len(df))
    return fit_parametric(df["N"].to_numpy(), df["D"].to_numpy(), df["loss"].to_numpy(), k=k, n_boot=n_boot,
                          seed=seed, budgets=df["budget"].to_numpy())


def _fit_envelope(df: pd.DataFrame, n_boot: int, seed: int):
    from analysis.envelope import fit_envelope

    metrics = df.attrs.get("metrics")
    if not isinstance(metrics, pd.DataFrame) or metrics.empty:
        raise ConfigError("envelope", "per-checkpoint metrics (a sweep results directory with metrics.jsonl)",
                          "none in this source")
    return fit_envelope(metrics, n_boot=n_boot, seed=seed)


def _fit_hyperparams(df: pd.DataFrame, n_boot: int, seed: int):
    from analysis.hyperparams import fit_hyperparams

    hp = hyperparam_runs(df)
    if "lr" not in hp.columns or hp["lr"].isna().all():
        raise ConfigError("hyperparams", "an `lr` column", "none")
    n_lr = hp.groupby("budget")["lr"].nunique()
    if (n_lr >= 3).sum() < 1:
        raise ConfigError("hyperparams", "a budget with >= 3 distinct learning rates", f"at most {n_lr.max()}")
    return fit_hyperparams(hp, n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------- meta and runs


def _drop_highest_loss(df: pd.DataFrame, k: int) -> tuple[pd.DataFrame, list[dict]]:
    if not k:
        return df, []
    if k < 0 or k >= len(df):
        raise ConfigError("drop_highest_loss", f"between 0 and {len(df) - 1}", k)
    worst = df["loss"].nlargest(k).index
    dropped = [{"run_id": str(df.at[i, "run_id"]) if "run_id" in df.columns else str(i), "status": "dropped",
                "reason": f"one of the {k} highest-loss runs (loss {df.at[i, 'loss']:.4g})"} for i in worst]
    kept = df.drop(index=worst)
    kept.attrs = dict(df.attrs)
    return kept, dropped


def _meta(df: pd.DataFrame, excluded: list[dict], target_budget: float | None) -> dict:
    k = float(np.median(df["C"] / (df["N"] * df["D"])))
    if "flop_convention" in df.columns and df["flop_convention"].notna().any():
        convention = str(df["flop_convention"].dropna().iloc[0])
    else:
        convention = "6N" if abs(k - 6.0) < 0.06 else "as given (C column)"
    budgets = sorted(float(b) for b in df["budget"].unique())
    if target_budget is not None and not (isinstance(target_budget, (int, float)) and target_budget > 0):
        raise ConfigError("target_budget", "a positive number of FLOPs", target_budget)
    meta = {"flop_convention": convention, "k": k, "n_runs": len(df), "n_excluded": len(excluded),
            "excluded": excluded, "budgets": budgets, "max_budget": budgets[-1],
            "target_budget": float(target_budget) if target_budget else DEFAULT_TARGET_FACTOR * budgets[-1],
            "parameter_count": df.attrs["parameter_count"] if df.attrs.get("parameter_count") in ("total", "non-embedding")
            else ("non-embedding" if convention != "6N_total" else "total"),
            "batch_unit": df.attrs.get("batch_unit"), "excluded_counts": dict(df.attrs.get("excluded_counts") or {})}
    for key in ("family", "seq_len", "vocab_size"):
        if key in df.columns and df[key].notna().any():
            value = df[key].dropna().mode().iloc[0]
            meta[key] = value.item() if hasattr(value, "item") else value
    meta["ladder"] = _fixed_ladder_options(df)
    cols = [c for c in RUN_COLUMNS if c in df.columns]
    meta["runs"] = json_safe(df[cols].to_dict("records"))
    return meta


def _fixed_ladder_options(df: pd.DataFrame) -> dict:
    """Shape choices every run shares (n_layer, and n_heads or head_dim), so a recommended shape stays in the fitted
    family (see scaling.ladder.shape_for_params)."""
    if len(df) < 2 or not {"n_layer", "d_model", "n_heads"} <= set(df.columns):
        return {}
    options = {}
    if df["n_layer"].nunique() == 1:
        options["n_layer"] = int(df["n_layer"].iloc[0])
    head_dim = df["d_model"] / df["n_heads"]
    if head_dim.nunique() == 1:
        options["head_dim"] = int(head_dim.iloc[0])
    elif df["n_heads"].nunique() == 1 and "n_layer" in options:
        options["n_heads"] = int(df["n_heads"].iloc[0])
    return options


# ---------------------------------------------------------------- convention sensitivity


def _convention_sensitivity(df: pd.DataFrame, report: FitReport, n_boot: int, seed: int, window):
    """Refit approach 2 with C (and N) under each FLOP/parameter convention the runs carry; a, b and N/D at target.

    The target budget is converted to each convention by the median ratio C_conv / C of the runs at the largest
    budget (the same physical run costs a different number of FLOPs in each convention). Approach 3's a, b do not
    depend on the FLOP convention (only its allocation constant k does); they are refitted only for N_total.
    """
    from analysis.isoflop import fit_isoflop

    present = [c for c in CONVENTIONS if f"C_{c}" in df.columns and df[f"C_{c}"].notna().all()]
    if len(present) < 2:
        return None
    target = report.meta["target_budget"]
    top = df[df["budget"] == df["budget"].max()]
    par = report.fits.get("parametric")
    rows = []
    for conv in present:
        n_col, n_count = _param_column(df, report.meta, "total" if conv == "6N_total" else "non-embedding")
        var = df.copy()
        var["C"] = var[f"C_{conv}"]
        var["N"] = var[n_col]
        var["budget"] = var.groupby("budget")["C"].transform(lambda c: float(np.exp(np.log(c).mean())))
        k = float(np.median(var["C"] / (var["N"] * var["D"])))
        target_conv = target * float(np.median(top[f"C_{conv}"] / top["C"]))
        row = {"convention": conv, "N_count": n_count, "k": k, "target_C": target_conv}
        try:
            iso = fit_isoflop(var, window=window, n_boot=n_boot, seed=seed, k=k)
            pred = iso.predict(target_conv)
            row.update({"a": iso.N_opt.params["exponent"], "b": iso.D_opt.params["exponent"],
                        "a_lo": iso.N_opt.intervals.get("exponent", (math.nan,) * 2)[0],
                        "a_hi": iso.N_opt.intervals.get("exponent", (math.nan,) * 2)[1],
                        "N_opt_target": float(np.asarray(pred["N_opt"])), "D_opt_target": float(np.asarray(pred["D_opt"]))})
        except ConfigError as e:
            row["error"] = str(e)
        if par is not None:
            row.update(_parametric_at_target(par, var, n_col, k, target_conv, seed))
        rows.append(row)
    return pd.DataFrame(rows)


def _param_column(df: pd.DataFrame, meta: dict, count: str) -> tuple[str, str]:
    """(column, what it counts) for `count` ("total" / "non-embedding") params: N when the fit already counts that
    way or the other column is absent, else N_total / N_non_embedding."""
    have = meta.get("parameter_count", "non-embedding")
    other = "N_total" if count == "total" else "N_non_embedding"
    if have != count and other in df.columns:
        return other, count
    return "N", have


def _parametric_at_target(par, var: pd.DataFrame, n_col: str, k: float, target: float, seed: int) -> dict:
    from analysis.recommend import parametric_allocation

    if n_col != "N":
        from analysis.parametric import fit_parametric

        try:
            par = fit_parametric(var["N"].to_numpy(), var["D"].to_numpy(), var["loss"].to_numpy(), k=k, n_boot=0,
                                 seed=seed)
        except ConfigError:
            return {}
    p = par.params
    alpha, beta = p["alpha"], p["beta"]
    n_opt = float(parametric_allocation(p["E"], p["A"], p["B"], alpha, beta, target, k))
    return {"a_param": beta / (alpha + beta), "b_param": alpha / (alpha + beta), "N_opt_target_param": n_opt,
            "D_opt_target_param": target / (k * n_opt)}


def _sensitivity_spread(table: pd.DataFrame) -> dict:
    """How far the conventions move the answer: ranges of a, b and max/min ratios of N_opt, D_opt at the target."""
    out = {}
    for col in ("a", "b", "a_param"):
        if col in table and table[col].notna().any():
            out[f"{col}_range"] = [float(table[col].min()), float(table[col].max())]
    for col in ("N_opt_target", "D_opt_target", "N_opt_target_param"):
        if col in table and table[col].notna().any():
            out[f"{col}_max_over_min"] = float(table[col].max() / table[col].min())
    return out


# ---------------------------------------------------------------- the written report


def write_report(report, out_dir, target_budget: float | None = None) -> Path:
    """Write out_dir/fit.json, every figure (PNG and SVG) and out_dir/report.md; return the report.md path.

    report: a FitReport or a fit.json dict. target_budget (FLOPs): where to recommend a run and end the
    extrapolation bands (default: meta.target_budget, i.e. 100x the largest fitted budget unless fit_all got one).
    """
    from analysis import plots
    from analysis.recommend import recommend

    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    if "meta" not in d:
        raise ConfigError("report", "a FitReport or a fit.json dict with a `meta` member", sorted(d))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = float(target_budget or d["meta"].get("target_budget") or DEFAULT_TARGET_FACTOR * d["meta"]["max_budget"])
    (out / "fit.json").write_text(json.dumps(d, indent=1, allow_nan=False))
    figures = plots.plot_all(d, out, target_budget=target)
    try:
        rec = recommend(d, target)
        rec_error = None
    except ConfigError as e:
        rec, rec_error = None, str(e)
    if rec is not None:
        (out / "recommendation.json").write_text(json.dumps(rec.to_dict(), indent=1, allow_nan=False))
    path = out / "report.md"
    path.write_text(render_markdown(d, figures, rec, rec_error, target))
    return path


def render_markdown(d: dict, figures: dict[str, list[Path]], rec, rec_error: str | None, target: float) -> str:
    """The report as Markdown: data, recommendation, each law's parameters with intervals, diagnostics, figures."""
    m = d["meta"]
    lines = ["# Scaling-law fit report", "",
             (f"{m['n_runs']} runs over {len(m['budgets'])} FLOP budgets ({_fmt(min(m['budgets']))} to "
             f"{_fmt(m['max_budget'])} FLOPs, convention **{m['flop_convention']}**, C = k·N·D with "
             f"k = {m['k']:.4g}; N counts {m.get('parameter_count', 'non-embedding')} parameters, D tokens). "
             f"{m['n_excluded']} runs excluded."), ""]
    lines += _recommendation_md(rec, rec_error, target)
    figure_titles = {"isoflop": "IsoFLOP curves", "loss_vs_compute": "Loss frontier L(C)",
                     "allocation": "Compute-optimal N and D", "parametric_contours": "Approach 3 loss contours",
                     "hyperparams": "Learning rate / batch size", "residuals": "Residuals", "backtest": "Backtest"}
    sections = [("isoflop", "Approach 2: isoFLOP parabolas", _isoflop_md),
                ("loss_vs_compute", "Loss vs compute L(C) = E + A·C^-gamma", _params_md),
                ("parametric", "Approach 3: L(N, D) = E + A·N^-alpha + B·D^-beta", _params_md),
                ("envelope", "Approach 1: training-curve envelope", _envelope_md),
                ("hyperparams", "Learning rate and batch size", _hyperparams_md)]
    for key, title, render in sections:
        if key not in d:
            continue
        lines += [f"## {title}", ""] + render(d[key]) + [""]
    if "backtest" in d:
        lines += ["## Backtest (fit small budgets, predict the held-out larger ones)", ""] + _backtest_md(d["backtest"])
    if "convention_sensitivity" in d:
        lines += ["## Convention sensitivity", ""] + _sensitivity_md(d["convention_sensitivity"])
    if m.get("skipped"):
        lines += ["## Skipped", ""] + [f"- **{law}**: {why}" for law, why in m["skipped"].items()] + [""]
    if m.get("excluded"):
        lines += ["## Excluded runs", "", "| run | status | reason |", "|---|---|---|"]
        lines += [f"| {e.get('run_id', '')} | {e.get('status', '')} | {e.get('reason', '')} |" for e in m["excluded"]]
        lines.append("")
    lines += ["## Figures", ""]
    for name, paths in figures.items():
        png = next((p for p in paths if p.suffix == ".png"), paths[0])
        lines += [f"### {figure_titles.get(name, name)}", "", f"![{figure_titles.get(name, name)}]({png.name})",
                  f"([SVG]({png.with_suffix('.svg').name}))", ""]
    return "\n".join(lines) + "\n"


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, float, np.floating, np.integer)):
        return f"{float(v):.{digits}g}"
    return str(v)


def _interval_str(iv) -> str:
    if not iv or iv[0] is None or iv[1] is None:
        return "–"
    return f"[{_fmt(iv[0])}, {_fmt(iv[1])}]"


def _params_md(fit: dict, names: list[str] | None = None) -> list[str]:
    intervals, stderr = fit.get("intervals", {}) or {}, fit.get("stderr", {}) or {}
    skip = {"intervals", "stderr", "n_boot", "diagnostics", "success", "message", "samples", "x_name", "y_name"}
    names = names or [k for k, v in fit.items() if k not in skip and isinstance(v, (int, float))
                      and not isinstance(v, bool)]
    lines = ["| parameter | estimate | 95% interval | bootstrap s.e. |", "|---|---|---|---|"]
    lines += [f"| {n} | {_fmt(fit.get(n))} | {_interval_str(intervals.get(n))} | {_fmt(stderr.get(n), 3)} |"
              for n in names]
    lines += ["", f"Bootstrap resamples: {fit.get('n_boot', 0)}; "
                  f"{'converged' if fit.get('success', True) else '**not converged**'}"
                  + (f" ({fit['message']})" if fit.get("message") else "") + "."]
    diag = {k: v for k, v in (fit.get("diagnostics") or {}).items() if isinstance(v, (int, float, str, bool))}
    if diag:
        lines.append("Diagnostics: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in diag.items()) + ".")
    return lines


def _law_md(label: str, law: dict | None) -> str:
    if not law:
        return f"| {label} | – | – | – |"
    iv = law.get("intervals") or {}
    return (f"| {label} | {_fmt(law.get('coef'))} {_interval_str(iv.get('coef'))} | "
            f"{_fmt(law.get('exponent'))} {_interval_str(iv.get('exponent'))} | {law.get('n_boot', 0)} |")


def _laws_md(fit: dict, laws: list[tuple[str, str]]) -> list[str]:
    lines = ["| law | coefficient [95% interval] | exponent [95% interval] | resamples |", "|---|---|---|---|"]
    return lines + [_law_md(label, fit.get(key)) for key, label in laws if fit.get(key)]


def _isoflop_md(fit: dict) -> list[str]:
    lines = _laws_md(fit, [("N_opt", "N_opt(C) = coef·C^a (non-embedding params)"),
                           ("D_opt", "D_opt(C) = coef·C^b (tokens)"), ("L_opt", "L_opt(C) (nats/token)")])
    lines += ["", "Per-budget optima (parabola in log N; flagged budgets are left out of the laws):", "",
              "| budget C (FLOPs) | N_opt [95%] | D_opt [95%] | L_opt | runs | flags |", "|---|---|---|---|---|---|"]
    for b in fit.get("budgets") or []:
        lines.append(f"| {_fmt(b.get('budget'))} | {_fmt(b.get('N_opt'))} "
                     f"{_interval_str((b.get('N_opt_lo'), b.get('N_opt_hi')))} | {_fmt(b.get('D_opt'))} "
                     f"{_interval_str((b.get('D_opt_lo'), b.get('D_opt_hi')))} | {_fmt(b.get('L_opt'))} | "
                     f"{b.get('n_points', '')} | {', '.join(b.get('flags') or []) or 'ok'} |")
    return lines


def _envelope_md(fit: dict) -> list[str]:
    return _laws_md(fit, [("N_opt", "N_opt(C) (non-embedding params)"), ("D_opt", "D_opt(C) (tokens)"),
                          ("L_opt", "L_opt(C) (nats/token)")])


def _hyperparams_md(fit: dict) -> list[str]:
    lines = _laws_md(fit, [("lr_opt", "lr_opt(C) (peak learning rate)"), ("batch_opt", "B_opt(C) (tokens)")])
    steplaw = fit.get("steplaw")
    if isinstance(steplaw, dict) and steplaw.get("c") is not None:
        lines += ["", (f"Step-Law form lr = c·N^p·D^q: c = {_fmt(steplaw.get('c'))}, p = {_fmt(steplaw.get('p'))}, "
                      f"q = {_fmt(steplaw.get('q'))}.")]
    budgets = fit.get("budgets") or []
    if budgets:
        keys = [k for k in ("budget", "lr_opt", "batch_opt", "loss_opt", "n_points") if k in budgets[0]]
        lines += ["", "| " + " | ".join(keys) + " | flags |", "|" + "---|" * (len(keys) + 1)]
        lines += ["| " + " | ".join(_fmt(b.get(k)) for k in keys) + f" | {', '.join(b.get('flags') or []) or 'ok'} |"
                  for b in budgets]
    return lines


def _backtest_md(bt: dict) -> list[str]:
    diag = bt.get("diagnostics") or {}
    lines = [(f"Fitted on budgets ≤ {_fmt(diag.get('cutoff'))} FLOPs; loss predicted by {diag.get('loss_source')}. "
             "Error = predicted / measured − 1; measured = the held-out budget's own parabola vertex."), "",
             "| held-out C (FLOPs) | × cutoff | quantity | predicted [95%] | measured | error | inside |",
             "|---|---|---|---|---|---|---|"]
    for r in bt.get("rows") or []:
        for q in ("loss", "N_opt", "D_opt"):
            lines.append(f"| {_fmt(r['budget'])} | {_fmt(r['extrapolation'], 3)} | {q} | {_fmt(r[f'{q}_pred'])} "
                         f"{_interval_str((r[f'{q}_lo'], r[f'{q}_hi']))} | {_fmt(r[f'{q}_measured'])} | "
                         f"{100 * r[f'{q}_rel_error']:+.1f}% | {'yes' if r[f'{q}_inside'] else '**no**'} |")
    flags = [f for r in bt.get("rows") or [] for f in r.get("flags") or []]
    lines += ["", f"Flags: {', '.join(flags) if flags else 'none'}.", ""]
    return lines


def _sensitivity_md(cs: dict) -> list[str]:
    rows = cs.get("rows") or []
    lines = [(f"Approach 2 refitted with C (and N) under each convention; allocations at the target "
             f"{_fmt(cs.get('target_budget'))} FLOPs (in the sweep's convention)."), "",
             ("| convention | N counts | k | a [95%] | b | N_opt at target | D_opt at target | a (approach 3) | "
             "N_opt at target (approach 3) |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['convention']} | {r['N_count']} | {_fmt(r.get('k'))} | {_fmt(r.get('a'))} "
                     f"{_interval_str((r.get('a_lo'), r.get('a_hi')))} | {_fmt(r.get('b'))} | "
                     f"{_fmt(r.get('N_opt_target'))} | {_fmt(r.get('D_opt_target'))} | {_fmt(r.get('a_param'))} | "
                     f"{_fmt(r.get('N_opt_target_param'))} |")
    spread = {k: v for k, v in cs.items() if k not in ("rows", "target_budget")}
    if spread:
        lines += ["", "Spread: " + ", ".join(f"{k} = {_fmt(v) if not isinstance(v, list) else _interval_str(v)}"
                                             for k, v in spread.items()) + "."]
    return lines + [""]


def _recommendation_md(rec, rec_error: str | None, target: float) -> list[str]:
    lines = [f"## Recommendation for C = {_fmt(target)} FLOPs", ""]
    if rec is None:
        return lines + [f"No recommendation: {rec_error}", ""]
    p, iv = rec.params, rec.intervals
    labels = [("N", "N (non-embedding params)"), ("D", "D (tokens)"), ("n_layer", "n_layer"),
              ("d_model", "d_model"), ("n_heads", "n_heads"), ("d_ff", "d_ff"),
              ("batch_size_tokens", "batch size (tokens)"), ("lr", "peak learning rate"), ("steps", "steps"),
              ("warmup_steps", "warmup steps"), ("expected_loss", "expected final loss (nats/token)"),
              ("expected_loss_parametric", "expected loss, parametric L(N, D)")]
    lines += [f"Extrapolation: {rec.extrapolation_factor:.3g}× the largest fitted budget.", "",
              "| quantity | value | 95% interval | from |", "|---|---|---|---|"]
    for key, label in labels:
        if key in p:
            source = rec.sources.get(key) or rec.sources.get("shape", "")
            lines.append(f"| {label} | {_fmt(p[key])} | {_interval_str(iv.get(key))} | {source} |")
    if rec.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in rec.warnings]
    return lines + [""]
