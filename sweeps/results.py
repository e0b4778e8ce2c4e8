"""Read a sweep's results folder into two DataFrames: one row per run, one row per evaluation.

`load_results(results_dir)` accepts a sweep folder (holding plan.json) or a folder of sweep folders (all are read).
A run's figures come from its summary.json when it has one (what was trained), else from planned.json (what is
planned): N, D, C, steps. `loss` is the final validation loss of a completed or diverged run and NaN otherwise.
`C` counts FLOPs under the sweep's convention (`flop_convention`); `C_<convention>` recounts the same tokens under
every convention of `scaling.accounting.CONVENTIONS` (flops per token of the shape x D). `spec_version` is the
version of the sweep's spec that added the run (1 unless the sweep was extended with `sweep launch --extend`), so
a fit can keep the versions apart.

A `metrics.jsonl` whose lines do not all parse (typically its last line cut off by a crash) is reported with a
warning naming the run and the line; the readable lines are used.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd

from scaling.accounting import CONVENTIONS
from sweeps.store import FINAL, Store

RUN_COLUMNS = [
    "run_id", "status", "budget", "kind", "family", "n_layer", "d_model", "n_heads", "d_ff", "seq_len", "vocab_size", "N",
    "N_total", "D", "C", *(f"C_{c}" for c in CONVENTIONS), "loss", "lr", "batch_size", "steps", "seed", "flop_convention",
    "wall_time_s", "spec_version",
]
METRIC_COLUMNS = ["run_id", "step", "tokens", "flops", "train_loss", "val_loss", "lr", "N", "budget"]
NAN = float("nan")


def load_results(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, metrics) DataFrames with exactly RUN_COLUMNS and METRIC_COLUMNS (see docs/design.md)."""
    rows, metric_rows = [], []
    for sweep_dir in sweep_dirs(results_dir):
        store = Store(sweep_dir)
        for run_id in store.run_ids():
            planned = store.planned(run_id)
            row = run_row(store, planned)
            rows.append(row)
            metric_rows += metrics_rows(store.run_dir(run_id) / "metrics.jsonl", planned,
                                        report=row["status"] != "running")
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    metrics = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
    return runs, metrics


def sweep_dirs(results_dir: str | os.PathLike) -> list[Path]:
    """[results_dir] if it holds plan.json, else its sub-folders that do; FileNotFoundError when there are none."""
    root = Path(results_dir)
    if (root / "plan.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob("*/plan.json")) if root.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{root}: no sweep results here (no plan.json in it or in its sub-folders)")
    return found


def run_row(store: Store, planned: dict) -> dict:
    """One row of the runs table, from summary.json when the run has one, else from planned.json."""
    run_id = planned["run_id"]
    summary = store.summary(run_id) or {}
    config = summary.get("config") or planned["config"]
    model, train = config["model"], config["train"]
    params = summary.get("params") or {}
    per_token = summary.get("flops_per_token") or planned["flops_per_token"]
    tokens = summary.get("tokens", planned["D"])
    convention = summary.get("flop_convention", planned["flop_convention"])
    seq_len = model["seq_len"]
    batch_tokens = train["batch_size"] * seq_len if train.get("batch_size") else train.get("batch_tokens")
    status = store.run_state(run_id)
    return {
        "run_id": run_id,
        "status": status,
        "budget": planned["budget"],
        "kind": planned["tags"].get("kind", "isoflop"),
        **{k: model.get(k) for k in ("family", "n_layer", "d_model", "n_heads", "d_ff", "seq_len", "vocab_size")},
        "N": params.get("non_embedding", planned["N"]),
        "N_total": params.get("total", planned["N_total"]),
        "D": tokens,
        "C": summary.get("flops", per_token[convention] * tokens),
        **{f"C_{c}": per_token[c] * tokens if c in per_token else NAN for c in CONVENTIONS},
        "loss": _number(summary.get("val_loss")) if status in FINAL else NAN,
        "lr": train.get("lr", planned["lr"]),
        "batch_size": batch_tokens or planned["batch_tokens"],
        "steps": summary.get("steps", planned["steps"]),
        "seed": train.get("seed", planned["tags"].get("seed")),
        "flop_convention": convention,
        "wall_time_s": _number(summary.get("wall_time_s")),
        "spec_version": int(planned.get("spec_version", 1)),
    }


def metrics_rows(path: Path, planned: dict, report: bool = True) -> list[dict]:
    """Rows of metrics.jsonl that hold an evaluation (val_loss set); unreadable lines are skipped, and reported
    when `report` (not for a running run, whose last line may be half written at this instant)."""
    rows = []
    for record in read_jsonl(path, label=f"run {planned['run_id']}" if report else None, report=report):
        if record.get("val_loss") is None:
            continue
        row = {k: record.get(k, NAN) for k in METRIC_COLUMNS[1:7]}
        rows.append({"run_id": planned["run_id"], **row, "N": planned["N"], "budget": planned["budget"]})
    return rows


def read_jsonl(path: Path, label: str | None = None, report: bool = True) -> list[dict]:
    """The JSON objects of a .jsonl file ([] when it is missing), skipping blank lines.

    Lines that are not JSON objects (a last line cut off by a crash, a torn write) are skipped with one warning that
    names `label` (e.g. "run 1a2b3c4d5e6f"), the file, the lines and how many records were read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records, bad = [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad and report:
        last = len(lines) - (lines[-1] == "")
        where = "its last line is cut off" if bad == [last] else f"line(s) {', '.join(map(str, bad[:5]))} unreadable"
        warnings.warn(f"{label or path}: {path.name} is truncated or torn ({where}); read {len(records)} records "
                      f"from {path}", stacklevel=2)
    return records


def _number(value: object) -> float:
    """A float, NaN for None or non-numbers (JSON has no NaN/inf unless the writer allowed them)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return NAN
    return NAN

