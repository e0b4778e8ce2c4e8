"""The results store of one sweep: a folder of plain files that every launcher, worker and reader shares.

Layout of `results/<sweep>/` (the Store's root):

    spec.toml            the spec as launched, verbatim (an earlier, different one is kept as spec.<k>.toml)
    spec.json            the resolved spec (overrides applied, budgets expanded)
    plan.json            {"name", "created", "updated", "runs": [PlannedRun dicts]}: runs are only ever added
    runs/<run_id>/
        planned.json     the PlannedRun (written once, never changed)
        attempts.json    [{"start", "end", "status", "host", "pid", "job_id", "error"}], one per attempt
        lock             flock'ed (LOCK_EX, non-blocking) by the process running an attempt, for its whole life
        config.json, metrics.jsonl, summary.json, checkpoints/   written by scaling.train.train

Run states (`run_state`): "running" while someone holds `lock` (the kernel drops an flock when its holder dies, even
by kill -9, so a crashed attempt never leaves a stale lock); else "completed" / "diverged" from summary.json; else
"failed" when the last attempt failed (or was lost: recorded as running but nobody holds the lock); else "queued"
(never tried, or interrupted/preempted with checkpoints to resume from).

Retries: `pending_runs(max_retries)` returns the runs that are not completed/diverged, not running, and have failed at
most `max_retries` times, i.e. a run gets its first attempt plus up to `max_retries` retries after failures.
Preempted attempts (status "preempted") do not count as failures.

Concurrency: every file is written atomically (temp file in the same folder + os.replace). attempts.json is only
written by the holder of the run's lock; plan.json and spec.* are written under the sweep-wide `plan.lock`. flock works
across processes on one machine and, on Linux, over NFS (emulated with POSIX locks); some parallel filesystems need
`flock` mount options. The state probe takes a shared flock for an instant; a claim that coincides with it fails
and that launcher skips the run this round (another pass picks it up).

Branching (reserved): a PlannedRun may carry `parent: {"run_id": ..., "step": ...}` meaning "start from the parent's
checkpoints/ckpt_<step>.pt" (e.g. WSD cooldowns at several D branched from one stable phase). The field is stored in
planned.json and plan.json and takes part in nothing else yet: a worker that implements branching copies the parent's
checkpoint into this run's checkpoints/ before training, and the planner adds the parent's FLOPs up to `step`.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path

from scaling.errors import ConfigError

STATES = ("queued", "running", "completed", "diverged", "failed")
FINAL = ("completed", "diverged")  # states a run never leaves
FAILED_ATTEMPTS = ("failed", "lost")


def now_iso() -> str:
    """UTC time as ISO 8601, seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Write JSON so readers see the old file or the new one, never a partial one."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike, default: object = None) -> object:
    """Parsed JSON, or `default` when the file is missing."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


class Claim:
    """Exclusive right to run one attempt of a run: an flock on runs/<run_id>/lock, held until `release()`.

    Use as a context manager: leaving the block without `finish()` records the attempt as "failed" (with the
    exception text) if an exception is propagating, else as "interrupted" (it may be resumed; so are SystemExit and
    KeyboardInterrupt, which is how a signalled trainer leaves).
    """

    def __init__(self, store: Store, run_id: str, fd: int, attempt: int):
        self.store, self.run_id, self.fd, self.attempt = store, run_id, fd, attempt
        self.finished = False

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir(self.run_id)

    def finish(self, status: str, error: str | None = None) -> None:
        """Record how the attempt ended: "completed", "diverged", "failed", "preempted" or "interrupted"."""
        self.store.update_attempt(self.run_id, self.attempt, status=status, end=now_iso(), error=error)
        self.finished = True

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self.finished:
                if exc is not None and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    self.finish("failed", error=f"{exc_type.__name__}: {exc}")
                else:
                    self.finish("interrupted")
        finally:
            self.release()


class Store:
    """One sweep's results folder (`results/<sweep>/`); see the module docstring for the layout and states."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # ---------------------------------------------------------------------------------------------- paths

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    # ---------------------------------------------------------------------------------------------- plan

    def init_sweep(self, spec, runs: list) -> list[str]:
        """Write spec.toml, spec.json, plan.json and runs/<id>/planned.json; return every run id in plan order.

        Idempotent. When plan.json exists, runs not yet in it are appended and none is removed or changed.
        Raises ConfigError when the folder holds a sweep of another name.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(exist_ok=True)
        with open(self.root / "plan.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = read_json(self.plan_path)
            if existing is not None and existing.get("name") != spec.name:
                raise ConfigError("name", f"the sweep name of {self.root} ({existing.get('name')!r}) to add runs "
                                  "to it; use another results folder", spec.name)
            self._write_spec(spec)
            plan = existing or {"name": spec.name, "created": now_iso(), "runs": []}
            known = {r["run_id"] for r in plan["runs"]}
            for run in runs:
                d = run if isinstance(run, dict) else run.to_dict()
                if d["run_id"] not in known:
                    plan["runs"].append(d)
                    known.add(d["run_id"])
            plan["updated"] = now_iso()
            for d in plan["runs"]:
                run_dir = self.run_dir(d["run_id"])
                run_dir.mkdir(exist_ok=True)
                if not (run_dir / "planned.json").exists():
                    write_json_atomic(run_dir / "planned.json", d)
            write_json_atomic(self.plan_path, plan)
        return [d["run_id"] for d in plan["runs"]]

    def _write_spec(self, spec) -> None:
        text = spec.source_text or f"# sweep {spec.name!r} was built in code; spec.json holds it resolved\n"
        old = self.root / "spec.toml"
        if old.exists() and old.read_text() != text:
            k = 1
            while (self.root / f"spec.{k}.toml").exists():
                k += 1
            os.replace(old, self.root / f"spec.{k}.toml")
            if (self.root / "spec.json").exists():
                os.replace(self.root / "spec.json", self.root / f"spec.{k}.json")
        write_text_atomic(old, text)
        write_json_atomic(self.root / "spec.json", spec.to_dict())

    def plan(self) -> dict:
        """plan.json; FileNotFoundError when the folder holds no sweep."""
        plan = read_json(self.plan_path)
        if plan is None:
            raise FileNotFoundError(f"{self.root}: no plan.json (not a sweep results folder)")
        return plan

    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.plan()["runs"]]

    def planned(self, run_id: str) -> dict:
        """The PlannedRun dict of `run_id` (from planned.json)."""
        d = read_json(self.run_dir(run_id) / "planned.json")
        if d is None:
            raise FileNotFoundError(f"{self.run_dir(run_id)}: no planned.json")
        return d

    def summary(self, run_id: str) -> dict | None:
        """The trainer's summary.json, or None before the run has ended."""
        try:
            return read_json(self.run_dir(run_id) / "summary.json")
        except json.JSONDecodeError:
            return None

    # ---------------------------------------------------------------------------------------------- state

    def is_running(self, run_id: str) -> bool:
        """True while some process holds the run's lock (probed with a non-blocking shared flock)."""
        path = self.run_dir(run_id) / "lock"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the probe's shared lock
        return False

    def run_state(self, run_id: str) -> str:
        """One of STATES; see the module docstring."""
        if self.is_running(run_id):
            return "running"
        summary = self.summary(run_id)
        if summary is not None and summary.get("status") in FINAL:
            return summary["status"]
        attempts = self.attempts(run_id)
        if attempts and attempts[-1].get("status") in (*FAILED_ATTEMPTS, "running"):
            return "failed"
        if summary is not None and summary.get("status") == "failed":
            return "failed"
        return "queued"

    def failures(self, run_id: str) -> int:
        """Failed attempts: recorded "failed", or lost (recorded "running" while nobody holds the lock)."""
        running = None
        n = 0
        for a in self.attempts(run_id):
            if a.get("status") == "running":
                running = self.is_running(run_id) if running is None else running
                n += not running
            else:
                n += a.get("status") in FAILED_ATTEMPTS
        if n == 0 and (self.summary(run_id) or {}).get("status") == "failed":
            n = 1
        return n

    def pending_runs(self, max_retries: int = 2) -> list[str]:
        """Run ids, in plan order, to (re)launch: not completed/diverged, not running, failures <= max_retries."""
        pending = []
        for run_id in self.run_ids():
            state = self.run_state(run_id)
            if state in (*FINAL, "running"):
                continue
            if self.failures(run_id) <= max_retries:
                pending.append(run_id)
        return pending

    def counts(self) -> dict[str, int]:
        """Runs per state, every state present."""
        counts = dict.fromkeys(STATES, 0)
        for run_id in self.run_ids():
            counts[self.run_state(run_id)] += 1
        return counts

    # ---------------------------------------------------------------------------------------------- attempts

    def claim(self, run_id: str, job_id: str | None = None) -> Claim | None:
        """Take the run's lock (non-blocking) and record a new attempt; None if someone else holds it or the run
        is already completed/diverged. Hold the Claim for the whole attempt; `finish()` then `release()` it."""
        run_dir = self.run_dir(run_id)
        if not (run_dir / "planned.json").exists():
            raise FileNotFoundError(f"{run_dir}: no planned.json (run not in this sweep's plan)")
        fd = os.open(run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if (self.summary(run_id) or {}).get("status") in FINAL:
                os.close(fd)
                return None
            self._mark_lost(run_id)
            holder = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id or slurm_job_id()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
            attempt = self.record_attempt(run_id, {"start": now_iso(), "end": None, "status": "running",
                                                   **holder, "error": None})
        except BaseException:
            os.close(fd)
            raise
        return Claim(self, run_id, fd, attempt)

    def attempts(self, run_id: str) -> list[dict]:
        return read_json(self.run_dir(run_id) / "attempts.json", default=[])

    def record_attempt(self, run_id: str, attempt: dict) -> int:
        """Append an attempt record; return its index. Call only while holding the run's Claim."""
        attempts = self.attempts(run_id)
        attempts.append(attempt)
        write_json_atomic(self.run_dir(run_id) / "attempts.json", attempts)
        return len(attempts) - 1

    def update_attempt(self, run_id: str, index: int, **fields) -> None:
        """Change fields of attempt `index` (e.g. status, end, error). Call only while holding the run's Claim."""
        attempts = self.attempts(run_id)
        attempts[index].update(fields)
        write_json_atomic(self.run_dir(run_id) / "attempts.json", attempts)

    def _mark_lost(self, run_id: str) -> None:
        """Attempts still recorded as running when we hold the lock died without saying so: mark them lost."""
        attempts = self.attempts(run_id)
        if any(a.get("status") == "running" for a in attempts):
            for a in attempts:
                if a.get("status") == "running":
                    a["status"] = "lost"
            write_json_atomic(self.run_dir(run_id) / "attempts.json", attempts)


def slurm_job_id() -> str | None:
    """"<array job>_<task>" inside a SLURM array task, the job id inside a plain SLURM job, else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")
