"""Launch a sweep: validate, plan, write the store, submit the runs that still need training, optionally follow them.

`launch(spec, backend="local", results="results", wait=False, dry_run=False, max_retries=2)`:
1. the spec (a SweepSpec, a TOML path or a preset name) and its resources are validated and the runs planned before
   anything is written or submitted, so an invalid spec launches nothing;
2. `results/<sweep>/` is initialised (`Store.init_sweep`, idempotent);
3. each run is skipped when it is completed or diverged, running (someone holds its lock), queued or running in a
   SLURM job recorded in `jobs.json` (sacct/squeue say PENDING/RUNNING/REQUEUED...), or when it has failed more than
   `max_retries` times (failed or lost attempts, plus recorded jobs that ended FAILED/CANCELLED/... before starting
   an attempt). The others are submitted as one job array per group of equal resources;
4. job ids go to `results/<sweep>/jobs.json` ({run_id: [{"job_id", "backend", "submitted", "state"}]}), so
   `scaling sweep status` and the next launch know about queued and running jobs.

Backends: "slurm" returns once the array is submitted (wait=True follows it with a progress bar until every job has
ended). "local" runs the workers as children of this process, so `launch` always returns only when every run has
ended (wait only adds the progress bar); Ctrl-C stops the workers cleanly (SIGTERM: each checkpoints and exits) and
relaunching resumes them.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling.errors import ConfigError
from sweeps.executors.base import ACTIVE_STATES, FAILED_STATES, Executor, Job, Resources
from sweeps.store import FINAL, Store, now_iso, read_json, write_json_atomic

JOBS_FILE = "jobs.json"
UNKNOWN_GRACE_S = 60.0  # seconds a just-submitted job may be unknown to sacct/squeue before it counts as over


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
) -> LaunchResult:
    """Launch the runs of `spec` that need training (see the module docstring); return a LaunchResult.

    executor: a ready Executor (e.g. a SlurmExecutor with its own folder and max_num_timeout); default: built from
    the spec's [backend.*] sections. progress: draw a progress bar on stderr while waiting.
    """
    from sweeps.grid import plan
    from sweeps.spec import SweepSpec, load_spec, validate_resources

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError("max_retries", "a non-negative integer", max_retries)
    validate_resources(spec, backend)
    runs = plan(spec)
    store = Store(Path(results) / spec.name)
    resources = resources_for(spec)
    executor = executor or make_executor(spec, backend, store.root, dry_run=dry_run)
    if executor.backend != backend:
        raise ConfigError("backend", f"{executor.backend!r} to match the executor given", backend)
    result = LaunchResult(sweep_dir=store.root, backend=backend, dry_run=dry_run)

    if dry_run:
        run_ids = [r.run_id for r in runs]
        to_submit = _select(store, run_ids, executor, max_retries, result) if store.plan_path.exists() else run_ids
        result.submitted = to_submit
        result.script = executor.describe([store.run_dir(r) for r in to_submit], resources)
        print(result.script)
        return result

    run_ids = store.init_sweep(spec, runs)
    to_submit = _select(store, run_ids, executor, max_retries, result)
    jobs = executor.map_array([store.run_dir(r) for r in to_submit], resources) if to_submit else []
    result.submitted = to_submit
    result.jobs = jobs
    result.job_ids = {r: j.job_id for r, j in zip(to_submit, jobs)}
    record_jobs(store.root, [(r, j.job_id, backend, "PENDING") for r, j in zip(to_submit, jobs)])

    if jobs and (wait or backend == "local"):
        poll = poll_s if poll_s is not None else (0.2 if backend == "local" else 3.0)
        try:
            states = follow(jobs, executor, poll_s=poll, bar=progress and wait, title=spec.name)
        except KeyboardInterrupt:
            executor.shutdown()
            _record_states(store.root, to_submit, jobs, {j.job_id: j.state() for j in jobs}, backend)
            raise
        result.job_states.update({r: states[j.job_id] for r, j in zip(to_submit, jobs)})
        _record_states(store.root, to_submit, jobs, states, backend)
    else:
        result.job_states.update(dict.fromkeys(to_submit, "PENDING"))
    result.run_states = {r: store.run_state(r) for r in run_ids}
    return result


# -------------------------------------------------------------------------------------------- executors, resources


def resources_for(spec) -> Resources:
    """Per-run resources from spec.resources and spec.backend.slurm."""
    r, s = spec.resources, spec.backend.slurm
    return Resources(gpus=r.gpus, cpus=r.cpus, mem_gb=r.mem_gb, timeout_min=r.time_min, partition=s.partition,
                     account=s.account, qos=s.qos, array_parallelism=s.array_parallelism, additional=dict(s.extra))


def make_executor(spec, backend: str, sweep_dir: Path, dry_run: bool = False) -> Executor:
    if backend == "local":
        from sweeps.executors.local import LocalExecutor

        loc = spec.backend.local
        return LocalExecutor(max_concurrent=loc.max_concurrent, threads_per_run=loc.threads_per_run)
    if backend == "slurm":
        from sweeps.executors.slurm import SlurmExecutor, slurm_available

        if not dry_run and not slurm_available():
            raise ConfigError("backend", "a machine with sbatch and srun on PATH for backend 'slurm' "
                              "(or --dry-run to print the sbatch script)", backend)
        return SlurmExecutor(folder=Path(sweep_dir) / "slurm", job_name=spec.name,
                             max_num_timeout=spec.backend.slurm.max_num_timeout)
    raise ConfigError("backend", "one of ('local', 'slurm')", backend)


# -------------------------------------------------------------------------------------------- what to submit


def _select(store: Store, run_ids: list[str], executor: Executor, max_retries: int, result: LaunchResult) -> list[str]:
    """The run ids to submit now; the others go to result.skipped with the reason."""
    jobs = load_jobs(store.root)
    live = _live_states(jobs, executor)
    to_submit = []
    for run_id in run_ids:
        state = store.run_state(run_id) if store.run_dir(run_id).exists() else "queued"
        last = (jobs.get(run_id) or [None])[-1]
        last_state = live.get(last["job_id"], last.get("state")) if last else None
        if state in FINAL:
            result.skipped[run_id] = state
        elif state == "running":
            result.skipped[run_id] = "running (its lock is held)"
        elif last is not None and last["backend"] == "slurm" and last_state in ACTIVE_STATES:
            result.skipped[run_id] = f"in SLURM (job {last['job_id']} {last_state})"
        elif (n := failures(store, run_id, jobs.get(run_id, []), live)) > max_retries:
            result.skipped[run_id] = f"failed too often ({n} failures > max_retries {max_retries})"
        else:
            to_submit.append(run_id)
        if last is not None:
            result.job_states[run_id] = last_state
    return to_submit


def failures(store: Store, run_id: str, records: list[dict], live: dict[str, str] | None = None) -> int:
    """Failed or lost attempts (the store's count), plus recorded SLURM jobs that ended badly before any attempt
    started (e.g. cancelled while queued)."""
    live = live or {}
    n = store.failures(run_id) if store.run_dir(run_id).exists() else 0
    attempted = {a.get("job_id") for a in (store.attempts(run_id) if store.run_dir(run_id).exists() else [])}
    for rec in records:  # local jobs end unstarted only when their own launcher stops: not a failure of the run
        if rec["backend"] == "local" or rec["job_id"] in attempted:
            continue
        n += live.get(rec["job_id"], rec.get("state")) in FAILED_STATES
    return n


def _live_states(jobs: dict[str, list[dict]], executor: Executor) -> dict[str, str]:
    """Current states of the recorded jobs this executor can ask about and that were not known to be over."""
    ids = [rec["job_id"] for records in jobs.values() for rec in records
           if rec["backend"] == executor.backend and rec.get("state") in ACTIVE_STATES]
    return {k: v for k, v in executor.job_states(ids).items() if v != "UNKNOWN"} if ids else {}


# -------------------------------------------------------------------------------------------- jobs.json


def load_jobs(sweep_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """{run_id: [{"job_id", "backend", "submitted", "state"}, ...]} oldest first; {} when nothing was submitted."""
    return read_json(Path(sweep_dir) / JOBS_FILE, default={}) or {}


def record_jobs(sweep_dir: str | os.PathLike, entries: list[tuple[str, str, str, str]]) -> None:
    """Append (run_id, job_id, backend, state) records to jobs.json, or update the state of a known job id."""
    if not entries:
        return
    sweep_dir = Path(sweep_dir)
    with open(sweep_dir / "jobs.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jobs = load_jobs(sweep_dir)
        for run_id, job_id, backend, state in entries:
            records = jobs.setdefault(run_id, [])
            known = next((rec for rec in records if rec["job_id"] == job_id), None)
            if known is None:
                records.append({"job_id": job_id, "backend": backend, "submitted": now_iso(), "state": state})
            else:
                known["state"] = state
        write_json_atomic(sweep_dir / JOBS_FILE, jobs)


def _record_states(sweep_dir: Path, run_ids: list[str], jobs: list[Job], states: dict[str, str], backend: str):
    record_jobs(sweep_dir, [(r, j.job_id, backend, states.get(j.job_id, "UNKNOWN")) for r, j in zip(run_ids, jobs)])


def job_status(sweep_dir: str | os.PathLike, executor: Executor | None = None) -> dict[str, dict]:
    """The newest recorded job of each run: {run_id: {"job_id", "backend", "submitted", "state"}}.

    States of SLURM jobs not known to be over are refreshed through sacct/squeue (when `executor` is a SLURM
    executor, or sbatch is on PATH); `failures` counts the run's failed tries (see `failures`).
    """
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    if executor is None and any(rec["backend"] == "slurm" for records in jobs.values() for rec in records):
        from sweeps.executors.slurm import SlurmExecutor, slurm_available

        executor = SlurmExecutor(sweep_dir / "slurm") if slurm_available() else None
    live = _live_states(jobs, executor) if executor is not None else {}
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
    """Wait until every job has ended, drawing a progress bar on `stream` (stderr); return {job_id: state}."""
    stream = stream or sys.stderr
    start, last_line = time.monotonic(), ""
    ids = [j.job_id for j in jobs]
    while True:
        states = _states(jobs, executor)
        if bar:
            line = progress_line(title, list(states.values()), time.monotonic() - start)
            if stream.isatty():
                stream.write("\r" + line)
            elif line.rsplit("  ", 1)[0] != last_line:  # not a terminal: a line only when the counts change
                stream.write(line + "\n")
                last_line = line.rsplit("  ", 1)[0]
            stream.flush()
        unknown_is_over = time.monotonic() - start > UNKNOWN_GRACE_S  # a fresh job may not be in sacct yet
        if all(s not in ACTIVE_STATES and (s != "UNKNOWN" or unknown_is_over) for s in states.values()):
            if bar and stream.isatty():
                stream.write("\n")
            return {i: states[i] for i in ids}
        time.sleep(poll_s)


def _states(jobs: list[Job], executor: Executor) -> dict[str, str]:
    if executor.backend == "local":  # in memory: the scheduler is in this process
        return {j.job_id: j.state() for j in jobs}
    return executor.job_states([j.job_id for j in jobs])  # one sacct/squeue call for all


def progress_line(title: str, states: list[str], elapsed_s: float, width: int = 24) -> str:
    """e.g. `tiny [#########...............] 3/8 done, 1 failed, 2 running, 2 queued  0:42`."""
    total = len(states)
    done = sum(s not in ACTIVE_STATES for s in states)
    failed = sum(s in FAILED_STATES for s in states)
    running = sum(s in ("RUNNING", "COMPLETING") for s in states)
    queued = total - done - running
    filled = round(width * done / total) if total else width
    m, s = divmod(int(elapsed_s), 60)
    return (f"{title} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} done, {failed} failed, "
            f"{running} running, {queued} queued  {m}:{s:02d}")
