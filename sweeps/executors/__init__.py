"""Backends behind one small interface (submitit's shape): `Executor.submit/map_array` -> `Job` handles.

`sweeps.executors.local.LocalExecutor` (long-lived worker subprocesses on this machine) and
`sweeps.executors.slurm.SlurmExecutor` (SLURM job arrays through submitit); see `sweeps.executors.base`.
`executor_class(name)` returns a backend's class without importing the others.
"""

from sweeps.executors.base import (
    ACTIVE_STATES,
    BACKENDS,
    DROPPED,
    FAILED_STATES,
    Executor,
    Job,
    Resources,
    executor_class,
)

__all__ = ["ACTIVE_STATES", "BACKENDS", "DROPPED", "FAILED_STATES", "Executor", "Job", "Resources", "executor_class"]
