"""`scaling fit` and `scaling recommend` (registered on the `scaling` command by scaling/cli.py)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scaling.errors import ConfigError

LAW_CHOICES = ("parametric", "isoflop", "envelope", "loss", "hyperparams", "all")

FIT_EPILOG = """\
JSON written by --json (FLOPs under the runs' convention, N in non-embedding params, D in tokens):
  {"meta": {...}, "parametric": {"E":.., "A":.., "B":.., "alpha":.., "beta":.., "a":.., "b":..,
                                 "intervals": {name: [lo, hi]}, "n_boot": n, "samples": [[E, A, B, alpha, beta]..]},
   "isoflop": {"a":.., "b":.., "N_opt": {"coef":.., "exponent":.., "intervals": {"coef": [lo, hi],
               "exponent": [lo, hi]}, "samples": [[coef, exponent], ..]}, "D_opt": {...}, "L_opt": {...},
               "budgets": [{"budget":.., "N_opt":.., "N_opt_lo":.., "N_opt_hi":.., "D_opt":.., "L_opt":..,
                            "flags": [..]}, ..]},
   "loss_vs_compute": {...}, "envelope": {...}, "hyperparams": {...}, "backtest": {...},
   "convention_sensitivity": {...}}
intervals are 95% percentile bootstrap intervals over n_boot resamples of the runs.
Only the laws asked for (--law) and allowed by the data are present; meta.skipped says why one is missing.
"""


def register(subparsers) -> None:
    """Add the `fit` and `recommend` subcommands."""
    fit = subparsers.add_parser(
        "fit", help="fit scaling laws (with bootstrap intervals) to a runs table or a sweep results directory",
        description="Fit scaling laws to RUNS (a CSV/Parquet table or a sweep results directory).",
        epilog=FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("runs", metavar="RUNS", help="CSV or Parquet file, or a sweep results directory (with runs/)")
    fit.add_argument("--law", choices=LAW_CHOICES, default="all", help="which law to fit (default: all)")
    fit.add_argument("--json", metavar="OUT.json", help="write the fit as JSON (see below)")
    fit.add_argument("--out", metavar="DIR", help="write the full report: fit.json, report.md, PNG and SVG figures")
    fit.add_argument("--columns", action="append", metavar='N="Model Size",C="Training FLOP"',
                     help="map canonical columns (N, D, loss, C, lr, batch_size, run_id, budget) to source columns")
    fit.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    fit.add_argument("--target", metavar="BUDGET", help="target budget in FLOPs for the report's recommendation")
    fit.add_argument("--drop-highest-loss", type=int, default=0, metavar="K",
                     help="drop the K highest-loss runs before fitting (Epoch AI drop 5 Chinchilla points)")
    fit.add_argument("--no-backtest", action="store_true", help="skip the held-out-budget backtest")
    fit.set_defaults(func=run_fit)

    rec = subparsers.add_parser(
        "recommend", help="recommend N, D, shape, batch, LR, steps and expected loss for a FLOP budget",
        description="Recommend a training run for a FLOP budget from a fit.json written by `scaling fit`.")
    rec.add_argument("--budget", required=True, metavar="C", help="FLOP budget, e.g. 1e21 (the fit's convention)")
    rec.add_argument("--fit", required=True, metavar="FIT.json", help="fit.json from `scaling fit --json/--out`")
    rec.add_argument("--json", metavar="REC.json", help="write the recommendation (values and intervals) as JSON")
    rec.add_argument("--family", choices=("gpt2", "llama"), help="model family (default: the fit's, else gpt2)")
    rec.add_argument("--seq-len", type=int, help="context length in tokens (default: the fit's, else 256)")
    rec.add_argument("--vocab-size", type=int, help="vocabulary size (default: the fit's, else 256)")
    rec.set_defaults(func=run_recommend)


def parse_columns(specs: list[str] | None) -> dict[str, str] | None:
    """Parse ['N=Model Size,C=Training FLOP', ...] into {"N": "Model Size", "C": "Training FLOP"}."""
    if not specs:
        return None
    out = {}
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, source = item.partition("=")
            if not sep or not name.strip() or not source.strip():
                raise ConfigError("--columns", 'CANONICAL=SOURCE pairs separated by commas, e.g. N="Model Size"', item)
            out[name.strip()] = source.strip().strip("\"'")
    return out


def parse_budget(text, field: str = "--budget") -> float:
    """A positive FLOP count from text such as '1e21' or '6.2e18'."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(field, "a positive number of FLOPs such as 1e21", text) from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(field, "a positive number of FLOPs such as 1e21", text)
    return value


def run_fit(args) -> int:
    from analysis.report import fit_all, write_report

    if args.n_boot < 0:
        raise ConfigError("--n-boot", "a non-negative number of bootstrap resamples", args.n_boot)
    target = parse_budget(args.target, "--target") if args.target is not None else None
    report = fit_all(args.runs, laws=args.law, n_boot=args.n_boot, seed=args.seed,
                     columns=parse_columns(args.columns), backtest=not args.no_backtest, target_budget=target,
                     drop_highest_loss=args.drop_highest_loss)
    print(report.summary())
    if args.json:
        _write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    if args.out:
        path = write_report(report, args.out, target_budget=target)
        print(f"wrote {path} (and fit.json, figures) in {args.out}")
    return 0


def run_recommend(args) -> int:
    from analysis.recommend import recommend

    budget = parse_budget(args.budget)
    rec = recommend(args.fit, budget, family=args.family, seq_len=args.seq_len, vocab_size=args.vocab_size)
    print(rec.summary())
    if args.json:
        _write_json(args.json, rec.to_dict())
        print(f"wrote {args.json}")
    return 0


def _write_json(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
