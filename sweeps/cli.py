"""Subcommands `scaling sweep plan|launch|status` (registered through the `scaling.commands` entry points)."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from sweeps.grid import design, estimate_wall_time, measure_throughput, total_flops
from sweeps.spec import PRESETS, load_spec
from sweeps.store import Store

SPEC_HELP = f"a sweep spec TOML file or a preset name ({', '.join(PRESETS)})"
OVERRIDES_HELP = "spec overrides as dotted.key=value (TOML values), e.g. budgets.values=[1e12,3e12]"


class _IntermixedParser(argparse.ArgumentParser):
    """Lets key=value overrides come after options (`plan SPEC --json a=b`), which plain argparse refuses."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sweep` with subcommands plan, launch, status."""
    sweep = subparsers.add_parser("sweep", help="plan, launch and follow an isoFLOP sweep",
                                  description="Plan, launch and follow an isoFLOP sweep.")
    sub = sweep.add_subparsers(dest="sweep_command", required=True, metavar="SUBCOMMAND",
                               parser_class=_IntermixedParser)

    p = sub.add_parser("plan", help="print the runs a spec asks for, with totals and a wall-time estimate")
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--json", action="store_true", help="print the rows and totals as JSON")
    p.add_argument("--measure", action="store_true",
                   help="time a few training steps of the smallest and largest model for the wall-time estimate")
    p.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="whose concurrency the wall-time estimate assumes (default local)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("launch", help="plan, write the results store, and run the pending runs")
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="where runs train: 'local' (child processes of this command) or 'slurm' (a job array)")
    p.add_argument("--results", default="results/", metavar="DIR", help="results root; the sweep goes to DIR/<name>")
    p.add_argument("--wait", action="store_true", help="stay until every run has ended")
    p.add_argument("--dry-run", action="store_true", help="show what would be launched, launch nothing")
    p.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="relaunch a failed run at most N times (default 2)")
    p.add_argument("--extend", action="store_true",
                   help="add a changed spec's runs to the existing sweep in DIR/<name> as a new spec version "
                        "(recorded in spec.json; each run keeps the version that added it); without it a changed "
                        "spec is refused")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("status", help="runs per state and the progress of each run")
    p.add_argument("dir", metavar="DIR", help="a sweep results folder (results/<name>) or a folder of them")
    p.set_defaults(func=cmd_status)


# ------------------------------------------------------------------------------------------------ commands


def cmd_plan(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)
    result = design(spec)
    throughput, how = _throughput(spec, result.runs, args.measure)
    totals = plan_totals(spec, result.runs, throughput, args.backend)
    if args.json:
        print(json.dumps({"name": spec.name, "runs": [plan_row(r) for r in result.runs],
                          "dropped": [vars(d) for d in result.dropped], "totals": {**totals, "throughput": how},
                          "warnings": result.warnings, "problems": [str(e) for e in result.problems]}, indent=1))
        return 0
    print(format_plan(spec, result, totals, how))
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from sweeps.launch import launch  # executors (submitit): only when launching

    spec = load_spec(args.spec, args.overrides)
    store = Store(Path(args.results) / spec.name)
    store.check_spec(spec, extend=args.extend)  # a changed spec without --extend: refused before anything runs
    result = launch(spec, backend=args.backend, results=args.results, wait=args.wait, dry_run=args.dry_run,
                    max_retries=args.max_retries, extend=args.extend)
    if hasattr(result, "summary"):
        print(result.summary())
    states = getattr(result, "run_states", {}) or {}
    return 1 if args.wait and "failed" in states.values() else 0  # 1: some run failed for good


def cmd_status(args: argparse.Namespace) -> int:
    from sweeps.status import format_status  # pandas: only when asked

    print(format_status(args.dir))
    return 0


# ------------------------------------------------------------------------------------------------ plan output


def plan_row(run) -> dict:
    """The machine-readable row of one planned run (the same figures as the table)."""
    return {
        "run_id": run.run_id, "budget": run.budget, "kind": run.tags["kind"], "seed": run.tags.get("seed"),
        "N": run.N, "N_total": run.N_total, **run.shape, "D": run.D, "tokens_per_param": run.tokens_per_param,
        "batch_size": run.batch_size, "batch_tokens": run.batch_tokens, "lr": run.lr, "steps": run.steps,
        "flops": run.flops, "flops_error": run.flops_error, "flop_convention": run.flop_convention,
        "time_min": run.time_min,
    }


def plan_totals(spec, runs, throughput, backend: str) -> dict:
    """Total compute, and the wall time at `throughput` FLOP/s per run with the backend's concurrency."""
    concurrency = spec.backend.local.max_concurrent if backend == "local" else spec.backend.slurm.array_parallelism
    kinds: dict[str, int] = {}
    for r in runs:
        kinds[r.tags["kind"]] = kinds.get(r.tags["kind"], 0) + 1
    totals = {"runs": len(runs), "by_kind": kinds, "flops": total_flops(runs), "flop_convention":
              spec.budgets.convention, "backend": backend, "concurrency": concurrency, "wall_time_s": None,
              "run_time_s": None}
    if throughput is not None and runs:
        rate = throughput if callable(throughput) else (lambda r: throughput)
        totals["run_time_s"] = sum(r.flops / rate(r) for r in runs)
        totals["wall_time_s"] = estimate_wall_time(runs, rate, concurrency)
    return totals


def format_plan(spec, result, totals: dict, how: str) -> str:
    from sweeps.status import format_table, si  # pandas: only when asked

    headers = ["budget", "kind", "N (non-emb / total)", "shape (L x d, heads, d_ff)", "D (tokens)", "D/N", "batch",
               "lr", "steps", f"FLOPs ({spec.budgets.convention})", "limit"]
    rows = []
    for r in result.runs:
        s = r.shape
        kv = f"/{s['n_kv_heads']}" if s["n_kv_heads"] != s["n_heads"] else ""
        rows.append([
            f"{r.budget:.2e}", r.tags["kind"] + (f" s{r.tags['seed']}" if len(spec.train.seeds) > 1 else ""),
            f"{si(r.N)} / {si(r.N_total)}", f"{s['n_layer']}x{s['d_model']}, {s['n_heads']}{kv}, {s['d_ff']}",
            si(r.D), f"{r.tokens_per_param:.1f}", f"{r.batch_size}x{r.config['model']['seq_len']}",
            f"{r.lr:.3g}", str(r.steps), f"{r.flops:.3e} ({r.flops_error:+.2%})", _duration(60 * r.time_min),
        ])
    lines = [f"sweep {spec.name}: {len(result.runs)} runs", format_table(headers, rows)]
    for d in result.dropped:
        lines.append(f"dropped: {d.kind} run at {d.budget:.2e} FLOPs, N={si(d.N)} ({d.shape}): {d.reason}")
    lines += [f"warning: {w}" for w in result.warnings]
    lines += [f"problem: {e} (`sweep launch` refuses until it is fixed)" for e in result.problems]
    kinds = ", ".join(f"{v} {k}" for k, v in totals["by_kind"].items())
    lines.append(f"total: {totals['runs']} runs ({kinds}), {totals['flops']:.3e} FLOPs ({totals['flop_convention']})")
    if totals["wall_time_s"] is None:
        lines.append("wall time: set resources.throughput_flops in the spec, or pass --measure, for an estimate")
    else:
        gpus = spec.resources.gpus
        device_time = f", {totals['run_time_s'] * max(gpus, 1) / 3600:.3g} {'GPU' if gpus else 'run'}-hours"
        lines.append(f"wall time: ~{_duration(totals['wall_time_s'])} with {totals['concurrency']} runs at once "
                     f"({totals['backend']}) at {how}{device_time}")
    return "\n".join(lines)


def _throughput(spec, runs, measure: bool):
    """(FLOP/s per run as a number or a function of the run, and a phrase saying where it came from)."""
    if measure and runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rate = measure_throughput(spec, runs)
        lo, hi = min(runs, key=lambda r: r.N), max(runs, key=lambda r: r.N)
        return rate, f"measured {rate(lo):.2e}-{rate(hi):.2e} FLOP/s per run"
    if spec.resources.throughput_flops is not None:
        return spec.resources.throughput_flops, f"{spec.resources.throughput_flops:.2e} FLOP/s per run"
    return None, "unknown throughput"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
