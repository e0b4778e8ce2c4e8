"""Backends behind one small interface (submitit's shape): `Executor.submit/map_array` -> `Job` handles.

`sweeps.executors.local.LocalExecutor` (worker subprocesses on this machine) and
`sweeps.executors.slurm.SlurmExecutor` (SLURM job arrays through submitit); see `sweeps.executors.base`.
"""

from sweeps.executors.base import ACTIVE_STATES, FAILED_STATES, Executor, Job, Resources

__all__ = ["ACTIVE_STATES", "FAILED_STATES", "Executor", "Job", "Resources"]
