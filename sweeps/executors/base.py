"""The one small interface every backend implements, in submitit's shape.

An `Executor` turns run directories (`results/<sweep>/runs/<run_id>/`) into `Job`s: `submit(run_dir, resources)` or
`map_array(run_dirs, resources)` (one SLURM job array, or one queue of local worker processes). A `Job` has
`state()`, `done()`, `wait()`, `result()` and `cancel()`. Whatever the backend, the process that runs a job calls
`sweeps.worker.run_one(run_dir)`. Behaviour lives in the backend classes; callers (`sweeps.launch`) never ask which
backend they hold:

- `Executor.from_spec(spec, sweep_dir, dry_run)` builds the executor a sweep spec asks for;
- `Executor.for_sweep(sweep_dir)` builds one that can only answer questions about jobs recorded earlier;
- `job_states(job_ids)` answers for jobs submitted by any process (UNKNOWN when the backend cannot tell);
- `states(jobs)` answers for live handles (one cluster query for all of them);
- `attach(job_id, run_dir)` is a handle on a job submitted by an earlier launcher (to follow it);
- `shutdown()` stops what this process runs itself (local workers); cluster jobs keep running.

`BACKENDS` names each backend's class; `executor_class(name)` imports it on first use.

Job states use SLURM's words, so the store and `scaling sweep status` read the same vocabulary for every backend:
PENDING, RUNNING, REQUEUED, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, UNKNOWN; plus
DROPPED, a local job that did not train its run and did not fail it: taken off its launcher's queue before it
started (the launcher stopped), or its run was claimed by another launcher's worker first.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import time
from dataclasses import dataclass
from pathlib import Path

from scaling.errors import ConfigError
from scaling.runio import read_summary
from sweeps.store import Store

# A job in one of these states may still run: a relaunch must not submit its run again.
ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "RESIZING",
     "SUSPENDED", "STAGE_OUT", "SIGNALING"}
)
# A job that ended in one of these did not finish its run (the run is retried on relaunch, up to max_retries).
FAILED_STATES = frozenset(
    {"FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
UNKNOWN = "UNKNOWN"
DROPPED = "DROPPED"

# backend name -> "module:Class"; the module is imported only when that backend is used.
BACKENDS = {
    "local": "sweeps.executors.local:LocalExecutor",
    "slurm": "sweeps.executors.slurm:SlurmExecutor",
}


@dataclass
class Resources:
    """What one run asks for. Units: GPUs and CPUs per run, memory in GB per run, time in minutes per job."""

    gpus: int = 0  # GPUs per run (0: CPU). More than 1: torchrun locally, several tasks per node on SLURM
    cpus: int = 1  # CPU cores per run (SLURM: cpus_per_task, divided among the tasks of a multi-GPU run)
    mem_gb: float | None = None  # memory per run; None: the cluster's default
    timeout_min: int = 60  # wall-time limit per job when the run has no estimate (spec resources.time_min)
    time_min: float | None = None  # the run's planned time limit from its estimated time (sweeps.grid), if any
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 256  # SLURM array tasks running at once
    extra: tuple[str, ...] = ()  # further sbatch options, each "--key=value" (validated by the SLURM executor)

    def key(self) -> tuple:
        """Hashable identity, to put runs that ask for the same resources in the same job array."""
        return tuple(sorted((k, repr(v)) for k, v in dataclasses.asdict(self).items()))


class Job(abc.ABC):
    """A handle on one submitted run."""

    job_id: str
    run_dir: Path

    @abc.abstractmethod
    def state(self) -> str:
        """One of the SLURM-style states in this module's docstring."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the job: a running worker gets SIGTERM (it checkpoints, then exits); a queued one never starts."""

    poll_s: float = 1.0  # how often `wait` asks

    def done(self) -> bool:
        return self.state() not in ACTIVE_STATES

    def wait(self, timeout: float | None = None, poll_s: float | None = None) -> str:
        """Block until the job is done (or `timeout` seconds pass); return its state."""
        start = time.monotonic()
        while not self.done():
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"job {self.job_id} still {self.state()} after {timeout} s")
            time.sleep(self.poll_s if poll_s is None else poll_s)
        return self.state()

    def result(self, timeout: float | None = None) -> dict:
        """Wait for the job, then return the run's summary (`summary.json`; status `failed` when there is none)."""
        state = self.wait(timeout)
        return read_summary(self.run_dir) or {"status": "failed", "error": f"job {self.job_id} ended {state}"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.job_id!r}, run={Path(self.run_dir).name!r})"


class Executor(abc.ABC):
    """Runs `sweeps.worker.run_one(run_dir)` for each run directory it is given."""

    backend: str = ""
    where: str = ""  # where a recorded active job of this backend runs, for messages ("SLURM")
    jobs_end_with_launcher: bool = False  # True: jobs run inside the launching process, which must follow them
    # True: a run queued (PENDING) by another launcher may be queued here too, and whichever worker claims it first
    # trains it (the other's job ends DROPPED); False: a PENDING job will run its run, so it is not submitted again.
    queue_is_shared: bool = False
    poll_s: float = 1.0  # how often a follower asks for job states

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec, sweep_dir: Path, dry_run: bool = False) -> Executor:
        """The executor a sweep spec's [backend.*] section asks for, keeping its files under `sweep_dir`."""

    @classmethod
    @abc.abstractmethod
    def for_sweep(cls, sweep_dir: Path) -> Executor | None:
        """An executor that answers `job_states` for the jobs of `sweep_dir`; None when this machine cannot ask."""

    # -- submitting ------------------------------------------------------------------------------------------------
    def prepare(self, resources: Resources) -> Resources:
        """The resources as this backend will ask for them (validated; runs whose prepared resources are equal go in
        one `map_array` call). ConfigError for a value the backend cannot take."""
        return dataclasses.replace(resources, time_min=None)  # no time limits on this machine

    def submit(self, run_dir: str | Path, resources: Resources | None = None) -> Job:
        return self.map_array([run_dir], resources)[0]

    @abc.abstractmethod
    def map_array(self, run_dirs: list[str | Path], resources: Resources | None = None) -> list[Job]:
        """Submit one job per run directory, all asking for the same resources."""

    @abc.abstractmethod
    def describe(self, run_dirs: list[str | Path], resources: Resources | None = None) -> str:
        """Exactly what `map_array` would submit (for --dry-run), without submitting anything."""

    # -- following -------------------------------------------------------------------------------------------------
    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """States of previously submitted jobs (by id, possibly from an earlier launch); UNKNOWN when not known."""
        return dict.fromkeys(job_ids, UNKNOWN)

    def states(self, jobs: list[Job]) -> dict[str, str]:
        """{job_id: state} of live handles (a backend that queries a cluster overrides this to ask once)."""
        return {job.job_id: job.state() for job in jobs}

    def attach(self, job_id: str, run_dir: str | Path) -> Job:
        """A handle on a job submitted earlier (by this or another launcher), to follow it."""
        return RecordedJob(self, job_id, Path(run_dir))

    def shutdown(self) -> None:
        """Stop what this process runs itself (local workers); cluster jobs keep running."""


class RecordedJob(Job):
    """A job known only by its id (from jobs.json): its state comes from `executor.job_states`, then the store.

    When the backend cannot tell (UNKNOWN), the run's lock says whether some process trains it now.
    """

    def __init__(self, executor: Executor, job_id: str, run_dir: Path):
        self.executor, self.job_id, self.run_dir = executor, job_id, Path(run_dir)
        self.poll_s = executor.poll_s

    def state(self) -> str:
        state = self.executor.job_states([self.job_id]).get(self.job_id, UNKNOWN)
        if state != UNKNOWN:
            return state
        return state_from_store(self.run_dir, self.job_id)

    def cancel(self) -> None:
        raise ConfigError("cancel", f"a job this launcher submitted ({self.job_id} was submitted by another one)",
                          self.job_id)


class RunLockJob(Job):
    """A run some process is training with no job this launcher knows of: RUNNING while the run's lock is held,
    then how its last attempt ended (see `state_from_store`)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.job_id = f"lock:{self.run_dir.name}"

    def state(self) -> str:
        return state_from_store(self.run_dir)

    def cancel(self) -> None:
        raise ConfigError("cancel", f"a job this launcher submitted (run {self.run_dir.name} is trained by another "
                          "process)", self.job_id)


def state_from_store(run_dir: Path, job_id: str | None = None) -> str:
    """A job state read from the run's store files: RUNNING while its lock is held, else how its last attempt (of
    `job_id`, when given) ended; UNKNOWN when no such attempt was recorded."""
    store, run_id = Store(run_dir.parent.parent), run_dir.name
    if store.is_running(run_id):
        attempts = store.attempts(run_id)
        if job_id is None or (attempts and attempts[-1].get("job_id") == job_id):
            return "RUNNING"
    attempts = [a for a in store.attempts(run_id) if job_id is None or a.get("job_id") == job_id]
    if not attempts:
        return UNKNOWN
    status = attempts[-1].get("status")
    if status == "running" and store.is_running(run_id):
        return "RUNNING"  # claimed between the two looks
    return ATTEMPT_TO_JOB_STATE.get(status, "FAILED")


# How an attempt ended (attempts.json) -> the state of the job that ran it. "running" here means the holder died
# without saying so (its lock is free): the attempt was lost.
ATTEMPT_TO_JOB_STATE = {"completed": "COMPLETED", "diverged": "COMPLETED", "failed": "FAILED", "lost": "FAILED",
                        "running": "FAILED", "interrupted": "CANCELLED", "preempted": "PREEMPTED"}


def executor_class(backend: str) -> type[Executor]:
    """The Executor subclass of a backend name (see BACKENDS); ConfigError for an unknown name."""
    if backend not in BACKENDS:
        raise ConfigError("backend", f"one of {tuple(BACKENDS)}", backend)
    module, name = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), name)
