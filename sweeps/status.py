"""`scaling sweep status DIR`: runs per state and a progress table, read from the results store (no side effects).

The `job` column is the run's newest scheduler job as `backend:job_id STATE`; the states of SLURM jobs not known to
be over are asked of sacct/squeue when sbatch is on PATH (PENDING, RUNNING, REQUEUED, PREEMPTED, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from sweeps.results import read_jsonl, sweep_dirs
from sweeps.store import FINAL, STATES, Store

STATUS_HEADERS = ["run_id", "status", "kind", "budget", "N", "shape", "steps", "tokens", "loss", "tries", "job"]


def run_progress(store: Store, run_id: str) -> dict:
    """Where a run stands: state, steps/tokens done (last metrics line, or the summary) and planned, last val loss."""
    planned = store.planned(run_id)
    summary = store.summary(run_id) or {}
    state = store.run_state(run_id)
    records = read_jsonl(store.run_dir(run_id) / "metrics.jsonl", label=f"run {run_id}", report=state != "running")
    last = records[-1] if records else {}
    losses = [r["val_loss"] for r in records if r.get("val_loss") is not None]
    done_final = state in FINAL
    return {
        "run_id": run_id,
        "status": state,
        "kind": planned["tags"].get("kind", ""),
        "budget": planned["budget"],
        "N": planned["N"],
        "shape": planned["shape"],
        "steps_done": summary.get("steps", last.get("step", 0)) if done_final else last.get("step", 0),
        "steps": planned["steps"],
        "tokens_done": summary.get("tokens", last.get("tokens", 0)) if done_final else last.get("tokens", 0),
        "tokens": planned["D"],
        "loss": summary.get("val_loss") if done_final else (losses[-1] if losses else None),
        "tries": len(store.attempts(run_id)),
        "spec_version": planned.get("spec_version", 1),
    }


def sweep_status(sweep_dir: str | os.PathLike) -> tuple[dict[str, int], list[dict]]:
    """(runs per state, one progress dict per run in plan order) of one sweep folder."""
    from sweeps.launch import job_status

    store = Store(sweep_dir)
    rows = [run_progress(store, run_id) for run_id in store.run_ids()]
    jobs = job_status(sweep_dir)
    for row in rows:
        job = jobs.get(row["run_id"])
        row["job"] = f"{job['backend']}:{job['job_id']} {job.get('state') or '?'}" if job else ""
    counts = dict.fromkeys(STATES, 0)
    for row in rows:
        counts[row["status"]] += 1
    return counts, rows


def format_status(results_dir: str | os.PathLike) -> str:
    """The text `scaling sweep status` prints, for a sweep folder or a folder of sweeps."""
    blocks = []
    for sweep_dir in sweep_dirs(results_dir):
        counts, rows = sweep_status(sweep_dir)
        store = Store(sweep_dir)
        name = store.plan().get("name", Path(sweep_dir).name)
        version = store.spec_version()
        versions = f", spec version {version} (runs of earlier versions included)" if version > 1 else ""
        head = (f"sweep {name} ({sweep_dir}{versions}): {len(rows)} runs: "
                + ", ".join(f"{k} {v}" for k, v in counts.items()))
        cells = [_status_cells(r) for r in rows]
        headers = STATUS_HEADERS
        if version > 1:  # an extended sweep: which spec version added each run
            headers = [*STATUS_HEADERS, "spec"]
            cells = [[*c, f"v{r['spec_version']}"] for c, r in zip(cells, rows)]
        table = format_table(headers, cells)
        blocks.append(f"{head}\n{table}")
    return "\n\n".join(blocks)


def _status_cells(r: dict) -> list[str]:
    s = r["shape"]
    frac = r["tokens_done"] / r["tokens"] if r["tokens"] else 0.0
    loss = r["loss"]
    return [
        r["run_id"], r["status"], r["kind"], f"{r['budget']:.2e}", si(r["N"]),
        f"{s['n_layer']}x{s['d_model']} h{s['n_heads']}", f"{r['steps_done']}/{r['steps']}",
        f"{si(r['tokens_done'])}/{si(r['tokens'])} ({frac:.0%})",
        f"{loss:.4f}" if isinstance(loss, (int, float)) else "-", str(r["tries"]), r.get("job") or "-",
    ]


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned text columns separated by two spaces, a header line and a rule under it."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def si(x: float) -> str:
    """A count with an SI suffix, 3 significant digits: 6480 -> "6.48k", 1.2e9 -> "1.2G"."""
    x = float(x)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"
