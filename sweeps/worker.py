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

`python -m sweeps.worker --serve` trains many runs in one process, one after another (the local backend's long-lived
slot worker, so each run does not pay the import of torch): it reads one JSON line `{"run_dir", "job_id"}` per run on
stdin, trains it with `run_one` (its output going to `<run_dir>/worker.log`), and answers one JSON line `{"job_id",
"exit"}` on stdout (exit: EXIT_OK, EXIT_FAILED or EXIT_BUSY). It exits 0 at the end of its input, and 143 on SIGTERM
(the trainer checkpoints first when a run is in progress).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from scaling.runconfig import RunConfig
from sweeps.store import FINAL, Store

JOB_ID_ENV = "SWEEP_JOB_ID"
# Exit statuses of `python -m sweeps.worker` (the local backend reads them).
EXIT_OK, EXIT_FAILED, EXIT_BUSY = 0, 1, 75
EXIT_SIGNALLED = 143  # 128 + SIGTERM, as the trainer exits
SERVE_FLAG = "--serve"


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
    planned = store.planned(run_id)
    return RunConfig.from_dict({**planned["config"], "out": str(store.run_dir(run_id))})


def _train(store: Store, run_id: str) -> dict:
    from scaling.train import train  # torch: imported by the process that trains, not by the launcher

    return train(run_config(store, run_id), progress=False, num_threads=_threads())


def _threads() -> int | None:
    for name in ("SCALING_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def train_and_report(run_dir: Path) -> int:
    """Train one run (`run_one`), print how it ended on stderr, and return the worker exit status for it."""
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


def serve(requests, reports) -> int:
    """Train the runs named on `requests` (JSON lines) one after another; answer each on `reports` (see the module
    docstring). SIGTERM raises SystemExit(143): inside a run the trainer checkpoints first, then hands the signal on
    to this handler; between runs the worker simply stops."""

    def stop(signum, frame):
        raise SystemExit(EXIT_SIGNALLED)

    signal.signal(signal.SIGTERM, stop)
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        run_dir, job_id = Path(request["run_dir"]), str(request["job_id"])
        os.environ[JOB_ID_ENV] = job_id
        with output_to(run_dir / "worker.log"):
            try:
                code = train_and_report(run_dir)
            except Exception:  # noqa: BLE001 - a broken run folder fails that run, not the worker
                traceback.print_exc()
                code = EXIT_FAILED
        try:
            reports.write(json.dumps({"job_id": job_id, "exit": code}) + "\n")
            reports.flush()
        except BrokenPipeError:  # the launcher is gone: the run's own files say how it ended
            return EXIT_OK
    return EXIT_OK


@contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `path` (appending) inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for d in (fd, *saved):
            os.close(d)


def main(argv: list[str] | None = None) -> int:
    """`python -m sweeps.worker RUN_DIR`: exit 0 completed/diverged, 1 failed, 75 busy, 143 stopped by a signal.
    `python -m sweeps.worker --serve`: many runs, one after another (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == [SERVE_FLAG]:
        # The reports get a private copy of stdout; fd 1 itself then goes where fd 2 goes (the launcher's log), so a
        # stray print between runs cannot corrupt the reports.
        reports = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        return serve(sys.stdin, reports)
    if len(argv) != 1:
        print(f"usage: python -m sweeps.worker RUN_DIR | {SERVE_FLAG}", file=sys.stderr)
        return 2
    return train_and_report(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
