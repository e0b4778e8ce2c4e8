"""The results store of one sweep: a folder of plain files that every launcher, worker and reader shares.

Layout of `results/<sweep>/` (the Store's root):

    spec.toml            the spec of version 1 as launched, verbatim (never changed)
    spec.v<k>.toml       the spec of version k >= 2, verbatim (written by `sweep launch --extend`)
    spec.json            {"name", "versions": [{"version", "created", "source", "overrides", "spec"}, ...]}: every
                         resolved spec version, oldest first; versions are only ever appended
    plan.json            {"name", "created", "updated", "runs": [PlannedRun dicts]}: runs are only ever added
    jobs.json            {run_id: [{"job_id", "backend", "submitted", "state"}, ...]}: every job submitted per run
    runs/<run_id>/
        planned.json     the PlannedRun (written once, never changed), with the `spec_version` that added it
        attempts.json    [{"start", "end", "status", "host", "pid", "job_id", "error"}], one per attempt
        lock             flock'ed (LOCK_EX, non-blocking) by the process running an attempt, for its whole life
        config.json, metrics.jsonl, summary.json, checkpoints/   written by scaling.train.train

One folder, one sweep: `init_sweep` refuses a spec whose content (what it plans: data, model, budgets, grid, train,
hparams, eval) differs from every recorded version, showing the keys that changed against the newest; `extend=True`
(`sweep launch --extend`) records it as the next version instead, and the runs it adds carry that `spec_version`.
Relaunching a recorded version (to resume it) is allowed and adds nothing. Changes to
resources, backend, tracking, description and the overrides' spelling are operational and do not count. Nothing
already written is overwritten.

Run ids are 12 lowercase hex digits (`RUN_ID`); an id read from plan.json, a run folder or a caller that does not
match is a ConfigError, and every path the store opens must resolve inside its root (a symlinked run folder pointing
elsewhere is refused), so a hostile plan.json cannot make a launcher write outside the sweep's folder.

Run states (`run_state`): "running" while someone holds `lock` (the kernel drops an flock when its holder dies, even
by kill -9, so a crashed attempt never leaves a stale lock); else "completed" / "diverged" from summary.json; else
"failed" when the last attempt failed (or was lost: recorded as running but nobody holds the lock); else "queued"
(never tried, or interrupted/preempted with checkpoints to resume from).

Retries: `pending_runs(max_retries)` returns the runs that are not completed/diverged, not running, and have failed at
most `max_retries` times, i.e. a run gets its first attempt plus up to `max_retries` retries after failures.
Preempted attempts (status "preempted") do not count as failures.

Concurrency and torn files: every file is written with `scaling.jsonio` (temp file + fsync + rename + fsync of the
folder). attempts.json is only written by the holder of the run's lock; plan.json and spec.* under the sweep-wide
`plan.lock`; jobs.json under `jobs.lock`. A file torn anyway (a disk full, a copy cut short, a hand edit) is reported
with a warning naming it, moved aside as `<name>.torn`, and rebuilt where the run folders allow: plan.json from the
runs' planned.json, a planned.json from plan.json, attempts.json and jobs.json as empty histories (a run's state then
comes from its lock, summary.json and checkpoints). Readers (`sweep status`, `scaling fit DIR`) only warn and go on;
writers rebuild under the lock. flock works across processes on one machine and, on Linux, over NFS (emulated with
POSIX locks); some parallel filesystems need `flock` mount options.

Branching (reserved): a PlannedRun may carry `parent: {"run_id": ..., "step": ...}` meaning "start from the parent's
checkpoints/ckpt_<step>.pt" (e.g. WSD cooldowns at several D branched from one stable phase). The field is stored in
planned.json and plan.json and takes part in nothing else yet.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path

from scaling.configfile import writable_dir
from scaling.errors import ConfigError
from scaling.jsonio import TornFileError, read_json, write_json_atomic, write_text_atomic
from scaling.runio import FINAL_STATUSES, read_summary

__all__ = ["FINAL", "RUN_ID", "STATES", "Claim", "Store", "now_iso", "read_json", "write_json_atomic",
           "write_text_atomic"]

STATES = ("queued", "running", "completed", "diverged", "failed")
FINAL = FINAL_STATUSES  # states a run never leaves (the trainer's final summary statuses)
FAILED_ATTEMPTS = ("failed", "lost")
RUN_ID = re.compile(r"[0-9a-f]{12}")  # sweeps.grid.run_id_for: the first 12 hex digits of a sha256
# Spec sections that decide which runs a sweep plans; a change to any of them is a different sweep.
PLANNING_SECTIONS = ("name", "data", "model", "budgets", "grid", "train", "hparams", "eval")
MAX_DIFF_LINES = 12


def now_iso() -> str:
    """UTC time as ISO 8601, seconds precision."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def check_run_id(run_id: object, where: str = "run_id") -> str:
    """`run_id` when it is 12 lowercase hex digits; else ConfigError naming `where` (e.g. the file it came from)."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ConfigError(where, "a run id of 12 lowercase hex digits", run_id)
    return run_id


def spec_content(spec) -> dict:
    """The planning sections of a SweepSpec (or of a stored spec dict): what makes two sweeps the same sweep."""
    d = spec if isinstance(spec, dict) else spec.to_dict()
    return {k: d[k] for k in PLANNING_SECTIONS if k in d}


def same_sweep(a, b) -> bool:
    """Whether two specs (SweepSpec or stored spec dicts) plan the same sweep: equal planning sections."""
    return _canonical(spec_content(a)) == _canonical(spec_content(b))


def spec_diff(old: dict, new: dict, limit: int = MAX_DIFF_LINES) -> list[str]:
    """Lines `dotted.key: old -> new` for every leaf that differs (at most `limit`, then a count of the rest)."""
    a, b = _flatten(old), _flatten(new)
    lines = [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in sorted(set(a) | set(b))
             if a.get(k, _UNSET) != b.get(k, _UNSET)]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


_UNSET = object()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


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

    @property
    def spec_path(self) -> Path:
        return self.root / "spec.json"

    @property
    def jobs_path(self) -> Path:
        return self.root / "jobs.json"

    def run_dir(self, run_id: str) -> Path:
        """runs/<run_id>/; ConfigError for an id that is not 12 hex digits or a folder that leads outside the root."""
        return self.inside(self.root / "runs" / check_run_id(run_id))

    def inside(self, path: Path) -> Path:
        """`path` when it resolves inside the store's root (following symlinks); else ConfigError."""
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise ConfigError(str(path), f"a path inside the sweep folder {root}", str(path.resolve()))
        return path

    # ---------------------------------------------------------------------------------------------- spec versions

    def spec_versions(self) -> list[dict]:
        """Every recorded spec version, oldest first ([] for a new folder); a spec.json from before versions counts
        as version 1."""
        try:
            d = read_json(self.spec_path, default=None)
        except TornFileError as e:
            self._report_torn(e, "its spec history is lost; the next launch records the spec again")
            return []
        if d is None:
            return []
        if isinstance(d, dict) and isinstance(d.get("versions"), list):
            return d["versions"]
        if isinstance(d, dict):  # the single resolved spec of stores written before versions existed
            return [{"version": 1, "created": None, "source": d.get("source"), "overrides": d.get("overrides"),
                     "spec": d}]
        raise ConfigError(str(self.spec_path), "a JSON object with the sweep's spec versions", type(d).__name__)

    def spec_version(self) -> int:
        """The newest spec version (0 when none is recorded)."""
        versions = self.spec_versions()
        return int(versions[-1]["version"]) if versions else 0

    def check_spec(self, spec, extend: bool = False) -> int:
        """The spec version `spec` is (or would become, with `extend`) in this folder; raises ConfigError when the
        folder holds a different sweep (another name, or other content without `extend`), or when the folder cannot be
        written (a file, or read-only). Writes nothing."""
        writable_dir(self.root, "results")
        versions = self.spec_versions()
        if not versions:
            return 1
        stored = spec_content(versions[-1]["spec"])
        if stored.get("name") not in (None, spec.name):
            raise ConfigError("name", f"the sweep name of {self.root} ({stored.get('name')!r}) to add runs to it; "
                              "use another results folder", spec.name)
        for version in reversed(versions):  # relaunching a recorded version (e.g. to resume it) adds nothing new
            if same_sweep(spec, version["spec"]):
                return int(version["version"])
        if extend:
            return int(versions[-1]["version"]) + 1
        changes = "; ".join(spec_diff(stored, spec_content(spec)))
        raise ConfigError("spec", f"the spec {self.root} was launched with (version {versions[-1]['version']}): a "
                          "results folder holds one sweep. To add the changed runs to this sweep as a new spec "
                          "version, launch with --extend; to start another sweep, use another --results folder or "
                          "name", f"changed: {changes}")

    def _record_spec(self, spec, version: int) -> None:
        """Append spec version `version` to spec.json and write its verbatim TOML (spec.toml for version 1)."""
        versions = self.spec_versions()
        if versions and int(versions[-1]["version"]) >= version:
            return
        text = spec.source_text or f"# sweep {spec.name!r} was built in code; spec.json holds it resolved\n"
        toml_path = self.root / ("spec.toml" if version == 1 else f"spec.v{version}.toml")
        if not toml_path.exists():
            write_text_atomic(toml_path, text)
        entry = {"version": version, "created": now_iso(), "source": getattr(spec, "source", None),
                 "overrides": list(getattr(spec, "overrides", []) or []), "spec": spec.to_dict()}
        write_json_atomic(self.spec_path, {"name": spec.name, "versions": [*versions, entry]})

    # ---------------------------------------------------------------------------------------------- plan

    def init_sweep(self, spec, runs: list, extend: bool = False) -> list[str]:
        """Record the spec version and write plan.json and runs/<id>/planned.json; return every run id in plan order.

        Idempotent for the same spec. Raises ConfigError, writing nothing, when the folder cannot be written or
        holds another sweep (see `check_spec`); with `extend`, a changed spec becomes the next version and its new
        runs are appended with that `spec_version` (runs already planned keep theirs; none is removed or changed).
        """
        self.check_spec(spec, extend)  # before anything is written
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(exist_ok=True)
        with self._lock("plan.lock"):
            version = self.check_spec(spec, extend)  # again, under the lock: another launcher may have extended
            existing = self._read_plan(rebuild=True)
            if existing is not None and existing.get("name") != spec.name:
                raise ConfigError("name", f"the sweep name of {self.root} ({existing.get('name')!r}) to add runs "
                                  "to it; use another results folder", spec.name)
            dicts = [run if isinstance(run, dict) else run.to_dict() for run in runs]
            for d in dicts:
                check_run_id(d.get("run_id"), "planned run")
            self._record_spec(spec, version)
            plan = existing or {"name": spec.name, "created": now_iso(), "runs": []}
            known = {r["run_id"] for r in plan["runs"]}
            for d in dicts:
                if d["run_id"] not in known:
                    plan["runs"].append({**d, "spec_version": version})
                    known.add(d["run_id"])
            plan["updated"] = now_iso()
            for d in plan["runs"]:
                run_dir = self.run_dir(d["run_id"])
                run_dir.mkdir(exist_ok=True)
                if not (run_dir / "planned.json").exists():
                    write_json_atomic(run_dir / "planned.json", d)
            write_json_atomic(self.plan_path, plan)
        return [d["run_id"] for d in plan["runs"]]

    def plan(self) -> dict:
        """plan.json, validated (every run id checked); rebuilt in memory from the run folders when it is torn.
        FileNotFoundError when the folder holds no sweep."""
        plan = self._read_plan(rebuild=False)
        if plan is None:
            raise FileNotFoundError(f"{self.root}: no plan.json (not a sweep results folder)")
        return plan

    def _read_plan(self, rebuild: bool) -> dict | None:
        """plan.json or None; a torn one is reported and rebuilt from runs/*/planned.json (and rewritten when
        `rebuild`, which callers do under plan.lock)."""
        try:
            plan = read_json(self.plan_path, default=None)
        except TornFileError as e:
            plan = self._plan_from_run_folders()
            self._report_torn(e, f"rebuilt from {len(plan['runs'])} run folders' planned.json", keep=rebuild)
            if rebuild:
                write_json_atomic(self.plan_path, plan)
            return plan
        if plan is None:
            return None
        if not isinstance(plan, dict) or not isinstance(plan.get("runs"), list):
            raise ConfigError(str(self.plan_path), "a plan object with a list of runs", type(plan).__name__)
        for i, d in enumerate(plan["runs"]):
            if not isinstance(d, dict):
                raise ConfigError(f"{self.plan_path}: runs[{i}]", "a planned run object", d)
            check_run_id(d.get("run_id"), f"{self.plan_path}: runs[{i}].run_id")
        return plan

    def _plan_from_run_folders(self) -> dict:
        """A plan rebuilt from every runs/<id>/planned.json that reads (ordered by spec version, budget, N, id)."""
        runs = []
        for folder in sorted((self.root / "runs").glob("*")) if (self.root / "runs").is_dir() else []:
            if not RUN_ID.fullmatch(folder.name):
                continue
            try:
                d = read_json(self.inside(folder) / "planned.json", default=None)
            except TornFileError:
                continue
            if isinstance(d, dict) and d.get("run_id") == folder.name:
                runs.append(d)
        runs.sort(key=lambda d: (d.get("spec_version", 1), d.get("budget", 0), d.get("N", 0), d["run_id"]))
        versions = self.spec_versions()
        name = versions[-1]["spec"].get("name") if versions else self.root.name
        return {"name": name, "created": None, "updated": now_iso(), "runs": runs, "rebuilt": True}

    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.plan()["runs"]]

    def planned(self, run_id: str) -> dict:
        """The PlannedRun dict of `run_id` (from planned.json; from plan.json, with a warning, when planned.json is
        torn or missing)."""
        path = self.run_dir(run_id) / "planned.json"
        try:
            d = read_json(path, default=None)
        except TornFileError as e:
            d = next((r for r in self.plan()["runs"] if r["run_id"] == run_id), None)
            if d is None:
                raise
            self._report_torn(e, "read from plan.json instead", keep=False)
        if d is None:
            d = next((r for r in self.plan()["runs"] if r["run_id"] == run_id), None)
            if d is None:
                raise FileNotFoundError(f"{self.run_dir(run_id)}: no planned.json (run not in this sweep's plan)")
            warnings.warn(f"{path} is missing; read run {run_id} from plan.json instead", stacklevel=2)
        if not isinstance(d, dict) or d.get("run_id") != run_id:
            raise ConfigError(str(path), f"the planned run {run_id}", d.get("run_id") if isinstance(d, dict) else d)
        return d

    def summary(self, run_id: str) -> dict | None:
        """The trainer's summary.json (`scaling.runio.read_summary`: None before the run has ended, and, with a
        warning, when it is torn)."""
        return read_summary(self.run_dir(run_id))

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
        """The run's attempt records, oldest first; [] (with a warning) when attempts.json is torn."""
        path = self.run_dir(run_id) / "attempts.json"
        try:
            attempts = read_json(path, default=[])
        except TornFileError as e:
            self._report_torn(e, "its attempt history is lost; the run's state comes from its lock and summary",
                              keep=False)
            return []
        if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
            raise ConfigError(str(path), "a list of attempt records", type(attempts).__name__)
        return attempts

    def record_attempt(self, run_id: str, attempt: dict) -> int:
        """Append an attempt record; return its index. Call only while holding the run's Claim."""
        attempts = self._attempts_for_writing(run_id)
        attempts.append(attempt)
        write_json_atomic(self.run_dir(run_id) / "attempts.json", attempts)
        return len(attempts) - 1

    def update_attempt(self, run_id: str, index: int, **fields) -> None:
        """Change fields of attempt `index` (e.g. status, end, error). Call only while holding the run's Claim."""
        attempts = self._attempts_for_writing(run_id)
        if index < len(attempts):
            attempts[index].update(fields)
        else:  # the history was torn and rebuilt while this attempt ran: record it again
            attempts.append(fields)
        write_json_atomic(self.run_dir(run_id) / "attempts.json", attempts)

    def _attempts_for_writing(self, run_id: str) -> list[dict]:
        """attempts.json for the holder of the Claim: a torn file is moved aside (kept) and the history restarts."""
        path = self.run_dir(run_id) / "attempts.json"
        if _is_torn(path):
            self.attempts(run_id)  # reports it
            _set_aside(path)
            return []
        return self.attempts(run_id)

    def _mark_lost(self, run_id: str) -> None:
        """Attempts still recorded as running when we hold the lock died without saying so: mark them lost."""
        attempts = self._attempts_for_writing(run_id)
        if any(a.get("status") == "running" for a in attempts):
            for a in attempts:
                if a.get("status") == "running":
                    a["status"] = "lost"
            write_json_atomic(self.run_dir(run_id) / "attempts.json", attempts)

    # ---------------------------------------------------------------------------------------------- jobs

    def jobs(self) -> dict[str, list[dict]]:
        """jobs.json: {run_id: [{"job_id", "backend", "submitted", "state"}, ...]} oldest first; {} when nothing was
        submitted, or (with a warning) when the file is torn."""
        try:
            jobs = read_json(self.jobs_path, default={})
        except TornFileError as e:
            self._report_torn(e, "its job history is lost; runs are judged by their locks and summaries",
                              keep=False)
            return {}
        if not isinstance(jobs, dict):
            raise ConfigError(str(self.jobs_path), "a JSON object {run_id: [job records]}", type(jobs).__name__)
        for run_id, records in jobs.items():
            check_run_id(run_id, f"{self.jobs_path}: run id")
            if not isinstance(records, list) or not all(isinstance(r, dict) and "job_id" in r for r in records):
                raise ConfigError(f"{self.jobs_path}: {run_id}", "a list of job records", records)
        return jobs

    def record_jobs(self, entries: list[tuple[str, str, str, str]]) -> None:
        """Append (run_id, job_id, backend, state) records to jobs.json, or update the state of a known job id."""
        if not entries:
            return
        with self._lock("jobs.lock"):
            if _is_torn(self.jobs_path):
                self.jobs()  # reports it
                _set_aside(self.jobs_path)
            jobs = self.jobs()
            for run_id, job_id, backend, state in entries:
                records = jobs.setdefault(check_run_id(run_id), [])
                known = next((rec for rec in records if rec["job_id"] == job_id), None)
                if known is None:
                    records.append({"job_id": job_id, "backend": backend, "submitted": now_iso(), "state": state})
                else:
                    known["state"] = state
            write_json_atomic(self.jobs_path, jobs)

    # ---------------------------------------------------------------------------------------------- helpers

    @contextmanager
    def _lock(self, name: str):
        with open(self.root / name, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _report_torn(self, error: TornFileError, what: str, keep: bool = True) -> None:
        """Warn that a store file is torn, saying what was done about it (`keep`: it was moved aside first)."""
        if keep and error.path.exists():
            _set_aside(error.path)
            what += f" (the torn file is kept as {error.path.name}.torn)"
        warnings.warn(f"{error.path} is torn ({error.got}); {what}", stacklevel=3)


def _set_aside(path: Path) -> None:
    """Keep a torn file as <name>.torn (the writer then starts it afresh)."""
    os.replace(path, path.with_name(path.name + ".torn"))


def _is_torn(path: Path) -> bool:
    try:
        read_json(path, default=None)
    except TornFileError:
        return True
    return False


def _canonical(d: dict) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def slurm_job_id() -> str | None:
    """"<array job>_<task>" inside a SLURM array task, the job id inside a plain SLURM job, else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")
