"""The one small interface every backend implements, in submitit's shape.

An `Executor` turns run directories (`results/<sweep>/runs/<run_id>/`) into `Job`s: `submit(run_dir, resources)` or
`map_array(run_dirs, resources)` (one SLURM job array, or one queue of local worker processes). A `Job` has
`state()`, `done()`, `result()` and `cancel()`. Whatever the backend, the process that runs a job calls
`sweeps.worker.run_one(run_dir)`.

Job states use SLURM's words, so the store and `scaling sweep status` read the same vocabulary for every backend:
PENDING, RUNNING, REQUEUED, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, UNKNOWN.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

# A job in one of these states may still run: a relaunch must not submit its run again.
ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "RESIZING",
     "SUSPENDED", "STAGE_OUT", "SIGNALING"}
)
# A job that ended in one of these did not finish its run (the run is retried on relaunch, up to max_retries).
FAILED_STATES = frozenset(
    {"FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)


@dataclass
class Resources:
    """What one run asks for. Units: GPUs and CPUs per run, memory in GB per run, time in minutes per job."""

    gpus: int = 0  # GPUs per run (0: CPU). More than 1: torchrun locally, several tasks per node on SLURM
    cpus: int = 1  # CPU cores per run (SLURM: cpus_per_task, divided among the tasks of a multi-GPU run)
    mem_gb: float | None = None  # memory per run; None: the cluster's default
    timeout_min: int = 60  # SLURM wall-time per job; >= 15 so submitit reads USR2 as preemption, not time-out
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 256  # SLURM array tasks running at once
    additional: dict = field(default_factory=dict)  # extra sbatch parameters, e.g. {"constraint": "a100"}

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

    def done(self) -> bool:
        return self.state() not in ACTIVE_STATES

    def wait(self, timeout: float | None = None, poll_s: float = 1.0) -> str:
        """Block until the job is done (or `timeout` seconds pass); return its state."""
        start = time.monotonic()
        while not self.done():
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"job {self.job_id} still {self.state()} after {timeout} s")
            time.sleep(poll_s)
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

    def submit(self, run_dir: str | Path, resources: Resources | None = None) -> Job:
        return self.map_array([run_dir], resources)[0]

    @abc.abstractmethod
    def map_array(self, run_dirs: list[str | Path], resources: Resources | None = None) -> list[Job]:
        """Submit one job per run directory, all asking for the same resources."""

    @abc.abstractmethod
    def describe(self, run_dirs: list[str | Path], resources: Resources | None = None) -> str:
        """What `map_array` would submit (for --dry-run), without submitting anything."""

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """States of previously submitted jobs (by id, possibly from an earlier launch); UNKNOWN when not known."""
        return {job_id: "UNKNOWN" for job_id in job_ids}

    def shutdown(self) -> None:
        """Stop what this process runs itself (local workers); cluster jobs keep running."""


def read_summary(run_dir: str | Path) -> dict | None:
    """The run's `summary.json`, or None when there is none (yet) or it cannot be parsed."""
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
