"""The SLURM backend on a real cluster (skipped without one; start it with `.ci/slurm.sh start`).

A 4-run array completes and loads; a relaunch submits nothing; a cancelled job is reported and retried; a run
preempted for real by a job in the higher-priority partition `high` is requeued and resumes from its checkpoint to the
same final loss as an uninterrupted run. Every test uses a fresh submitit folder (job ids restart with a new cluster).
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
from helpers import wait_for

from sweeps.executors.slurm import SlurmExecutor
from sweeps.launch import follow, job_status, launch
from sweeps.store import Store

pytestmark = pytest.mark.slurm


def executor(root: Path, name: str = "tiny") -> SlurmExecutor:
    return SlurmExecutor(root / "submitit", job_name=name, max_num_timeout=10)


@pytest.fixture(scope="module")
def slurm_sweep(tmp_path_factory, make_spec):
    root = tmp_path_factory.mktemp("slurm")
    spec = make_spec(root / "tiny.toml")
    result = launch(spec, backend="slurm", results=root / "results", wait=True, executor=executor(root),
                    progress=False, poll_s=1.0)
    return spec, root, result


def test_array_completes_and_loads(slurm_sweep):
    from sweeps import load_results

    _, _, result = slurm_sweep
    ids = [result.job_ids[r] for r in result.submitted]
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1  # one array: <array id>_<index>
    assert sorted(i.split("_")[1] for i in ids) == ["0", "1", "2", "3"]
    assert set(result.job_states.values()) == {"COMPLETED"}
    runs, metrics = load_results(result.sweep_dir)
    assert sorted(runs.run_id) == sorted(result.submitted)
    assert (runs.status == "completed").all() and runs.loss.map(math.isfinite).all()
    assert set(metrics.run_id) == set(result.submitted)
    store = Store(result.sweep_dir)
    assert {store.attempts(r)[-1]["job_id"] for r in result.submitted} == set(ids)
    from sweeps.status import format_status

    text = format_status(result.sweep_dir)
    assert all(f"slurm:{i} COMPLETED" in text for i in ids)


def test_dry_run_script_is_the_submitted_script(slurm_sweep):
    """What --dry-run prints for the sweep's runs starts with the very sbatch script submitit wrote for the array."""
    from sweeps.launch import resources_for
    from sweeps.spec import load_spec

    spec, root, result = slurm_sweep
    store = Store(result.sweep_dir)
    array_id = result.job_ids[result.submitted[0]].split("_")[0]
    (submitted,) = (root / "submitit").glob(f"**/{array_id}_submission.sh")
    resources = resources_for(load_spec(spec), store.planned(result.submitted[0]))
    script = executor(root).describe([store.run_dir(r) for r in result.submitted], resources)
    assert script.startswith(submitted.read_text())


def test_relaunch_submits_nothing(slurm_sweep):
    spec, root, first = slurm_sweep
    again = launch(spec, backend="slurm", results=root / "results", executor=executor(root))
    assert again.submitted == [] and again.skipped == dict.fromkeys(first.submitted, "completed")


def test_cancelled_job_is_reported_and_retried(slurm_sweep, tmp_path, make_spec):
    _, _, reference = slurm_sweep
    spec = make_spec(tmp_path / "one.toml", seeds=(0,))
    ex = executor(tmp_path)
    first = launch(spec, backend="slurm", results=tmp_path / "results", executor=ex)
    (run_id,) = first.submitted
    queued = launch(spec, backend="slurm", results=tmp_path / "results", executor=ex)  # job PENDING or RUNNING
    assert queued.submitted == [] and queued.skipped[run_id].startswith("in SLURM")

    first.jobs[0].cancel()
    assert first.jobs[0].wait(timeout=60, poll_s=0.5) == "CANCELLED"
    status = job_status(tmp_path / "results" / "tiny", ex)[run_id]
    assert status["state"] == "CANCELLED" and status["failures"] == 1
    exhausted = launch(spec, backend="slurm", results=tmp_path / "results", executor=ex, max_retries=0)
    assert exhausted.submitted == [] and exhausted.skipped[run_id].startswith("failed too often")

    retry = launch(spec, backend="slurm", results=tmp_path / "results", executor=ex, wait=True, progress=False,
                   poll_s=1.0)
    assert retry.submitted == [run_id] and retry.job_states == {run_id: "COMPLETED"}
    store = Store(tmp_path / "results" / "tiny")
    assert store.run_state(run_id) == "completed"
    assert store.summary(run_id)["val_loss"] == pytest.approx(Store(reference.sweep_dir).summary(run_id)["val_loss"],
                                                             abs=1e-6)


def test_real_preemption_requeues_and_resumes_to_the_same_loss(tmp_path, make_spec):
    from scaling.runconfig import RunConfig
    from scaling.train import train

    # 526 steps (3-20 s), a checkpoint every 10: long enough to be preempted mid-run, after its first checkpoint.
    spec = make_spec(tmp_path / "long.toml", name="long", seeds=(0,), budget=2e10, batch_range=1.0,
                     checkpoint_every=10, eval_every=100)
    ex = executor(tmp_path, "long")
    result = launch(spec, backend="slurm", results=tmp_path / "results", executor=ex)
    (run_id,) = result.submitted
    store = Store(tmp_path / "results" / "long")
    wait_for(lambda: list((store.run_dir(run_id) / "checkpoints").glob("ckpt_*.pt")), timeout=180, poll=0.1)
    assert not (store.run_dir(run_id) / "summary.json").exists(), "the run ended before it could be preempted"
    blocker = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", str(os.cpu_count()), "--mem=100",
                              "--job-name=blocker", "-o", str(tmp_path / "blocker.out"), "--wrap", "sleep 5"],
                             capture_output=True, text=True, check=True)

    # The uninterrupted reference, trained here (1 thread, as the SLURM task) while the job waits to be requeued.
    config = RunConfig.from_dict({**store.planned(run_id)["config"], "out": str(tmp_path / "reference")})
    expected = train(config, progress=False, num_threads=1)["val_loss"]

    states = follow(result.jobs, ex, poll_s=1.0, bar=False)
    assert states == {result.job_ids[run_id]: "COMPLETED"}
    attempts = store.attempts(run_id)
    assert len(attempts) >= 2 and attempts[0]["status"] == "preempted" and attempts[-1]["status"] == "completed"
    assert {a["job_id"] for a in attempts} == {result.job_ids[run_id]}  # requeued, not resubmitted
    assert store.summary(run_id)["val_loss"] == pytest.approx(expected, abs=1e-6)
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", blocker.stdout.strip().split(";")[0]],
                           check=True, capture_output=True, text=True).stdout
    assert "COMPLETED" in sacct
