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
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher, _make_sbatch_string

from scaling.errors import ConfigError
from sweeps.executors.base import UNKNOWN, Executor, Job, Resources
from sweeps.spec import SLURM_NAME, check_sbatch_option
from sweeps.worker import run_one

# sbatch options this executor (or submitit) sets itself: `extra` may not override them.
RESERVED_OPTIONS = frozenset({
    "array", "output", "error", "open-mode", "signal", "job-name", "time", "nodes", "ntasks-per-node",
    "cpus-per-task", "gpus-per-node", "mem", "partition", "account", "qos", "wckey", "wrap",
})
# Characters no path or command in an sbatch script may hold: a newline would start a new shell line.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# A run's planned time limit (estimate x safety, from sweeps.grid) is rounded up this ladder, so that runs of similar
# length share one job array (and its array_parallelism) instead of one array per distinct minute count.
TIME_LADDER_MIN = (15, 20, 30, 45, 60, 90, 120, 180, 240, 360, 480, 720, 960, 1440, 2160, 2880, 4320, 10080)


class SlurmRun(submitit.helpers.Checkpointable):
    """What each array task calls: `SlurmRun()(run_dir)`. `checkpoint()` (inherited) resubmits this same call."""

    def __call__(self, run_dir: str) -> dict:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            # Every task keeps all the node's GPUs visible: the trainer picks cuda:LOCAL_RANK itself.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return run_one(run_dir)


class SlurmJob(Job):
    """A handle on one array task (`<array id>_<index>`), wrapping submitit's job."""

    poll_s = 2.0

    def __init__(self, executor: SlurmExecutor, job_id: str, run_dir: Path, submitit_job=None):
        self.executor, self.job_id, self.run_dir = executor, job_id, Path(run_dir)
        self.submitit_job = submitit_job

    def state(self) -> str:
        return self.executor.job_states([self.job_id])[self.job_id]

    def cancel(self) -> None:
        subprocess.run(["scancel", self.job_id], check=False, capture_output=True)


class SlurmExecutor(Executor):
    """Submit runs as SLURM job arrays; submitit's files (sbatch script, pickles, logs) go to `folder`.

    Every value that reaches the sbatch script is checked here (whatever built the Resources): names of letters,
    digits and '_.,:-'; extra options `--key=value` with a strict character set, none overriding what this executor
    sets; no control character in any path. `describe` returns the very script `map_array` submits.
    """

    backend = "slurm"
    where = "SLURM"
    poll_s = 3.0

    def __init__(self, folder: str | Path, job_name: str = "sweep", max_num_timeout: int = 3,
                 python: str | None = None):
        self.folder = Path(folder).resolve()
        self.job_name = job_name
        self.max_num_timeout = max_num_timeout  # requeues after time-outs (preemptions do not count)
        self.python = python or shlex.quote(sys.executable)
        check_name(job_name, "backend.slurm.job_name")
        check_text(str(self.folder), "slurm folder")
        check_text(self.python, "python")

    @classmethod
    def from_spec(cls, spec, sweep_dir: Path, dry_run: bool = False) -> SlurmExecutor:
        if not dry_run and not slurm_available():
            raise ConfigError("backend", "a machine with sbatch and srun on PATH for backend 'slurm' "
                              "(or --dry-run to print the sbatch script)", "slurm")
        return cls(folder=Path(sweep_dir) / "slurm", job_name=spec.name,
                   max_num_timeout=spec.backend.slurm.max_num_timeout)

    @classmethod
    def for_sweep(cls, sweep_dir: Path) -> SlurmExecutor | None:
        return cls(Path(sweep_dir) / "slurm") if slurm_available() else None

    def prepare(self, resources: Resources) -> Resources:
        """The resources as submitted: validated, with the time limit from the run's estimate (see time_limit)."""
        for key in ("partition", "account", "qos"):
            if getattr(resources, key) is not None:
                check_name(getattr(resources, key), f"backend.slurm.{key}")
        for i, option in enumerate(resources.extra):
            check_sbatch_option(option, f"backend.slurm.extra[{i}]")
            key = option[2:].partition("=")[0]
            if key in RESERVED_OPTIONS:
                raise ConfigError(f"backend.slurm.extra[{i}]", "an option the executor does not set itself (use "
                                  "[resources] and [backend.slurm] keys for time, memory, partition, ...)", option)
        return replace(resources, timeout_min=time_limit(resources.time_min, resources.timeout_min), time_min=None)

    def sbatch_parameters(self, resources: Resources) -> dict:
        """submitit's SLURM parameters (its `_make_sbatch_string` names) for runs asking for `resources`."""
        resources = self.prepare(resources)
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
        if resources.extra:
            params["additional_parameters"] = extra_parameters(resources.extra)
        return params

    def _submitit_executor(self, resources: Resources) -> submitit.SlurmExecutor:
        executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=self.max_num_timeout,
                                          python=self.python)
        executor.update_parameters(**self.sbatch_parameters(resources))
        return executor

    def describe(self, run_dirs: list[str | Path], resources: Resources | None = None) -> str:
        """The sbatch script `map_array` would submit for these runs, nothing submitted (no cluster needed).

        Built as submitit 1.5 builds it in `SlurmExecutor._internal_process_submissions`: `_make_sbatch_string`
        with the executor's parameters, plus `map_count` for an array of more than one task, whose copy of the
        executor runs the default python. tests/test_slurm_script.py pins that output; the `slurm` tests compare it
        with the script a real submission writes."""
        params = self.sbatch_parameters(resources or Resources())
        _make_sbatch_string(command="nothing to do", folder=self.folder / "%j", **params)  # submitit's own check
        python = self.python
        if len(run_dirs) > 1:
            params["map_count"] = len(run_dirs)
            python = shlex.quote(sys.executable)
        command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(self.folder / "%j"))])
        script = _make_sbatch_string(command=command, folder=self.folder / "%j", **params)
        runs = "\n".join(f"#   task {i}: {Path(d).resolve()}" for i, d in enumerate(run_dirs))
        return f"{script}\n# array tasks (max_num_timeout={self.max_num_timeout}):\n{runs}\n"

    def map_array(self, run_dirs: list[str | Path], resources: Resources | None = None) -> list[SlurmJob]:
        resources = resources or Resources()
        if not run_dirs:
            return []
        executor = self._submitit_executor(resources)
        run_dirs = [Path(d).resolve() for d in run_dirs]
        for d in run_dirs:
            check_text(str(d), "run directory")
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
        return {job_id: queued.get(job_id) or ended.get(job_id, UNKNOWN) for job_id in job_ids}

    def states(self, jobs: list[Job]) -> dict[str, str]:
        """One squeue/sacct query for every SLURM job; other handles answer for themselves."""
        ids = [j.job_id for j in jobs if isinstance(j, SlurmJob)]
        states = self.job_states(ids)
        return {j.job_id: states[j.job_id] if j.job_id in states else j.state() for j in jobs}

    def attach(self, job_id: str, run_dir: str | Path) -> Job:
        return SlurmJob(self, job_id, Path(run_dir))


def time_limit(planned_min: float | None, fallback_min: int) -> int:
    """Minutes of SLURM time for a run whose plan gives it `planned_min` (sweeps.grid.time_limit_min: estimated
    wall time x safety), rounded up TIME_LADDER_MIN; `fallback_min` (resources.time_min) as given when the plan has
    no estimate."""
    if planned_min is None:
        return int(fallback_min)
    return next((step for step in TIME_LADDER_MIN if step >= planned_min), math.ceil(planned_min))


def extra_parameters(options: tuple[str, ...] | list[str]) -> dict[str, str | bool]:
    """["--key=value", "--flag"] as submitit's additional_parameters {key: value, flag: True}."""
    params: dict[str, str | bool] = {}
    for option in options:
        key, eq, value = option[2:].partition("=")
        params[key] = value if eq else True
    return params


def check_name(value: str, field: str) -> None:
    """A SLURM name (partition, account, qos, job name): letters, digits and '_.,:-' only."""
    if not isinstance(value, str) or not SLURM_NAME.fullmatch(value):
        raise ConfigError(field, "a SLURM name of letters, digits and '_.,:-' (no spaces or newlines)", value)


def check_text(value: str, field: str) -> None:
    """A path or command written into the sbatch script (shell-quoted there): no newline or other control char."""
    if CONTROL_CHARS.search(value):
        raise ConfigError(field, "a path without newlines or other control characters", value)


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def _sacct_states(job_ids: list[str]) -> dict[str, str] | None:
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
