"""Launch a sweep: validate, plan, write the store, submit the runs that still need training, optionally follow them.

`launch(spec, backend="local", results="results", wait=False, dry_run=False, max_retries=2)`:
1. the spec (a SweepSpec, a TOML path or a preset name), its resources and every value the backend will submit are
   validated and the runs planned before anything is written or submitted, so an invalid spec launches nothing;
2. `results/<sweep>/` is initialised (`Store.init_sweep`, idempotent);
3. each run is skipped when it is completed or diverged, running (someone holds its lock), queued or running in a
   job recorded in `jobs.json` that its backend still reports active (SLURM: sacct/squeue; local: the job's record
   and the launcher that owns it), or when it has failed more than `max_retries` times (failed or lost attempts,
   plus recorded jobs that ended FAILED/CANCELLED/... before starting an attempt). The others are submitted, one
   `map_array` per group of equal resources (SLURM: one job array per time-limit step, from each run's planned
   time limit);
4. job ids go to `results/<sweep>/jobs.json` ({run_id: [{"job_id", "backend", "submitted", "state"}]}), so
   `scaling sweep status` and the next launch know about queued and running jobs.

Following: with wait=True the launcher follows its own jobs and also the runs other launchers are training or have
queued (a relaunch with --wait after the first launcher was killed waits for its surviving workers), with a progress
line whose rate and ETA come from the measured throughput in FLOPs (`scaling.progress`). Executors whose jobs live in
this process (local) are always followed, since they end with it; Ctrl-C stops them cleanly (SIGTERM: each worker
checkpoints and exits) and relaunching resumes them. Which backend is used is the executor's business: this module
never asks.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling.errors import ConfigError
from scaling.progress import Progress
from sweeps.executors.base import (
    ACTIVE_STATES,
    FAILED_STATES,
    UNKNOWN,
    Executor,
    Job,
    Resources,
    RunLockJob,
    executor_class,
)
from sweeps.grid import plan
from sweeps.spec import SweepSpec, load_spec, validate_resources
from sweeps.store import FINAL, Store, read_json

UNKNOWN_GRACE_S = 60.0  # seconds a just-submitted job may be unknown to its backend before it counts as over


@dataclass
class LaunchResult:
    """What one `launch` call did. Run ids map to job ids and states; `script` holds the dry-run text."""

    sweep_dir: Path
    backend: str
    submitted: list[str] = field(default_factory=list)  # run ids submitted by this call, in plan order
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why it was not submitted
    job_ids: dict[str, str] = field(default_factory=dict)  # run id -> job id (submitted by this call)
    job_states: dict[str, str] = field(default_factory=dict)  # run id -> last known job state
    run_states: dict[str, str] = field(default_factory=dict)  # run id -> store state after the call
    followed: list[str] = field(default_factory=list)  # run ids of other launchers' jobs this call waited for
    dry_run: bool = False
    script: str | None = None  # dry run: what would be submitted (the sbatch script for slurm)
    jobs: list[Job] = field(default_factory=list, repr=False)  # live handles (not persisted)

    def summary(self) -> str:
        head = "dry run: would submit" if self.dry_run else "submitted"
        lines = [(f"{self.sweep_dir}: {head} {len(self.submitted)} run(s) to {self.backend}, "
                 f"skipped {len(self.skipped)}")]
        reasons: dict[str, int] = {}
        for why in self.skipped.values():
            reasons[why.split(" (")[0]] = reasons.get(why.split(" (")[0], 0) + 1
        lines += [f"  skipped, {why}: {n}" for why, n in sorted(reasons.items())]
        if self.followed:
            lines.append(f"  followed {len(self.followed)} run(s) of other launchers until they ended")
        if self.run_states:
            counts: dict[str, int] = {}
            for state in self.run_states.values():
                counts[state] = counts.get(state, 0) + 1
            lines.append("  runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return "\n".join(lines)


def launch(
    spec,
    backend: str = "local",
    results: str | os.PathLike = "results",
    wait: bool = False,
    dry_run: bool = False,
    max_retries: int = 2,
    *,
    executor: Executor | None = None,
    progress: bool = True,
    poll_s: float | None = None,
    extend: bool = False,
) -> LaunchResult:
    """Launch the runs of `spec` that need training (see the module docstring); return a LaunchResult.

    executor: a ready Executor (e.g. a SlurmExecutor with its own folder and max_num_timeout); default: built from
    the spec's [backend.*] sections. progress: draw a progress line on stderr while waiting.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ConfigError("max_retries", "a non-negative integer", max_retries)
    validate_resources(spec, backend)
    runs = plan(spec)
    store = Store(Path(results) / spec.name)
    executor = executor or make_executor(spec, backend, store.root, dry_run=dry_run)
    if executor.backend != backend:
        raise ConfigError("backend", f"{executor.backend!r} to match the executor given", backend)
    planned = {r.run_id: r.to_dict() for r in runs}
    for d in planned.values():  # every value the backend will submit is checked before anything is written
        executor.prepare(resources_for(spec, d))
    result = LaunchResult(sweep_dir=store.root, backend=backend, dry_run=dry_run)

    if dry_run:
        run_ids = list(planned)
        to_submit = _select(store, run_ids, executor, max_retries, result)[0] if store.plan_path.exists() \
            else run_ids
        result.submitted = to_submit
        result.script = "\n".join(executor.describe([store.run_dir(r) for r in group], resources)
                                  for resources, group in _groups(store, spec, executor, to_submit, planned))
        print(result.script)
        return result

    run_ids = store.init_sweep(spec, runs, extend=extend)  # extend: a changed spec becomes the next spec version
    to_submit, others = _select(store, run_ids, executor, max_retries, result)
    jobs: list[Job] = []
    submitted: list[str] = []
    for resources, group in _groups(store, spec, executor, to_submit, planned):
        jobs += executor.map_array([store.run_dir(r) for r in group], resources)
        submitted += group
    result.submitted, result.jobs = submitted, jobs
    result.job_ids = {r: j.job_id for r, j in zip(submitted, jobs)}
    record_jobs(store.root, [(r, j.job_id, backend, "PENDING") for r, j in zip(submitted, jobs)])

    followed = others if wait else {}
    if (jobs and (wait or executor.jobs_end_with_launcher)) or followed:
        poll = poll_s if poll_s is not None else executor.poll_s
        try:
            states = follow(jobs + list(followed.values()), executor, poll_s=poll, bar=progress and wait,
                            title=spec.name)
        except KeyboardInterrupt:
            executor.shutdown()
            _record_states(store.root, submitted, jobs, {j.job_id: j.state() for j in jobs}, backend)
            raise
        result.job_states.update({r: states[j.job_id] for r, j in zip(submitted, jobs)})
        result.job_states.update({r: states[j.job_id] for r, j in followed.items()})
        result.followed = list(followed)
        _record_states(store.root, submitted, jobs, states, backend)
        # A run this launcher queued but another launcher's worker claimed first: wait for that worker too.
        elsewhere = {r: RunLockJob(store.run_dir(r)) for r in submitted if store.run_state(r) == "running"} \
            if wait else {}
        if elsewhere:
            follow(list(elsewhere.values()), executor, poll_s=poll, bar=progress, title=spec.name)
            result.followed += list(elsewhere)
    else:
        result.job_states.update(dict.fromkeys(submitted, "PENDING"))
    result.run_states = {r: store.run_state(r) for r in run_ids}
    return result


# -------------------------------------------------------------------------------------------- executors, resources


def resources_for(spec, planned: dict | None = None) -> Resources:
    """Per-run resources from spec.resources and spec.backend.slurm, with the run's planned time limit (its
    estimated time x safety, `time_min` in planned.json) when the spec gives a throughput to estimate it from."""
    r, s = spec.resources, spec.backend.slurm
    time_min = None
    if planned is not None and r.throughput_flops is not None and planned.get("time_min") is not None:
        time_min = planned["time_min"]
        if isinstance(time_min, bool) or not isinstance(time_min, (int, float)) or not math.isfinite(time_min) \
                or time_min <= 0:
            raise ConfigError(f"runs/{planned.get('run_id')}/planned.json: time_min", "a positive number of minutes",
                              time_min)
    return Resources(gpus=r.gpus, cpus=r.cpus, mem_gb=r.mem_gb, timeout_min=r.time_min, time_min=time_min,
                     partition=s.partition, account=s.account, qos=s.qos, array_parallelism=s.array_parallelism,
                     extra=tuple(s.extra))


def make_executor(spec, backend: str, sweep_dir: Path, dry_run: bool = False) -> Executor:
    """The executor the spec's [backend.<backend>] section describes (ConfigError for an unknown backend)."""
    return executor_class(backend).from_spec(spec, Path(sweep_dir), dry_run=dry_run)


def _groups(store: Store, spec, executor: Executor, run_ids: list[str], planned: dict[str, dict]
            ) -> list[tuple[Resources, list[str]]]:
    """The runs to submit, grouped by the resources the backend will ask for (first appearance order)."""
    groups: dict[tuple, tuple[Resources, list[str]]] = {}
    for run_id in run_ids:
        d = planned.get(run_id) or store.planned(run_id)  # a run of an earlier spec version: its planned.json
        resources = executor.prepare(resources_for(spec, d))
        groups.setdefault(resources.key(), (resources, []))[1].append(run_id)
    return list(groups.values())


# -------------------------------------------------------------------------------------------- what to submit


def _select(store: Store, run_ids: list[str], executor: Executor, max_retries: int, result: LaunchResult
            ) -> tuple[list[str], dict[str, Job]]:
    """(run ids to submit now, {run id: a handle on the job of another launcher that is training or will train
    it}); the skipped runs go to result.skipped with the reason."""
    jobs = load_jobs(store.root)
    live = _live_states(jobs, executor)
    to_submit, others = [], {}
    for run_id in run_ids:
        state = store.run_state(run_id) if store.run_dir(run_id).exists() else "queued"
        last = (jobs.get(run_id) or [None])[-1]
        last_state = _last_state(last, live)
        active = last is not None and last["backend"] == executor.backend and last_state in ACTIVE_STATES \
            and (last["job_id"] in live or _recent(last)) \
            and not (executor.queue_is_shared and last_state == "PENDING")
        if state in FINAL:
            result.skipped[run_id] = state
        elif state == "running":
            result.skipped[run_id] = "running (its lock is held)"
            others[run_id] = executor.attach(last["job_id"], store.run_dir(run_id)) if active \
                else RunLockJob(store.run_dir(run_id))
        elif active:
            result.skipped[run_id] = f"in {executor.where} (job {last['job_id']} {last_state})"
            others[run_id] = executor.attach(last["job_id"], store.run_dir(run_id))
        elif (n := failures(store, run_id, jobs.get(run_id, []), live)) > max_retries:
            result.skipped[run_id] = f"failed too often ({n} failures > max_retries {max_retries})"
        else:
            to_submit.append(run_id)
        if last is not None:
            result.job_states[run_id] = last_state
    return to_submit, others


def _last_state(record: dict | None, live: dict[str, str]) -> str | None:
    """The state of a recorded job: its backend's answer when it has one, else the recorded state."""
    if record is None:
        return None
    return live.get(record["job_id"], record.get("state"))


def _recent(record: dict, grace_s: float = UNKNOWN_GRACE_S) -> bool:
    """True when the job was submitted less than `grace_s` ago (its backend may not know it yet)."""
    try:
        submitted = _dt.datetime.fromisoformat(record["submitted"])
    except (KeyError, TypeError, ValueError):
        return False
    return (_dt.datetime.now(_dt.UTC) - submitted).total_seconds() < grace_s


def failures(store: Store, run_id: str, records: list[dict], live: dict[str, str] | None = None) -> int:
    """Failed or lost attempts (the store's count), plus recorded jobs that ended badly before any attempt started
    (e.g. cancelled while queued; a local job dropped from its launcher's queue ends DROPPED, not a failure)."""
    live = live or {}
    exists = store.run_dir(run_id).exists()
    n = store.failures(run_id) if exists else 0
    attempted = {a.get("job_id") for a in (store.attempts(run_id) if exists else [])}
    for rec in records:
        if rec["job_id"] not in attempted:
            n += live.get(rec["job_id"], rec.get("state")) in FAILED_STATES
    return n


def _live_states(jobs: dict[str, list[dict]], executor: Executor) -> dict[str, str]:
    """Current states of the recorded jobs this executor can ask about and that were not known to be over."""
    ids = [rec["job_id"] for records in jobs.values() for rec in records
           if rec["backend"] == executor.backend and rec.get("state") in ACTIVE_STATES]
    return {k: v for k, v in executor.job_states(ids).items() if v != UNKNOWN} if ids else {}


# -------------------------------------------------------------------------------------------- jobs.json


def load_jobs(sweep_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """{run_id: [{"job_id", "backend", "submitted", "state"}, ...]} oldest first (jobs.json belongs to Store)."""
    return Store(sweep_dir).jobs()


def record_jobs(sweep_dir: str | os.PathLike, entries: list[tuple[str, str, str, str]]) -> None:
    """Append (run_id, job_id, backend, state) records to jobs.json, or update a known job's state (Store)."""
    Store(sweep_dir).record_jobs(entries)


def _record_states(sweep_dir: Path, run_ids: list[str], jobs: list[Job], states: dict[str, str], backend: str):
    record_jobs(sweep_dir, [(r, j.job_id, backend, states.get(j.job_id, UNKNOWN)) for r, j in zip(run_ids, jobs)])


def job_status(sweep_dir: str | os.PathLike, executor: Executor | None = None) -> dict[str, dict]:
    """The newest recorded job of each run: {run_id: {"job_id", "backend", "submitted", "state", "failures"}}.

    States of jobs not known to be over are asked of their backend (`executor`, else one built for this sweep per
    backend named in jobs.json: SLURM through sacct/squeue when sbatch is on PATH, local jobs from their records
    and run locks); `failures` counts the run's failed tries (see `failures`).
    """
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    executors = {executor.backend: executor} if executor is not None else {}
    for backend in sorted({rec["backend"] for records in jobs.values() for rec in records} - set(executors)):
        found = executor_class(backend).for_sweep(sweep_dir)
        if found is not None:
            executors[backend] = found
    live: dict[str, str] = {}
    for ex in executors.values():
        live.update(_live_states(jobs, ex))
    store = Store(sweep_dir)
    out = {}
    for run_id, records in jobs.items():
        last = dict(records[-1])
        last["state"] = live.get(last["job_id"], last.get("state"))
        last["failures"] = failures(store, run_id, records, live)
        out[run_id] = last
    return out


# -------------------------------------------------------------------------------------------- following


def follow(jobs: list[Job], executor: Executor, poll_s: float = 1.0, bar: bool = True, title: str = "sweep",
           stream=None) -> dict[str, str]:
    """Wait until every job has ended, showing progress (runs by state, FLOP/s, ETA) on `stream` (stderr);
    return {job_id: state}. A job its backend does not know yet counts as queued for UNKNOWN_GRACE_S."""
    plans = {j.job_id: planned_work(j.run_dir) for j in jobs}
    total = sum(flops for flops, _ in plans.values()) or 1.0

    def work_done(states: dict[str, str]) -> float:
        return sum(flops_done(j.run_dir, *plans[j.job_id], states[j.job_id]) for j in jobs)

    start = time.monotonic()
    states = executor.states(jobs)
    meter = Progress(total=total, unit="FLOP", enabled=bar, stream=stream or sys.stderr,
                     initial=work_done(states) if bar else 0.0)
    try:
        while True:
            if bar:
                meter.update(work_done(states), f"{title}: {progress_status(list(states.values()))}")
            unknown_is_over = time.monotonic() - start > UNKNOWN_GRACE_S  # a fresh job may not be in sacct yet
            if all(s not in ACTIVE_STATES and (s != UNKNOWN or unknown_is_over) for s in states.values()):
                return {j.job_id: states[j.job_id] for j in jobs}
            time.sleep(poll_s)
            states = executor.states(jobs)
    finally:
        meter.close()


def progress_status(states: list[str]) -> str:
    """e.g. `3/8 done, 1 failed, 2 running, 2 queued`."""
    total = len(states)
    done = sum(s not in ACTIVE_STATES and s != UNKNOWN for s in states)
    failed = sum(s in FAILED_STATES for s in states)
    running = sum(s in ("RUNNING", "COMPLETING") for s in states)
    return f"{done}/{total} done, {failed} failed, {running} running, {total - done - running} queued"


def planned_work(run_dir: Path) -> tuple[float, float]:
    """(FLOPs, tokens) a run is planned to train (planned.json `flops`, `D`); zeros when unreadable."""
    try:
        planned = read_json(Path(run_dir) / "planned.json", default={})
    except ValueError:
        planned = {}
    planned = planned if isinstance(planned, dict) else {}
    return tuple(float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else 0.0
                 for v in (planned.get("flops"), planned.get("D")))


def flops_done(run_dir: Path, flops: float, tokens: float, state: str) -> float:
    """How much of a run's planned `flops` is behind it: all once its job has ended, else the share of its planned
    `tokens` in the newest metrics line (0 before the first one)."""
    if state not in ACTIVE_STATES and state != UNKNOWN:
        return flops
    done = _last_metrics(Path(run_dir) / "metrics.jsonl").get("tokens")
    if not isinstance(done, (int, float)) or tokens <= 0:
        return 0.0
    return flops * min(1.0, max(0.0, done / tokens))


def _last_metrics(path: Path, tail_bytes: int = 4096) -> dict:
    """The newest complete line of a metrics.jsonl ({} when there is none); reads only the file's tail."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            lines = f.read().split(b"\n")
    except OSError:
        return {}
    for line in reversed(lines[:-1]):  # the part after the last newline may be a line still being written
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            return record
    return {}
