"""Train one planned run of a sweep: the function every backend calls, and `python -m sweeps.worker RUN_DIR`.

`run_one(run_dir)` (run_dir = `results/<sweep>/runs/<run_id>/`):
1. returns the stored summary at once when the run is completed or diverged;
2. claims the run (a non-blocking flock on `lock`, held for the whole attempt; `RunBusy` when another process holds
   it) and records the attempt (start, host, pid, job id) in `attempts.json`;
3. builds the RunConfig from `planned.json` with `out = run_dir` and calls `scaling.train.train` (which resumes from
   the run's checkpoints);
4. records how the attempt ended: the summary's status; "failed" with the error when training raised (the returned
   summary then has status "failed"); "preempted" (under SLURM) or "interrupted" when a signal ended the process
   (the trainer checkpointed first, so the next attempt resumes; neither counts as a failure).

Job id of the attempt: $SWEEP_JOB_ID (set by the local backend), else the SLURM job id. Threads: $SCALING_NUM_THREADS
(set by the local backend), else $SLURM_CPUS_PER_TASK, else torch's default.
Several processes (torchrun / SLURM tasks with RANK set): rank 0 claims and records; the other ranks only train.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from sweeps.store import FINAL, Store

JOB_ID_ENV = "SWEEP_JOB_ID"
# Exit statuses of `python -m sweeps.worker` (the local backend reads them).
EXIT_OK, EXIT_FAILED, EXIT_BUSY = 0, 1, 75


class RunBusy(RuntimeError):
    """Another process holds the run's lock (it is being trained right now)."""


def run_one(run_dir: str | os.PathLike) -> dict:
    """Train the run in `run_dir` under its lock; return its summary (see the module docstring)."""
    run_dir = Path(run_dir).resolve()
    store, run_id = Store(run_dir.parent.parent), run_dir.name
    if int(os.environ.get("RANK", "0")) != 0:
        return _train(store, run_id)
    summary = store.summary(run_id)
    if summary is not None and summary.get("status") in FINAL:
        return summary
    claim = store.claim(run_id, job_id=os.environ.get(JOB_ID_ENV))
    if claim is None:
        summary = store.summary(run_id)
        if summary is not None and summary.get("status") in FINAL:
            return summary
        raise RunBusy(f"run {run_id} is being trained by another process (it holds {run_dir / 'lock'})")
    with claim:
        try:
            summary = _train(store, run_id)
        except SystemExit:  # a signal: the trainer wrote a checkpoint, then exited or handed over to submitit
            claim.finish("preempted" if os.environ.get("SLURM_JOB_ID") else "interrupted")
            raise
        except Exception as e:  # noqa: BLE001 - recorded, not raised: the sweep retries failed runs
            error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
            claim.finish("failed", error=error)
            return {"status": "failed", "run_id": run_id, "error": error}
        claim.finish(summary.get("status", "failed"), error=summary.get("error"))
    return summary


def run_config(store: Store, run_id: str):
    """The RunConfig of a planned run, writing into its run directory."""
    from scaling.runconfig import RunConfig

    planned = store.planned(run_id)
    return RunConfig.from_dict({**planned["config"], "out": str(store.run_dir(run_id))})


def _train(store: Store, run_id: str) -> dict:
    from scaling.train import train

    return train(run_config(store, run_id), progress=False, num_threads=_threads())


def _threads() -> int | None:
    for name in ("SCALING_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def main(argv: list[str] | None = None) -> int:
    """`python -m sweeps.worker RUN_DIR`: exit 0 completed/diverged, 1 failed, 75 busy, 143 stopped by a signal."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m sweeps.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    print(f"worker pid {os.getpid()} job {os.environ.get(JOB_ID_ENV) or os.environ.get('SLURM_JOB_ID')}: "
          f"{run_dir}", file=sys.stderr, flush=True)
    try:
        summary = run_one(run_dir)
    except RunBusy as e:
        print(f"skipped: {e}", file=sys.stderr)
        return EXIT_BUSY
    status = summary.get("status")
    print(f"run {run_dir.name}: {status} val_loss={summary.get('val_loss')}", file=sys.stderr, flush=True)
    if status != "failed":
        return EXIT_OK
    print(summary.get("error") or "", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
