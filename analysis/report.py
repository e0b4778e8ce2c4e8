"""Fit every law the runs allow (`fit_all` -> FitReport -> fit.json) and write a readable report (`write_report`).

fit.json members (analysis.fitreport): `schema_version`, `meta`, `parametric` (approach 3), `isoflop` (approach 2),
`envelope` (approach 1), `loss_vs_compute` (L(C) = E + A C^-gamma on per-budget optimal losses), `hyperparams`
(lr/batch laws), `backtest`, `convention_sensitivity`; each present when the data allows. `meta.skipped` says why a
law is absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.backtest import backtest as run_backtest
from analysis.data import PARAM_COUNTS, load_runs
from analysis.envelope import fit_envelope
from analysis.fitreport import (
    LAWS,
    UNSPECIFIED_COUNT,
    FitReport,
    as_report,
    load_fit,
    sensitivity_interval,
    sensitivity_spread,
)
from analysis.hyperparams import fit_hyperparams, width_lr_exponent
from analysis.isoflop import fit_isoflop
from analysis.parametric import fit_parametric
from analysis.powerlaw import fit_saturating
from analysis.recommend import Recommendation, describe, recommend
from analysis.result import FitResult, Interval, json_safe
from analysis.selection import budget_optima, hyperparam_runs, select_size_runs
from scaling.accounting import CONVENTIONS
from scaling.errors import ConfigError

__all__ = ["FitReport", "fit_all", "load_fit", "render_markdown", "write_report"]

LAW_ALIASES = {"loss": "loss_vs_compute", "approach1": "envelope", "approach2": "isoflop", "approach3": "parametric"}
RUN_COLUMNS = ("run_id", "kind", "N", "D", "C", "loss", "budget", "lr", "batch_size", "seed", "d_model")
DEFAULT_TARGET_FACTOR = 100.0  # target budget = this x the largest fitted budget when none is given


def fit_all(source, *, laws="all", n_boot: int = 1000, seed: int = 0, columns: dict[str, str] | None = None,
            backtest: bool = True, target_budget: float | None = None, drop_highest_loss: int = 0,
            parametric_n_boot: int | None = None, window: float | None = None, param_count: str | None = None,
            batch_unit: str | None = None) -> FitReport:
    """Fit every law in `laws` ("all" or a list from LAWS; "loss" means loss_vs_compute) that the runs allow.

    source: DataFrame, CSV/Parquet path or sweep results dir (analysis.load_runs; `columns` maps canonical names to
    source columns). Requirements: parametric >= 5 runs; isoflop >= 2 budgets with >= 3 runs each; loss_vs_compute
    >= 4 budgets (per-budget optimal loss: parabola vertex, or lowest loss where the parabola is flagged);
    envelope per-checkpoint metrics; hyperparams scanned LR cells. A law the data does not allow is listed in
    `skipped` with the reason. drop_highest_loss: drop the K highest-loss runs first (Epoch AI drop 5 of the
    Chinchilla points). target_budget (FLOPs) is where the convention-sensitivity table compares allocations
    (default 100x the largest budget). parametric_n_boot overrides n_boot for the approach 3 bootstrap.
    param_count ("total" / "non-embedding": what N counts) and batch_unit go to load_runs.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError("n_boot", "a non-negative number of bootstrap resamples", n_boot)
    wanted = _parse_laws(laws)
    df = load_runs(source, columns, param_count=param_count, batch_unit=batch_unit)
    excluded = list(df.attrs.get("excluded", []))
    df, dropped = _drop_highest_loss(df, drop_highest_loss)
    excluded += dropped
    meta = _meta(df, excluded, target_budget, n_boot)
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
    counts = df.groupby("budget").size()
    if (counts >= 3).sum() < 2:
        raise ConfigError("isoflop", "at least 2 FLOP budgets with >= 3 runs each",
                          f"{int((counts >= 3).sum())} such budgets")
    return fit_isoflop(df, window=window, n_boot=n_boot, seed=seed, k=k)


def _fit_loss_vs_compute(df: pd.DataFrame, iso, n_boot: int, seed: int):
    opt = budget_optima(df, iso)
    if len(opt) < 4:
        raise ConfigError("loss_vs_compute", "at least 4 FLOP budgets for L(C) = E + A C^-gamma", len(opt))
    fit = fit_saturating(opt["budget"].to_numpy(), opt["L_opt"].to_numpy(), n_boot=n_boot, seed=seed)
    fit.diagnostics["points"] = json_safe(opt.to_dict("records"))
    fit.diagnostics["point_source"] = "per-budget parabola vertex L_opt; lowest loss where the parabola is flagged"
    return fit


def _fit_parametric(df: pd.DataFrame, k: float, n_boot: int, seed: int):
    if len(df) < 5:
        raise ConfigError("parametric", "at least 5 runs to fit L = E + A N^-alpha + B D^-beta", len(df))
    return fit_parametric(df["N"].to_numpy(), df["D"].to_numpy(), df["loss"].to_numpy(), k=k, n_boot=n_boot,
                          seed=seed, budgets=df["budget"].to_numpy())


def _fit_envelope(df: pd.DataFrame, n_boot: int, seed: int):
    metrics = df.attrs.get("metrics")
    if not isinstance(metrics, pd.DataFrame) or metrics.empty:
        raise ConfigError("envelope", "per-checkpoint metrics (training curves: run id + step)", "none in this source")
    return fit_envelope(metrics, n_boot=n_boot, seed=seed)


def _fit_hyperparams(df: pd.DataFrame, n_boot: int, seed: int):
    if "lr" not in df.columns or df["lr"].isna().all():
        raise ConfigError("hyperparams", "an `lr` column (learning rates scanned per cell)", "none")
    return fit_hyperparams(hyperparam_runs(df), n_boot=n_boot, seed=seed)


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


def _meta(df: pd.DataFrame, excluded: list[dict], target_budget: float | None, n_boot: int) -> dict:
    k = float(np.median(df["C"] / (df["N"] * df["D"])))
    if "flop_convention" in df.columns and df["flop_convention"].notna().any():
        convention = str(df["flop_convention"].dropna().iloc[0])
    else:
        convention = "6N" if abs(k - 6.0) < 0.06 else "as given (C column)"
    budgets = sorted(float(b) for b in df["budget"].unique())
    if target_budget is not None and not (isinstance(target_budget, (int, float)) and target_budget > 0):
        raise ConfigError("target_budget", "a positive number of FLOPs", target_budget)
    meta = {"flop_convention": convention, "k": k, "n_runs": len(df), "n_excluded": len(excluded),
            "excluded": excluded, "budgets": budgets, "max_budget": budgets[-1], "n_boot": int(n_boot),
            "target_budget": float(target_budget) if target_budget else DEFAULT_TARGET_FACTOR * budgets[-1],
            "parameter_count": _parameter_count(df, convention), "batch_unit": df.attrs["batch_unit"],
            "excluded_counts": dict(df.attrs["excluded_counts"])}
    for key in ("family", "seq_len", "vocab_size"):
        if key in df.columns and df[key].notna().any():
            value = df[key].dropna().mode().iloc[0]
            meta[key] = value.item() if hasattr(value, "item") else value
    meta["ladder"] = _fixed_ladder_options(df)
    meta["lr_width_exponent"] = width_lr_exponent(df)  # the sweep's lr ~ d_model^-w rule, read from its runs
    cols = [c for c in RUN_COLUMNS if c in df.columns]
    meta["runs"] = json_safe(df[cols].to_dict("records"))
    return meta


def _parameter_count(df: pd.DataFrame, convention: str) -> str:
    """What N counts: as load_runs recorded it (declared, or a sweep's own), else "unspecified"; a 6N_total
    convention column says "total"."""
    declared = df.attrs.get("parameter_count")
    if declared in PARAM_COUNTS:
        return declared
    return "total" if convention == "6N_total" else UNSPECIFIED_COUNT


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
            a_iv = iso.intervals.get("a", Interval.undetermined("no interval"))
            row.update({"a": iso.params["a"], "b": iso.params["b"], "a_lo": a_iv.lo, "a_hi": a_iv.hi,
                        "a_n_ok": a_iv.n_ok, "a_n_total": a_iv.n_total, "a_reason": a_iv.reason,
                        "N_opt_target": float(np.asarray(pred["N_opt"])),
                        "D_opt_target": float(np.asarray(pred["D_opt"]))})
        except ConfigError as e:
            row["error"] = str(e)
        if par is not None:
            row.update(_parametric_at_target(par, var, n_col, k, target_conv, seed))
        rows.append(row)
    return pd.DataFrame(rows)


def _param_column(df: pd.DataFrame, meta: dict, count: str) -> tuple[str, str]:
    """(column, what it counts) for `count` ("total" / "non-embedding") params: N when the fit already counts that
    way or the other column is absent, else N_total / N_non_embedding."""
    have = meta["parameter_count"]
    other = "N_total" if count == "total" else "N_non_embedding"
    if have != count and other in df.columns:
        return other, count
    return "N", have


def _parametric_at_target(par, var: pd.DataFrame, n_col: str, k: float, target: float, seed: int) -> dict:
    """Approach 3's exponents and allocation at the target (refitted on the other parameter count when needed)."""
    if n_col != "N":
        try:
            par = fit_parametric(var["N"].to_numpy(), var["D"].to_numpy(), var["loss"].to_numpy(), k=k, n_boot=0,
                                 seed=seed)
        except ConfigError:
            return {}
    n_opt, d_opt = (float(np.asarray(v)) for v in par.optimal_allocation(target))
    return {"a_param": par.params["a"], "b_param": par.params["b"], "N_opt_target_param": n_opt,
            "D_opt_target_param": d_opt}


# ---------------------------------------------------------------- the written report


def write_report(report, out_dir, target_budget: float | None = None) -> Path:
    """Write out_dir/fit.json, every figure (PNG and SVG), recommendation.json and out_dir/report.md; return the
    report.md path.

    report: a FitReport, a fit.json dict or a path to fit.json. target_budget (FLOPs): where to recommend a run and
    end the extrapolation bands (default: meta.target_budget, i.e. 100x the largest fitted budget).
    """
    from analysis import plots  # matplotlib is heavy: only the written report needs it

    report = as_report(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = float(target_budget or report.meta["target_budget"])
    (out / "fit.json").write_text(json.dumps(report.to_dict(), indent=1, allow_nan=False))
    try:
        rec, rec_error = recommend(report, target), None
    except ConfigError as e:
        rec, rec_error = None, str(e)
    figures = plots.plot_all(report, out, target_budget=target, recommendation=rec)
    if rec is not None:
        (out / "recommendation.json").write_text(json.dumps(rec.to_dict(), indent=1, allow_nan=False))
    path = out / "report.md"
    path.write_text(render_markdown(report, figures, rec, rec_error, target))
    return path


FIGURE_TITLES = {"isoflop": "IsoFLOP curves", "loss_vs_compute": "Loss frontier L(C)",
                 "allocation": "Compute-optimal N and D", "parametric_contours": "Approach 3 loss contours",
                 "hyperparams": "Learning rate / batch size", "residuals": "Residuals", "backtest": "Backtest"}
SECTIONS = (("isoflop", "Approach 2: isoFLOP parabolas"), ("loss_vs_compute", "Loss vs compute L(C) = E + A·C^-gamma"),
            ("parametric", "Approach 3: L(N, D) = E + A·N^-alpha + B·D^-beta"),
            ("envelope", "Approach 1: training-curve envelope"), ("hyperparams", "Learning rate and batch size"))


def render_markdown(report: FitReport, figures: dict[str, list[Path]], rec: Recommendation | None,
                    rec_error: str | None, target: float) -> str:
    """The report as Markdown: data, recommendation, each law's parameters with intervals, diagnostics, figures."""
    m = report.meta
    lines = ["# Scaling-law fit report", "",
             (f"{m['n_runs']} runs over {len(m['budgets'])} FLOP budgets ({_fmt(min(m['budgets']))} to "
             f"{_fmt(m['max_budget'])} FLOPs, convention **{m['flop_convention']}**, C = k·N·D with "
             f"k = {m['k']:.4g}; N counts {m['parameter_count']} parameters, D tokens"
             + (f"; batch sizes read in {m['batch_unit']}" if m.get("batch_unit") else "") + "). "
             f"{m['n_excluded']} runs excluded"
             + (" (" + ", ".join(f"{n} {why}" for why, n in m["excluded_counts"].items()) + ")"
                if m.get("excluded_counts") else "") + "."), ""]
    if m.get("n_boot") == 0:
        lines += [("**No intervals**: the fit ran with n_boot = 0 (no bootstrap resamples), so no quantity below has "
                  "an interval and nothing can be checked against one."), ""]
    lines += _recommendation_md(rec, rec_error, target)
    unreliable = report.unreliable()
    if unreliable:
        lines += ["## Unreliable quantities", ""] + [f"- **{k}**: UNRELIABLE: {why}" for k, why in unreliable.items()]
        lines.append("")
    for key, title in SECTIONS:
        if key in report.fits:
            lines += [f"## {title}", ""] + _result_md(report.fits[key]) + [""]
    if report.backtest is not None:
        lines += ["## Backtest (fit small budgets, predict the held-out larger ones)", ""]
        lines += _backtest_md(report.backtest)
    if report.convention_sensitivity is not None:
        lines += ["## Convention sensitivity", ""] + _sensitivity_md(report.convention_sensitivity, m)
    if report.skipped:
        lines += ["## Skipped", ""] + [f"- **{law}**: {why}" for law, why in report.skipped.items()] + [""]
    if m["excluded"]:
        lines += ["## Excluded runs", "", "| run | status | reason |", "|---|---|---|"]
        lines += [f"| {e.get('run_id', '')} | {e.get('status', '')} | {e.get('reason', '')} |" for e in m["excluded"]]
        lines.append("")
    lines += ["## Figures", ""]
    for name, paths in figures.items():
        png = next((p for p in paths if p.suffix == ".png"), paths[0])
        title = FIGURE_TITLES.get(name, name)
        lines += [f"### {title}", "", f"![{title}]({png.name})", f"([SVG]({png.with_suffix('.svg').name}))", ""]
    return "\n".join(lines) + "\n"


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, float, np.floating, np.integer)):
        return f"{float(v):.{digits}g}"
    return str(v)


def _param_rows(fit: FitResult) -> list[str]:
    """'| name | estimate | 95% interval (n_ok/n_total) | note |' rows of a result's params and intervals."""
    rows = []
    for name in list(fit.params) + [n for n in fit.intervals if n not in fit.params]:
        note = f"**UNRELIABLE**: {fit.unreliable[name]}" if name in fit.unreliable else ""
        rows.append(f"| {name} | {_fmt(fit.params.get(name))} | {describe(fit.intervals.get(name))} | {note} |")
    return rows


def _result_md(fit: FitResult) -> list[str]:
    """A law's parameter table (or, for a result without parameters, why it has none), its noise model and its full
    summary (per-budget tables, member laws)."""
    rows = _param_rows(fit)  # member laws (N_opt, lr_opt, ...) appear here under their parent's names
    rows += [f"| {name} | – | – | **UNRELIABLE**: {why} |" for name, why in fit.unreliable.items()
             if name not in fit.params and name not in fit.intervals]
    if rows:
        lines = ["| parameter | estimate | 95% interval (resamples ok/total) | note |", "|---|---|---|---|", *rows, ""]
    else:
        why = "; ".join(f"{k}: {v}" for k, v in fit.diagnostics.items() if isinstance(v, str) and
                        v.startswith("not fitted"))
        lines = [f"No law was fitted{' (' + why + ')' if why else ''}; the per-cell results are below.", ""]
    if fit.noise:
        lines += [(f"Noise: σ = {_fmt(fit.noise.get('sigma'), 3)} with {fit.noise.get('dof')} degrees of freedom "
                  f"({fit.noise.get('source')})."), ""]
    lines += [f"{'Converged' if fit.success else '**Not converged**'}"
              + (f" ({fit.message})" if fit.message else "") + ".", "", "```", fit.summary(), "```"]
    return lines


def _backtest_md(bt) -> list[str]:
    d = bt.diagnostics
    lines = [(f"Fitted on budgets ≤ {_fmt(d['cutoff'])} FLOPs; loss predicted by {d['loss_source']}. "
             "Error = predicted / measured − 1; measured = the held-out budget's own parabola vertex."), "",
             ("| held-out C (FLOPs) | × cutoff | quantity | predicted | 95% interval (ok/total) | measured | error | "
             "inside |"), "|---|---|---|---|---|---|---|---|"]
    for row in bt.held_out():
        for q, p in row["predictions"].items():
            inside = "no interval" if p["inside"] is None else "yes" if p["inside"] else "**no**"
            lines.append(f"| {_fmt(row['budget'])} | {_fmt(row['extrapolation'], 3)} | {q} | {_fmt(p['predicted'])} "
                         f"| {describe(p['interval'])} | {_fmt(p['measured'])} | {100 * p['rel_error']:+.1f}% | "
                         f"{inside} |")
    lines += ["", f"Flags: {', '.join(bt.flags) or 'none'}.", ""]
    return lines


def _sensitivity_md(table: pd.DataFrame, meta: dict) -> list[str]:
    lines = [(f"Approach 2 refitted with C (and N) under each convention; allocations at the target "
             f"{_fmt(meta['target_budget'])} FLOPs (in the sweep's convention)."), "",
             ("| convention | N counts | k | a [95%] | b | N_opt at target | D_opt at target | a (approach 3) | "
             "N_opt at target (approach 3) |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        a_range = describe(sensitivity_interval(r))
        lines.append(f"| {r['convention']} | {r['N_count']} | {_fmt(r.get('k'))} | {_fmt(r.get('a'))} {a_range} | "
                     f"{_fmt(r.get('b'))} | {_fmt(r.get('N_opt_target'))} | {_fmt(r.get('D_opt_target'))} | "
                     f"{_fmt(r.get('a_param'))} | {_fmt(r.get('N_opt_target_param'))} |")
    spread = sensitivity_spread(table)
    if spread:
        lines += ["", "Spread: " + ", ".join(
            f"{k} = {_fmt(v) if not isinstance(v, list) else ' to '.join(map(_fmt, v))}"
            for k, v in spread.items()) + "."]
    return lines + [""]


def _recommendation_md(rec: Recommendation | None, rec_error: str | None, target: float) -> list[str]:
    lines = [f"## Recommendation for C = {_fmt(target)} FLOPs", ""]
    if rec is None:
        return lines + [f"No recommendation: {rec_error}", ""]
    lines += [f"Extrapolation: {rec.extrapolation_factor:.3g}× the largest fitted budget.", "",
              "| quantity | value | 95% interval (resamples ok/total) | from | note |", "|---|---|---|---|---|"]
    shape_keys = ("n_layer", "d_model", "n_heads", "d_ff")
    for key in ("N", "D", *shape_keys, "batch_size_tokens", "lr", "steps", "warmup_steps", "expected_loss",
                "expected_loss_parametric"):
        if key not in rec.params:
            continue
        label = rec.label(key)
        source = rec.sources[key] if key in rec.sources else rec.sources["shape"]
        note = f"**UNRELIABLE**: {rec.unreliable[key]}" if key in rec.unreliable else ""
        lines.append(f"| {label} | {_fmt(rec.params[key])} | {describe(rec.intervals.get(key))} | {source} | {note} |")
    if rec.model is None:
        lines += ["", f"Shape: none — {rec.shape_note}."]
    if rec.fallbacks:
        lines += ["", "**Fallbacks**", ""] + [f"- {k}: {v}" for k, v in rec.fallbacks.items()]
    if rec.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in rec.warnings]
    return lines + [""]

