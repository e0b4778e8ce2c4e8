"""The local backend, for real: worker subprocesses train tiny runs; kill -9, cancel and Ctrl-C, then resume.

The interrupted runs have the same configs (and so the same run ids) as runs of the module's 4-run sweep, which
serve as the uninterrupted references: a resumed run must end with the same validation loss (1e-6, CPU).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import running_pid, wait_for

from sweeps.executors.local import LocalExecutor
from sweeps.launch import job_status, launch, load_jobs
from sweeps.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, make_spec):
    root = tmp_path_factory.mktemp("local")
    spec = make_spec(root / "tiny.toml")
    result = launch(spec, backend="local", results=root / "results", wait=True, progress=False)
    return spec, result


def final_loss(sweep_dir: Path, run_id: str) -> float:
    return Store(sweep_dir).summary(run_id)["val_loss"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_sweep_runs_every_run_once_and_loads(local_sweep):
    from sweeps import load_results

    _, result = local_sweep
    assert len(result.submitted) == 4 and result.skipped == {}
    assert set(result.job_states.values()) == {"COMPLETED"}
    assert set(result.run_states.values()) == {"completed"}
    runs, metrics = load_results(result.sweep_dir)
    assert sorted(runs.run_id) == sorted(result.submitted)
    assert (runs.status == "completed").all() and runs.loss.map(math.isfinite).all()
    assert set(metrics.run_id) == set(result.submitted) and metrics.step.max() == 35
    store = Store(result.sweep_dir)
    for run_id in result.submitted:
        (attempt,) = store.attempts(run_id)
        assert attempt["status"] == "completed" and attempt["job_id"] == result.job_ids[run_id]
        assert attempt["pid"] != os.getpid() and attempt["end"] is not None
    assert {r[-1]["state"] for r in load_jobs(result.sweep_dir).values()} == {"COMPLETED"}


def test_each_slot_trains_its_runs_in_one_process(local_sweep):
    """max_concurrent = 2: two long-lived workers trained the four runs (no import per run), each run once."""
    _, result = local_sweep
    store = Store(result.sweep_dir)
    pids = [a["pid"] for run_id in result.submitted for a in store.attempts(run_id)]
    assert len(pids) == 4 and len(set(pids)) == 2
    for run_id in result.submitted:  # each run's own output still goes to its own log
        assert f"run {run_id}: completed" in (store.run_dir(run_id) / "worker.log").read_text()


def test_relaunch_submits_nothing(local_sweep):
    spec, first = local_sweep
    again = launch(spec, backend="local", results=first.sweep_dir.parent, wait=True, progress=False)
    assert again.submitted == [] and again.jobs == []
    assert again.skipped == dict.fromkeys(first.submitted, "completed")


def test_dry_run_launches_nothing(tiny_spec, tmp_path):
    result = launch(tiny_spec, backend="local", results=tmp_path / "results", dry_run=True)
    assert len(result.submitted) == 4 and "sweeps.worker" in result.script
    assert not (tmp_path / "results").exists()


def test_kill9_and_cancel_are_reported_and_resume_to_the_same_loss(local_sweep, tmp_path, make_spec):
    """Seeds 0 and 1 again, in a new results folder: kill -9 one worker, cancel the other; relaunch resumes both."""
    _, reference = local_sweep
    spec = make_spec(tmp_path / "two.toml", seeds=(0, 1))
    executor = LocalExecutor(max_concurrent=2, threads_per_run=1)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(result=launch(
        spec, backend="local", results=tmp_path / "results", executor=executor, progress=False)))
    thread.start()
    store = Store(tmp_path / "results" / "tiny")
    wait_for(lambda: len(executor.jobs) == 2)
    killed, cancelled = executor.jobs
    # each run is held with SIGSTOP as soon as it is mid-way (a checkpoint written, not finished), so neither can
    # finish before the other gets there, however the two workers are scheduled
    held: dict[str, int] = {}

    def hold_both() -> bool:
        for job in (killed, cancelled):
            if job.run_dir.name not in held and (pid := running_pid(store, job.run_dir.name)):
                os.kill(pid, signal.SIGSTOP)
                held[job.run_dir.name] = pid
        return len(held) == 2

    wait_for(hold_both)
    os.kill(held[killed.run_dir.name], signal.SIGKILL)
    cancelled.cancel()  # SIGTERM, delivered when the worker continues
    os.kill(held[cancelled.run_dir.name], signal.SIGCONT)
    thread.join(timeout=120)
    result = out["result"]
    kid, cid = killed.run_dir.name, cancelled.run_dir.name
    assert result.job_states == {kid: "FAILED", cid: "CANCELLED"}
    assert store.run_state(kid) == "failed"  # lost: recorded running, nobody holds the lock
    assert store.attempts(cid)[-1]["status"] == "interrupted"  # SIGTERM: checkpointed and exited
    status = job_status(store.root)
    assert status[kid]["state"] == "FAILED" and status[cid]["state"] == "CANCELLED"

    again = launch(spec, backend="local", results=tmp_path / "results", progress=False)
    assert sorted(again.submitted) == sorted([kid, cid])
    assert set(again.run_states.values()) == {"completed"}
    for run_id in (kid, cid):
        assert len(store.attempts(run_id)) >= 2
        assert final_loss(store.root, run_id) == pytest.approx(final_loss(reference.sweep_dir, run_id), abs=1e-6)
    assert [a["status"] for a in store.attempts(kid)] == ["lost", "completed"]


@pytest.mark.slow  # ~30 s: a launcher subprocess, then a relaunch
def test_ctrl_c_stops_workers_and_relaunch_resumes(local_sweep, tmp_path, make_spec, python_sigint):
    """SIGINT to `scaling sweep launch --wait`: the worker checkpoints and exits; a relaunch finishes the run."""
    _, reference = local_sweep
    spec = make_spec(tmp_path / "one.toml", seeds=(2,))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "scaling.cli", "sweep", "launch", str(spec), "--backend", "local",
           "--results", str(results), "--wait"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store(results / "tiny")
    run_id = wait_for(lambda: store.plan_path.exists() and store.run_ids()[0])
    pid = wait_for(lambda: running_pid(store, run_id))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not alive(pid)
    assert store.attempts(run_id)[-1]["status"] == "interrupted"
    assert store.run_state(run_id) == "queued"

    again = launch(spec, backend="local", results=results, progress=False)
    assert again.submitted == [run_id] and again.run_states == {run_id: "completed"}
    assert final_loss(store.root, run_id) == pytest.approx(final_loss(reference.sweep_dir, run_id), abs=1e-6)


def test_invalid_spec_launches_nothing(tmp_path, make_spec):
    from scaling.errors import ConfigError

    spec = make_spec(tmp_path / "bad.toml", max_concurrent=0)
    with pytest.raises(ConfigError, match="max_concurrent"):
        launch(spec, backend="local", results=tmp_path / "results")
    assert not (tmp_path / "results").exists()


FAKE_PYTHON = """#!/bin/sh
# Stands in for python: records what a worker would see, then "trains" for a moment. A serving worker
# (`-m sweeps.worker --serve`) reads one {"run_dir", "job_id"} line per run and answers {"job_id", "exit": 0}.
train() {
  mkdir -p "$1"
  start=$(date +%s.%N)
  sleep 0.4
  echo "$start $(date +%s.%N)|$CUDA_VISIBLE_DEVICES|$SCALING_NUM_THREADS|$ARGS|$$" > "$1/fake.txt"
}
ARGS="$*"
for last; do :; done
if [ "$last" = "--serve" ]; then
  while read -r line; do
    dir=$(echo "$line" | sed 's/.*"run_dir": "\\([^"]*\\)".*/\\1/')
    job=$(echo "$line" | sed 's/.*"job_id": "\\([^"]*\\)".*/\\1/')
    train "$dir"
    echo "{\\"job_id\\": \\"$job\\", \\"exit\\": 0}"
  done
else
  train "$last"
fi
"""


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, delta in events:
        running += delta
        best = max(best, running)
    return best


@pytest.mark.parametrize("gpus_per_run", [0, 1, 2])
def test_scheduler_places_runs_on_gpus_or_cpu_slots(tmp_path, gpus_per_run):
    """Four fake workers on a machine with GPUs 0-3: one run per GPU (G GPUs per torchrun run), or 2 CPU slots."""
    from sweeps.executors.base import Resources

    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    executor = LocalExecutor(max_concurrent=2, gpus=["0", "1", "2", "3"], python=str(fake), poll_s=0.02)
    executor.cores = 8
    jobs = executor.map_array([tmp_path / f"run{i}" for i in range(4)], Resources(gpus=gpus_per_run))
    assert [j.wait(timeout=30, poll_s=0.02) for j in jobs] == ["COMPLETED"] * 4
    rows = [(tmp_path / f"run{i}" / "fake.txt").read_text().strip().split("|") for i in range(4)]
    intervals = [tuple(map(float, r[0].split())) for r in rows]
    if gpus_per_run == 0:
        assert max_overlap(intervals) == 2 and {r[1] for r in rows} == {""} and {r[2] for r in rows} == {"4"}
        assert all(r[3].startswith("-m sweeps.worker") for r in rows)
        assert len({r[4] for r in rows}) == 2  # two long-lived workers trained the four runs
    else:
        assert max_overlap(intervals) == 4 // gpus_per_run
        assert all(len(r[1].split(",")) == gpus_per_run for r in rows)
        assert {r[2] for r in rows} == {str(8 // 4)}
    if gpus_per_run == 2:
        assert all("torch.distributed.run" in r[3] and "--nproc_per_node=2" in r[3] for r in rows)
    if gpus_per_run == 1:
        assert all(r[3].startswith("-m sweeps.worker") for r in rows)


def test_one_process_per_run_when_workers_are_not_reused(tmp_path):
    """reuse_workers=False (the old mode, kept for the benchmark and torchrun runs): a new process for every run."""
    from sweeps.executors.base import Resources

    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    executor = LocalExecutor(max_concurrent=2, python=str(fake), poll_s=0.02, reuse_workers=False)
    jobs = executor.map_array([tmp_path / f"run{i}" for i in range(4)], Resources())
    assert [j.wait(timeout=30, poll_s=0.02) for j in jobs] == ["COMPLETED"] * 4
    rows = [(tmp_path / f"run{i}" / "fake.txt").read_text().strip().split("|") for i in range(4)]
    assert len({r[4] for r in rows}) == 4 and all(r[3].endswith(f"run{i}") for i, r in enumerate(rows))


def test_scheduler_rejects_more_gpus_than_visible(tmp_path):
    from scaling.errors import ConfigError
    from sweeps.executors.base import Resources

    with pytest.raises(ConfigError, match="resources.gpus"):
        LocalExecutor(gpus=["0"]).map_array([tmp_path / "run"], Resources(gpus=2))
