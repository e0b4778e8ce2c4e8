"""`scaling fit` and `scaling recommend` (registered on the `scaling` command by scaling/cli.py)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

from analysis.data import BATCH_UNITS, CANONICAL, PARAM_COUNTS, load_runs
from analysis.recommend import recommend
from scaling.config import FAMILIES
from scaling.errors import ConfigError

LAW_CHOICES = ("parametric", "isoflop", "envelope", "loss", "hyperparams", "all")

FIT_EPILOG = """\
JSON written by --json (schema 2; FLOPs under the runs' convention, N as meta.parameter_count says, D in tokens):
  {"schema_version": 2, "meta": {...},
   "<law>": {"kind":.., "params": {name: value}, "intervals": {name: {"lo", "hi", "n_ok", "n_total", "method",
             "level", "reason"}}, "draws": {name: [..]}, "unreliable": {name: reason}, "noise": {...},
             "diagnostics": {...}, "success":.., "message":.., + the law's members}
   for <law> in parametric, isoflop (members N_opt, D_opt, L_opt: power laws in C; budgets: per-budget table),
   loss_vs_compute, envelope, hyperparams; "backtest": {..., "table": [per held-out budget]},
   "convention_sensitivity": {"rows": [..], ...}}
Intervals are 95% percentile intervals of the bootstrap draws; n_ok of n_total draws succeeded, and an interval
that could not be computed has lo = hi = null and a reason. Read a file back with analysis.load_fit(path).
Only the laws asked for (--law) and allowed by the data are present; meta.skipped says why one is missing.
"""


def register(subparsers) -> None:
    """Add the `fit` and `recommend` subcommands."""
    fit = subparsers.add_parser(
        "fit", help="fit scaling laws (with bootstrap intervals) to a runs table or a sweep results directory",
        description="Fit scaling laws to RUNS (a CSV/Parquet table or a sweep results directory).",
        epilog=FIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("runs", metavar="RUNS",
                     help="CSV or Parquet file (one row per run, or per checkpoint with run_id and step), or a sweep "
                          "results directory")
    fit.add_argument("--law", choices=LAW_CHOICES, default="all", help="which law to fit (default: all)")
    fit.add_argument("--json", metavar="OUT.json", help="write the fit as JSON (see below)")
    fit.add_argument("--out", metavar="DIR", help="write the full report: fit.json, report.md, PNG and SVG figures")
    fit.add_argument("--columns", action="append", metavar='loss="smooth loss",N="Model Size"',
                     help=f"map canonical columns ({', '.join(CANONICAL)}) to source columns; quote names with "
                          "commas or spaces; mapping onto a name the file already has sets the old column aside; "
                          "repeatable")
    fit.add_argument("--param-count", choices=PARAM_COUNTS,
                     help="what N counts: all parameters or all but the embeddings (recorded in fit.json meta; a "
                          "sweep folder records its own)")
    fit.add_argument("--batch-unit", choices=BATCH_UNITS,
                     help="unit of batch_size (default: sequences when the table has a seq_len column, else tokens); "
                          "sequences are converted to tokens with seq_len")
    fit.add_argument("--n-boot", type=int, default=1000,
                     help="bootstrap resamples (default 1000; 0 = point estimates only, no intervals)")
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
    rec.add_argument("--family", choices=FAMILIES,
                     help="model family of the shape (default: the fit's; without either no shape is given)")
    rec.add_argument("--seq-len", type=int, metavar="TOKENS",
                     help="context length in tokens (default: the fit's; needed for the shape and whole-sequence "
                          "batches)")
    rec.add_argument("--vocab-size", type=int, metavar="V",
                     help="vocabulary size (default: the fit's; without either no shape is given)")
    rec.add_argument("--param-count", choices=PARAM_COUNTS,
                     help="what the fit's N counts, for the shape (default: the fit's meta.parameter_count)")
    rec.set_defaults(func=run_recommend)


def parse_columns(specs: list[str] | None) -> dict[str, str] | None:
    """Parse ['N=Model Size,C=Training FLOP', 'loss="smooth, loss"'] into {"N": "Model Size", ...}.

    Pairs are separated by commas outside quotes; a source name may be quoted (single or double quotes) to hold
    commas or spaces. Each canonical name may appear once.
    """
    if not specs:
        return None
    out: dict[str, str] = {}
    for spec in specs:
        for item in _split_unquoted(spec):
            if not item.strip():
                continue
            name, sep, source = item.partition("=")
            name, source = name.strip(), _unquote(source.strip())
            if not sep or not name or not source:
                raise ConfigError("--columns", 'CANONICAL=SOURCE pairs separated by commas, e.g. N="Model Size"', item)
            if name in out:
                raise ConfigError("--columns", "each canonical name mapped once", name)
            out[name] = source
    return out


def _split_unquoted(text: str) -> list[str]:
    """Split on commas that are not inside single or double quotes; an unclosed quote is a ConfigError."""
    parts, current, quote = [], [], None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quote:
        raise ConfigError("--columns", "closed quotes", text)
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


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
    """`scaling fit`: load the runs, fit every law they allow, print the summary, write --json / --out."""
    from analysis.report import fit_all, write_report

    if args.n_boot < 0:
        raise ConfigError("--n-boot", "a non-negative number of bootstrap resamples", args.n_boot)
    target = parse_budget(args.target, "--target") if args.target is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(args.runs, parse_columns(args.columns), param_count=args.param_count,
                         batch_unit=args.batch_unit)
    for w in caught:
        print(f"warning: {w.message}")
    for line in describe_loaded(runs):
        print(line)
    report = fit_all(runs, laws=args.law, n_boot=args.n_boot, seed=args.seed, backtest=not args.no_backtest,
                     target_budget=target, drop_highest_loss=args.drop_highest_loss)
    print(report.summary())
    if args.n_boot == 0:
        print("no intervals: --n-boot 0 gives point estimates only (no bootstrap, so nothing is inside or outside "
              "an interval)")
    if args.json:
        _write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    if args.out:
        path = write_report(report, args.out, target_budget=target)
        print(f"wrote {path} (and fit.json, figures) in {args.out}")
    if not report.fits:
        print("error: no law could be fitted from these runs (each 'skipped' line above says why)", file=sys.stderr)
        return 2
    return 0


def describe_loaded(runs) -> list[str]:
    """Lines saying what load_runs left out or assumed: excluded runs by status, duplicates, units, N's count."""
    a = runs.attrs
    lines = []
    counts = a.get("excluded_counts") or {}
    if counts:
        lines.append(f"excluded {sum(counts.values())} run(s): "
                     + ", ".join(f"{n} {what}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    if a.get("per_checkpoint"):
        lines.append(f"per-checkpoint table: {len(runs)} runs (last checkpoint each), "
                     f"{len(a.get('metrics', []))} checkpoints kept for the envelope")
    if a.get("derived"):
        lines.append("derived: " + ", ".join(f"{k} = {v}" for k, v in a["derived"].items()) + " (6N convention)")
    if a.get("aliases"):
        lines.append("read as: " + ", ".join(f"{v} -> {k}" for k, v in a["aliases"].items()))
    if a.get("set_aside"):
        lines.append("set aside: " + ", ".join(f"{k} -> {v}" for k, v in a["set_aside"].items()))
    if a.get("batch_unit"):
        lines.append(f"batch_size read in {a['batch_unit']}"
                     + (" and converted to tokens (x seq_len)" if a["batch_unit"] == "sequences" else ""))
    lines.append(f"N counts {a.get('parameter_count', 'unspecified')} parameters"
                 + (" (declare it with --param-count)" if a.get("parameter_count") == "unspecified" else ""))
    return lines


def run_recommend(args) -> int:
    """`scaling recommend`: print (and with --json write) the recommendation for --budget from --fit."""
    budget = parse_budget(args.budget)
    for option, value in (("--seq-len", args.seq_len), ("--vocab-size", args.vocab_size)):
        if value is not None and value <= 0:
            raise ConfigError(option, "a positive integer", value)
    rec = recommend(args.fit, budget, family=args.family, seq_len=args.seq_len, vocab_size=args.vocab_size,
                    param_count=args.param_count)
    print(rec.summary())
    if args.json:
        _write_json(args.json, rec.to_dict())
        print(f"wrote {args.json}")
    return 0


def _write_json(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
