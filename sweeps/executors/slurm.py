"""Run sweeps on a SLURM cluster through submitit: one job array per group of runs that ask for the same resources.

Each array task calls `SlurmRun()(run_dir)`, i.e. `sweeps.worker.run_one(run_dir)`. `SlurmRun` is a
`submitit.helpers.Checkpointable`: on preemption or time-out SLURM sends USR2 (submitit's `--signal`), the trainer
finishes its optimizer step, writes a checkpoint and hands the signal to submitit, which calls `checkpoint()` (the
same call again) and requeues the job; the requeued task resumes from the checkpoint, so no step is lost or repeated.
submitit reads USR2 as a time-out when the job has run most of its `timeout_min` (always when `timeout_min < 10`);
each time-out uses one of `max_num_timeout` requeues.

A run asking for G > 1 GPUs runs as G tasks on one node (`--ntasks-per-node=G --gpus-per-node=G`); each task exports
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT through `submitit.helpers.TorchDistributedEnvironment`
before training, and only rank 0 claims the run and writes its files.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import submitit

from sweeps.executors.base import Executor, Job, Resources


class SlurmRun(submitit.helpers.Checkpointable):
    """What each array task calls: `SlurmRun()(run_dir)`. `checkpoint()` (inherited) resubmits this same call."""

    def __call__(self, run_dir: str) -> dict:
        from sweeps.worker import run_one

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            # Every task keeps all the node's GPUs visible: the trainer picks cuda:LOCAL_RANK itself.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return run_one(run_dir)


class SlurmJob(Job):
    """A handle on one array task (`<array id>_<index>`), wrapping submitit's job."""

    def __init__(self, executor: SlurmExecutor, job_id: str, run_dir: Path, submitit_job=None):
        self.executor, self.job_id, self.run_dir = executor, job_id, Path(run_dir)
        self.submitit_job = submitit_job

    def state(self) -> str:
        return self.executor.job_states([self.job_id])[self.job_id]

    def cancel(self) -> None:
        subprocess.run(["scancel", self.job_id], check=False, capture_output=True)

    def wait(self, timeout: float | None = None, poll_s: float = 2.0) -> str:
        return super().wait(timeout, poll_s)


class SlurmExecutor(Executor):
    """Submit runs as SLURM job arrays; submitit's files (sbatch script, pickles, logs) go to `folder`."""

    backend = "slurm"

    def __init__(self, folder: str | Path, job_name: str = "sweep", max_num_timeout: int = 3,
                 python: str | None = None):
        self.folder = Path(folder).resolve()
        self.job_name = job_name
        self.max_num_timeout = max_num_timeout  # requeues after time-outs (preemptions do not count)
        self.python = python or shlex.quote(sys.executable)

    def sbatch_parameters(self, resources: Resources) -> dict:
        """submitit's SLURM parameters (its `_make_sbatch_string` names) for runs asking for `resources`."""
        tasks = max(1, resources.gpus)
        params: dict = {
            "job_name": self.job_name,
            "time": int(resources.timeout_min),
            "nodes": 1,
            "ntasks_per_node": tasks,
            "cpus_per_task": max(1, resources.cpus // tasks),
            "array_parallelism": int(resources.array_parallelism),
        }
        if resources.gpus:
            params["gpus_per_node"] = resources.gpus
        if resources.mem_gb is not None:
            params["mem"] = f"{max(1, math.ceil(resources.mem_gb * 1024))}MB"
        for key in ("partition", "account", "qos"):
            if getattr(resources, key) is not None:
                params[key] = getattr(resources, key)
        if resources.additional:
            params["additional_parameters"] = dict(resources.additional)
        return params

    def describe(self, run_dirs: list[str | Path], resources: Resources | None = None) -> str:
        """The sbatch script `map_array` would submit for these runs (built by submitit, nothing is submitted)."""
        from submitit.slurm.slurm import _make_sbatch_string

        resources = resources or Resources()
        command = " ".join([self.python, "-u -m submitit.core._submit", shlex.quote(str(self.folder / "%j"))])
        script = _make_sbatch_string(command=command, folder=self.folder / "%j", map_count=len(run_dirs),
                                     **self.sbatch_parameters(resources))
        runs = "\n".join(f"#   task {i}: {Path(d).resolve()}" for i, d in enumerate(run_dirs))
        return f"{script}\n# array tasks (max_num_timeout={self.max_num_timeout}):\n{runs}\n"

    def map_array(self, run_dirs: list[str | Path], resources: Resources | None = None) -> list[SlurmJob]:
        resources = resources or Resources()
        if not run_dirs:
            return []
        executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=self.max_num_timeout,
                                          python=self.python)
        executor.update_parameters(**self.sbatch_parameters(resources))
        run_dirs = [Path(d).resolve() for d in run_dirs]
        # The submitted function itself must be the Checkpointable: submitit looks for `function.checkpoint`.
        # (A single call becomes a plain job, not a one-task array; submitit does that itself.)
        jobs = executor.map_array(SlurmRun(), [str(d) for d in run_dirs])
        return [SlurmJob(self, j.job_id, d, j) for j, d in zip(jobs, run_dirs)]

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """States from squeue (jobs still queued or running), else sacct; an id neither knows is UNKNOWN."""
        if not job_ids:
            return {}
        queued = _squeue_states(job_ids) or {}  # live jobs: authoritative while a job is queued, running, requeued
        rest = [j for j in job_ids if j not in queued]
        ended = (_sacct_states(rest) or {}) if rest else {}
        return {job_id: queued.get(job_id) or ended.get(job_id, "UNKNOWN") for job_id in job_ids}


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def _sacct_states(job_ids: list[str]) -> dict[str, str] | None:
    from submitit.slurm.slurm import SlurmInfoWatcher

    cmd = ["sacct", "-X", "-o", "JobID,State", "--parsable2"]
    for main in sorted({j.split("_")[0] for j in job_ids}):
        cmd += ["-j", main]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    info = SlurmInfoWatcher().read_info(out)
    return {job_id: _first_word(stats.get("State", "")) for job_id, stats in info.items()}


def _squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """Queued and running jobs only (squeue forgets finished ones); pending array ranges are expanded."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    cmd = ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted({j.split("_")[0] for j in job_ids}))]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ)).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    info = SlurmInfoWatcher().read_info("JobID|State\n" + out)
    return {job_id: _first_word(stats.get("State", "")) for job_id, stats in info.items()}


def _first_word(state: str) -> str:
    """sacct writes e.g. 'CANCELLED by 0'; keep the state itself."""
    return state.split()[0] if state.strip() else "UNKNOWN"
