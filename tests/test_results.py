"""Loading a results folder into DataFrames, `sweep status`, and the `sweep` command line."""

from __future__ import annotations

import json
import math

import pytest
from helpers import small_spec_text

from scaling.accounting import CONVENTIONS
from scaling.cli import main
from sweeps import load_results
from sweeps.grid import plan
from sweeps.spec import load_spec
from sweeps.status import format_status, sweep_status
from sweeps.store import Store, write_json_atomic

SMALL = small_spec_text("[1e11]", 5, 6.0)
# Exactly the columns docs/design.md lists, written out here rather than imported from the code under test.
RUN_COLUMNS = ["run_id", "status", "budget", "kind", "family", "n_layer", "d_model", "n_heads", "d_ff", "seq_len",
               "vocab_size", "N", "N_total", "D", "C", *[f"C_{c}" for c in CONVENTIONS], "loss", "lr", "batch_size", "steps", "seed",
               "flop_convention", "wall_time_s", "spec_version"]
METRIC_COLUMNS = ["run_id", "step", "tokens", "flops", "train_loss", "val_loss", "lr", "N", "budget"]


def trainer_summary(run, status, val_loss, steps=None):
    """summary.json as scaling.train writes it (keys from docs/design.md)."""
    steps = run.steps if steps is None else steps
    tokens = steps * run.batch_tokens
    return {
        "status": status, "config": run.config, "params": {"total": run.N_total, "non_embedding": run.N,
                                                           "embedding": run.N_total - run.N},
        "flops_per_token": run.flops_per_token, "flop_convention": run.flop_convention, "tokens": tokens,
        "flops": run.flops_per_token[run.flop_convention] * tokens, "steps": steps, "val_loss": val_loss,
        "train_loss": val_loss - 0.1, "wall_time_s": 12.5, "corpus_fingerprint": "ab" * 32, "tokens_per_s": 1e4,
        "error": None if status == "completed" else "loss exploded",
    }


def metrics_lines(run, steps, eval_every):
    lines = []
    for step in range(1, steps + 1):
        line = {"step": step, "tokens": step * run.batch_tokens, "flops": step * run.batch_tokens * 6.0 * run.N,
                "train_loss": 5.0 - step * 0.01, "val_loss": None, "lr": run.lr, "tokens_per_s": 1e4,
                "elapsed_s": step * 0.1}
        if step % eval_every == 0:
            line["val_loss"] = 5.1 - step * 0.01
        lines.append(json.dumps(line))
    return lines


@pytest.fixture
def sweep(tmp_path):
    """A results folder with one run each: completed, diverged, running, failed, queued."""
    spec_path = tmp_path / "small.toml"
    spec_path.write_text(SMALL)
    spec = load_spec(spec_path)
    runs = plan(spec)
    assert len(runs) == 5
    store = Store(tmp_path / "results" / "small")
    store.init_sweep(spec, runs)
    done, diverged, running, failed, _ = runs
    write_json_atomic(store.run_dir(done.run_id) / "summary.json", trainer_summary(done, "completed", 2.25))
    (store.run_dir(done.run_id) / "metrics.jsonl").write_text("\n".join(metrics_lines(done, 6, 3)) + "\n")
    write_json_atomic(store.run_dir(diverged.run_id) / "summary.json",
                      trainer_summary(diverged, "diverged", 9.5, steps=4))
    (store.run_dir(running.run_id) / "metrics.jsonl").write_text(
        "\n".join(metrics_lines(running, 4, 2)) + '\n{"step": 5, "tok')  # a line cut off mid-write
    with store.claim(failed.run_id) as claim:
        claim.finish("failed", error="CUDA OOM")
    holder = store.claim(running.run_id)
    yield store, runs
    holder.release()


def test_load_results_runs_table(sweep):
    store, (done, diverged, running, failed, queued) = sweep
    runs, metrics = load_results(store.root)
    assert list(runs.columns) == RUN_COLUMNS
    assert list(metrics.columns) == METRIC_COLUMNS
    by_id = runs.set_index("run_id")
    assert by_id.loc[done.run_id, "status"] == "completed" and by_id.loc[done.run_id, "loss"] == 2.25
    assert by_id.loc[diverged.run_id, "status"] == "diverged"
    assert by_id.loc[diverged.run_id, "D"] == 4 * diverged.batch_tokens  # trained tokens, not planned
    assert by_id.loc[running.run_id, "status"] == "running"
    assert by_id.loc[failed.run_id, "status"] == "failed"
    assert by_id.loc[queued.run_id, "status"] == "queued"
    for r in (running, failed, queued):
        assert math.isnan(by_id.loc[r.run_id, "loss"]) and math.isnan(by_id.loc[r.run_id, "wall_time_s"])
        assert by_id.loc[r.run_id, "D"] == r.D and by_id.loc[r.run_id, "C"] == pytest.approx(r.flops)
    row = by_id.loc[done.run_id]
    assert row["N"] == done.N and row["N_total"] == done.N_total and row["budget"] == 1e11
    assert row["C"] == pytest.approx(1e11, rel=0.01) and row["C_6N"] == pytest.approx(6 * done.N * done.D)
    assert row["C_exact"] > row["C_exact_causal"] > 0
    assert row["batch_size"] == done.batch_size * 32 and row["seed"] == 0 and row["kind"] == "isoflop"
    assert row["n_layer"] == done.shape["n_layer"] and row["flop_convention"] == "6N"
    assert row["wall_time_s"] == 12.5 and row["lr"] == done.lr


def test_load_results_metrics_table(sweep):
    store, (done, _, running, _, _) = sweep
    _, metrics = load_results(store.root)
    assert metrics["val_loss"].notna().all()  # one row per evaluation
    assert sorted(metrics.loc[metrics.run_id == done.run_id, "step"]) == [3, 6]
    assert sorted(metrics.loc[metrics.run_id == running.run_id, "step"]) == [2, 4]  # cut-off line skipped
    assert (metrics.loc[metrics.run_id == done.run_id, "N"] == done.N).all()
    assert (metrics["budget"] == 1e11).all()


def test_load_results_from_a_folder_of_sweeps(sweep):
    store, runs = sweep
    all_runs, _ = load_results(store.root.parent)
    assert sorted(all_runs.run_id) == sorted(r.run_id for r in runs)
    with pytest.raises(FileNotFoundError):
        load_results(store.root / "runs")


def test_status_counts_and_progress(sweep):
    store, (done, _, running, failed, queued) = sweep
    counts, rows = sweep_status(store.root)
    assert counts == {"queued": 1, "running": 1, "completed": 1, "diverged": 1, "failed": 1}
    progress = {r["run_id"]: r for r in rows}
    assert progress[running.run_id]["steps_done"] == 4 and progress[running.run_id]["loss"] == pytest.approx(5.06)
    assert progress[queued.run_id]["steps_done"] == 0 and progress[queued.run_id]["loss"] is None
    assert progress[done.run_id]["steps_done"] == done.steps and progress[failed.run_id]["tries"] == 1
    text = format_status(store.root)
    assert "completed 1, diverged 1, failed 1" in text and "running 1" in text
    assert f"4/{running.steps}" in text and "2.2500" in text


def test_status_shows_each_runs_newest_job(sweep):
    from sweeps.launch import record_jobs

    store, (done, _, running, _, _) = sweep
    record_jobs(store.root, [(running.run_id, "4101", "local", "RUNNING"), (done.run_id, "4100", "local", "FAILED"),
                             (done.run_id, "4102", "local", "COMPLETED")])
    try:
        rows = {r["run_id"]: r for r in sweep_status(store.root)[1]}
        assert rows[running.run_id]["job"] == "local:4101 RUNNING"
        assert rows[done.run_id]["job"] == "local:4102 COMPLETED"  # the newest try, not the failed one
        assert "local:4101 RUNNING" in format_status(store.root)
    finally:
        (store.root / "jobs.json").unlink()


def test_cli_status_and_plan(sweep, capsys):
    store, runs = sweep
    assert main(["sweep", "status", str(store.root)]) == 0
    assert runs[0].run_id in capsys.readouterr().out
    spec_path = store.root.parent.parent / "small.toml"
    assert main(["sweep", "plan", str(spec_path), "--json", "grid.models_per_budget=3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["runs"]) == 3 and all(abs(r["flops_error"]) <= 0.01 for r in out["runs"])
    assert out["totals"]["flops"] == pytest.approx(sum(r["flops"] for r in out["runs"]))
    assert main(["sweep", "plan", str(spec_path), "resources.throughput_flops=1e9"]) == 0
    text = capsys.readouterr().out
    assert "total: 5 runs (5 isoflop)" in text and "wall time: ~" in text
    assert main(["sweep", "plan", str(spec_path), "grid.models_per_budget=0"]) == 2
    assert "grid.models_per_budget: expected a positive integer, got 0" in capsys.readouterr().err
