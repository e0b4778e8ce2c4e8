"""Following runs that another launcher started: `sweep status` shows a running local job as RUNNING, and
`launch --wait` after the first launcher was killed waits for its surviving worker (and trains what it had queued).
Also: launch.py holds no backend names, and its progress line shows a rate and an ETA."""

from __future__ import annotations

import ast
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import running_pid, wait_for

from sweeps.executors.base import ACTIVE_STATES, Executor, Job, Resources
from sweeps.executors.local import LocalExecutor
from sweeps.launch import follow, job_status, launch, load_jobs
from sweeps.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~15 s: a launcher subprocess, kill -9, then a following launch
def test_wait_follows_the_workers_of_a_killed_launcher(tmp_path, make_spec):
    spec = make_spec(tmp_path / "two.toml", seeds=(0, 1), max_concurrent=1)
    results = tmp_path / "results"
    first = subprocess.Popen([sys.executable, "-m", "scaling.cli", "sweep", "launch", str(spec), "--backend", "local",
                              "--results", str(results), "--wait"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    store = Store(results / "tiny")
    running, queued = wait_for(lambda: store.plan_path.exists() and store.run_ids())
    pid = wait_for(lambda: running_pid(store, running))
    os.kill(pid, signal.SIGSTOP)  # mid-run until the end of the test
    try:
        assert job_status(store.root)[running]["state"] == "RUNNING"  # jobs.json itself still says PENDING
        assert load_jobs(store.root)[running][-1]["state"] == "PENDING"
        first.kill()
        first.wait()
        status = job_status(store.root)
        assert status[running]["state"] == "RUNNING"  # its worker lives on
        assert status[queued]["state"] == "DROPPED" and status[queued]["failures"] == 0  # its launcher is gone

        out: dict = {}
        follower = threading.Thread(target=lambda: out.update(result=launch(
            spec, backend="local", results=results, wait=True, progress=False)))
        follower.start()
        wait_for(lambda: (store.summary(queued) or {}).get("status") == "completed", timeout=120)
        time.sleep(1.0)  # several polls: a launcher that does not follow would have returned by now
        assert follower.is_alive()
    finally:
        os.kill(pid, signal.SIGCONT)
    follower.join(timeout=120)
    result = out["result"]
    assert result.submitted == [queued] and result.followed == [running]
    assert result.skipped == {running: "running (its lock is held)"}
    assert result.job_states == {running: "COMPLETED", queued: "COMPLETED"}
    assert result.run_states == {running: "completed", queued: "completed"}
    assert [a["status"] for a in store.attempts(running)] == ["completed"]  # trained once, by the first worker
    assert [a["status"] for a in store.attempts(queued)] == ["completed"]
    assert job_status(store.root)[running]["state"] == "COMPLETED"


def test_local_job_states_answer_for_other_processes(tmp_path, make_spec):
    """A finished sweep: a fresh executor for the folder reads each job's state from its record."""
    spec = make_spec(tmp_path / "one.toml", seeds=(0,), budget=5e8)
    executor = LocalExecutor(max_concurrent=1, threads_per_run=1)
    result = launch(spec, backend="local", results=tmp_path / "results", executor=executor, progress=False)
    (run_id,) = result.submitted
    job_id = result.job_ids[run_id]
    assert executor.job_states([job_id, "local-0123456789"]) == {job_id: "COMPLETED", "local-0123456789": "UNKNOWN"}
    fresh = LocalExecutor.for_sweep(result.sweep_dir)
    assert fresh.job_states([job_id, "../../etc/passwd"]) == {job_id: "COMPLETED", "../../etc/passwd": "UNKNOWN"}
    record = json.loads((result.sweep_dir / "local" / f"{job_id}.json").read_text())
    assert record["state"] == "COMPLETED" and record["run_dir"] == str(Store(result.sweep_dir).run_dir(run_id))


def test_launch_never_names_a_backend():
    """Behaviour lives in the executor classes: no comparison with a backend name in sweeps/launch.py."""
    tree = ast.parse((REPO / "sweeps" / "launch.py").read_text())
    names = {"local", "slurm"}
    compared = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
                and any(isinstance(c, ast.Constant) and c.value in names for c in [node.left, *node.comparators])]
    assert compared == []


class ScriptedJob(Job):
    """A job whose states come from a list, one per poll; its run folder holds planned.json and metrics."""

    def __init__(self, run_dir: Path, states: list[str]):
        self.run_dir, self.job_id, self.states = run_dir, f"job-{run_dir.name}", list(states)

    def state(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def cancel(self) -> None:
        self.states = ["CANCELLED"]


class ScriptedExecutor(Executor):
    backend = "scripted"

    @classmethod
    def from_spec(cls, spec, sweep_dir, dry_run=False):
        return cls()

    @classmethod
    def for_sweep(cls, sweep_dir):
        return cls()

    def map_array(self, run_dirs, resources: Resources | None = None):
        return []

    def describe(self, run_dirs, resources: Resources | None = None) -> str:
        return ""


def test_follow_shows_rate_and_eta_from_throughput(tmp_path):
    """Two runs of 1e12 FLOPs: one finishes, the other is half-way (metrics: tokens 50 of 100); the progress line
    counts the work behind each, so it shows a FLOP/s rate and an ETA, not only run counts."""
    jobs = []
    for name, states in (("a", ["RUNNING", "COMPLETED"]), ("b", ["RUNNING", "RUNNING", "RUNNING", "COMPLETED"])):
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "planned.json").write_text(json.dumps({"flops": 1e12, "D": 100}))
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 5, "tokens": 50}) + "\n")
        jobs.append(ScriptedJob(run_dir, states))
    stream = io.StringIO()
    states = follow(jobs, ScriptedExecutor(), poll_s=0.01, bar=True, title="tiny", stream=stream)
    assert states == {"job-a": "COMPLETED", "job-b": "COMPLETED"}
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("tiny: 0/2 done, 0 failed, 2 running, 0 queued")
    assert lines[-1].startswith("tiny: 2/2 done, 0 failed, 0 running, 0 queued")
    assert all("FLOP/s" in line and "ETA" in line for line in lines)
    assert not any(s in ACTIVE_STATES for s in states.values())


@pytest.mark.slow  # ~15 s: two launchers on one folder
def test_two_launchers_share_the_queue_and_train_each_run_once(tmp_path, make_spec):
    """Launcher 1 trains run 0 (held mid-run) with run 1 queued behind it; launcher 2 (--wait) queues run 1 too,
    its idle worker claims it first, and it follows run 0 to the end. Launcher 1's worker then finds run 1 done."""
    spec = make_spec(tmp_path / "two.toml", seeds=(0, 1), max_concurrent=1)
    results = tmp_path / "results"
    store = Store(results / "tiny")
    out: dict = {}
    first = threading.Thread(target=lambda: out.update(first=launch(
        spec, backend="local", results=results, executor=LocalExecutor(max_concurrent=1, threads_per_run=1),
        progress=False)))
    first.start()
    run0, run1 = wait_for(lambda: store.plan_path.exists() and store.run_ids())
    pid = wait_for(lambda: running_pid(store, run0))
    os.kill(pid, signal.SIGSTOP)
    try:
        follower = threading.Thread(target=lambda: out.update(second=launch(
            spec, backend="local", results=results, wait=True, progress=False,
            executor=LocalExecutor(max_concurrent=1, threads_per_run=1))))
        follower.start()
        wait_for(lambda: (store.summary(run1) or {}).get("status") == "completed", timeout=120)
    finally:
        os.kill(pid, signal.SIGCONT)
    follower.join(timeout=120)
    first.join(timeout=120)
    first_result, second_result = out["first"], out["second"]
    assert second_result.submitted == [run1] and second_result.followed == [run0]
    assert second_result.run_states == {run0: "completed", run1: "completed"}
    assert first_result.job_states == {run0: "COMPLETED", run1: "COMPLETED"}  # run 1: already done when claimed
    for run_id in (run0, run1):
        assert [a["status"] for a in store.attempts(run_id)] == ["completed"]  # each trained once
