"""Run sweeps on this machine: a small scheduler of worker subprocesses.

- Each slot is one long-lived worker (`python -m sweeps.worker --serve`) that trains the runs it is sent one after
  another, so a run does not pay the ~1.4 s import of torch and the packages. The scheduler sends a worker one run
  at a time (a JSON line on its stdin) and reads back how it ended (a JSON line on its stdout); the worker claims each
  run with the same flock as a one-run worker, so kill -9, Ctrl-C, cancel and two launchers leave exactly the same
  resumable state. `reuse_workers=False` starts one process per run instead (`python -m sweeps.worker RUN_DIR`).
- With GPUs (a run asking for `gpus >= 1`): one run per visible GPU at a time, pinned with CUDA_VISIBLE_DEVICES; a run
  asking for G > 1 GPUs waits for G free GPUs and runs alone under torchrun (`python -m torch.distributed.run
  --standalone --nproc_per_node G -m sweeps.worker RUN_DIR`).
- On CPU (`gpus == 0`): `max_concurrent` workers at a time, the cores split evenly between them (OMP_NUM_THREADS,
  and the worker calls torch.set_num_threads).
- The rest wait in a FIFO queue. Workers run in their own session, so Ctrl-C in a terminal reaches only the launcher,
  which then calls `shutdown()`: queued runs are dropped, running workers get SIGTERM (the trainer finishes its step,
  checkpoints and exits), stragglers get SIGKILL after `grace_s`. Relaunching resumes from the checkpoints. A worker
  whose launcher dies finishes its current run, reads the end of its input and exits.

Job state on disk: every job of a sweep run writes `<sweep>/local/<job_id>.json` (run_dir, state, launcher host and
pid) at each change, so `job_states` answers for jobs of other launchers too (`scaling sweep status`, `launch
--wait` after the first launcher was killed): a RUNNING job whose launcher died is followed through its run's lock.

The scheduler lives in a daemon thread of the launching process: local jobs run only while that process lives.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from scaling.errors import ConfigError
from sweeps.executors.base import ACTIVE_STATES, DROPPED, UNKNOWN, Executor, Job, Resources, state_from_store
from sweeps.store import read_json, write_json_atomic
from sweeps.worker import EXIT_BUSY, EXIT_OK, JOB_ID_ENV, SERVE_FLAG

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `sweeps/`, put on the workers' PYTHONPATH
RECORDS_DIR = "local"  # <sweep>/local/<job_id>.json
JOB_ID_RE = re.compile(r"^local-[0-9a-f]{10}$")
STATE_RE = re.compile(r"[A-Z_]{1,32}")  # a job state word, as every record is written


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch  # heavy: only when GPUs are asked about

        return [str(i) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):  # no torch or a broken driver: CPU only
        return []


def worker_command(run_dir: Path | None, nproc: int, python: str = sys.executable) -> list[str]:
    """A worker's command line: a serving worker (run_dir None), one run in one process, or torchrun for several."""
    if run_dir is None:
        return [python, "-m", "sweeps.worker", SERVE_FLAG]
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "sweeps.worker", str(run_dir)]
    return [python, "-m", "sweeps.worker", str(run_dir)]


def records_dir(run_dir: Path) -> Path | None:
    """`<sweep>/local/` for a run directory of a sweep store (`<sweep>/runs/<run_id>`), else None."""
    sweep = run_dir.parent.parent
    if run_dir.parent.name != "runs" or not (sweep / "plan.json").exists():
        return None
    return sweep / RECORDS_DIR


class LocalJob(Job):
    """One run in the local scheduler. It owns its state; the scheduler reports what happened through
    `started`, `ended` and `dropped`, and `cancel()` asks the executor to stop it."""

    poll_s = 0.1

    def __init__(self, executor: LocalExecutor, run_dir: Path, resources: Resources):
        self.executor = executor
        self.run_dir = Path(run_dir)
        self.resources = resources
        self.job_id = f"local-{uuid.uuid4().hex[:10]}"
        self.pid: int | None = None  # the worker process training it
        self.returncode: int | None = None
        self._state = "PENDING"
        self._cancel_requested = False
        self.record_dir = records_dir(self.run_dir)  # <sweep>/local/, None outside a sweep store
        self._save()

    def state(self) -> str:
        return self._state

    def cancel(self) -> None:
        self.executor.cancel(self)

    # -- transitions (called by the scheduler) ---------------------------------------------------------------------
    def cancel_requested(self) -> None:
        """Remember that the end of this job, whatever its exit status, was asked for."""
        self._cancel_requested = True

    def started(self, pid: int) -> None:
        self.pid, self._state = pid, "RUNNING"
        self._save()

    def ended(self, returncode: int) -> None:
        """The worker reported (or its process ended with) `returncode` for this run."""
        self.returncode = returncode
        if returncode == EXIT_OK:
            self._state = "COMPLETED"
        elif returncode == EXIT_BUSY:
            self._state = DROPPED  # another process had claimed the run: it trains it, this job did not
        else:
            self._state = "CANCELLED" if self._cancel_requested else "FAILED"
        self._save()

    def dropped(self) -> None:
        """Taken off the queue before it started (not a failure of the run)."""
        self._state = DROPPED
        self._save()

    def _save(self) -> None:
        if self.record_dir is None:
            return
        self.record_dir.mkdir(exist_ok=True)
        write_json_atomic(self.record_dir / f"{self.job_id}.json", {
            "job_id": self.job_id, "run_dir": str(self.run_dir), "state": self._state, "pid": self.pid,
            "returncode": self.returncode, **launcher_identity(),
        })


class WorkerProcess:
    """One worker subprocess: a serving worker that trains the runs it is sent in turn, or a one-run worker."""

    def __init__(self, proc: subprocess.Popen, gpu_ids: list[str], serves: bool):
        self.proc, self.gpu_ids, self.serves = proc, gpu_ids, serves
        self.job: LocalJob | None = None
        self.closing = False  # its input was closed: it exits once idle
        self._buffer = b""
        if serves:
            os.set_blocking(proc.stdout.fileno(), False)

    @property
    def gpus(self) -> int:
        return len(self.gpu_ids)

    def send(self, job: LocalJob) -> None:
        """Hand a serving worker its next run."""
        self.job = job
        job.started(self.proc.pid)
        try:
            self.proc.stdin.write((json.dumps({"run_dir": str(job.run_dir), "job_id": job.job_id}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: reaped below, and the job ends with its exit status

    def reports(self) -> list[tuple[str, int]]:
        """(job_id, exit status) of the runs a serving worker finished since the last call."""
        if not self.serves:
            return []
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        out = []
        for line in lines:
            try:
                report = json.loads(line)
                out.append((str(report["job_id"]), int(report["exit"])))
            except (ValueError, KeyError, TypeError):
                continue  # not a report (the worker never writes anything else to this pipe)
        return out

    def close(self) -> None:
        """End of input: a serving worker exits once its current run is over."""
        self.closing = True
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.proc.pid, sig)  # torchrun passes it on to its ranks
        except (ProcessLookupError, PermissionError):
            pass

    def kill_group(self) -> None:
        """SIGKILL the worker and its children (torchrun's ranks): each worker leads its own process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class LocalExecutor(Executor):
    """Local scheduler. `max_concurrent`: CPU runs at a time (default 1); `gpus`: GPU ids (default: all visible);
    `reuse_workers`: one long-lived worker per slot (default) or one process per run."""

    backend = "local"
    where = "another local launcher"
    jobs_end_with_launcher = True  # the scheduler is a thread of the launching process
    queue_is_shared = True  # launchers (on one machine or several) race for each run's claim; one trains it
    poll_s = 0.2

    def __init__(self, max_concurrent: int | None = None, gpus: list[str] | None = None,
                 threads_per_run: int | None = None, grace_s: float = 60.0, poll_s: float = 0.1,
                 python: str = sys.executable, reuse_workers: bool = True):
        if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 1):
            raise ConfigError("local.max_concurrent", "a positive integer", max_concurrent)
        self.max_concurrent = max_concurrent or 1
        self._gpus = None if gpus is None else [str(g) for g in gpus]
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads_per_run = threads_per_run
        self.grace_s, self.poll_s, self.python = grace_s, poll_s, python
        self.reuse_workers = reuse_workers
        self.jobs: list[LocalJob] = []
        self._queue: collections.deque[LocalJob] = collections.deque()
        self._workers: list[WorkerProcess] = []
        self._free_gpus: list[str] | None = None  # filled on the first GPU run
        self._record_dirs: set[Path] = set()  # <sweep>/local/ folders to look up jobs of other launchers in
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_spec(cls, spec, sweep_dir: Path, dry_run: bool = False) -> LocalExecutor:
        loc = spec.backend.local
        executor = cls(max_concurrent=loc.max_concurrent, threads_per_run=loc.threads_per_run)
        executor._record_dirs.add(Path(sweep_dir) / RECORDS_DIR)
        return executor

    @classmethod
    def for_sweep(cls, sweep_dir: Path) -> LocalExecutor:
        executor = cls()
        executor._record_dirs.add(Path(sweep_dir) / RECORDS_DIR)
        return executor

    @property
    def gpus(self) -> list[str]:
        """GPU ids to schedule on (looked up on first use: it may import torch)."""
        if self._gpus is None:
            self._gpus = visible_gpus()
        return self._gpus

    @property
    def cpu_threads(self) -> int:
        """Threads per CPU run: threads_per_run, else the cores split evenly between max_concurrent runs."""
        return self.threads_per_run or max(1, self.cores // self.max_concurrent)

    @property
    def gpu_threads(self) -> int:
        """Threads per GPU run: threads_per_run, else the cores split evenly between the GPUs."""
        return self.threads_per_run or max(1, self.cores // max(1, len(self.gpus)))

    # -- the Executor interface ------------------------------------------------------------------------------------
    def map_array(self, run_dirs: list[str | Path], resources: Resources | None = None) -> list[LocalJob]:
        resources = resources or Resources()
        self._check(resources)
        jobs = [LocalJob(self, Path(d).resolve(), resources) for d in run_dirs]
        with self._lock:
            self._record_dirs.update(records_dir(j.run_dir) for j in jobs if records_dir(j.run_dir) is not None)
            self.jobs.extend(jobs)
            self._queue.extend(jobs)
            self._schedule()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sweeps-local-scheduler", daemon=True)
                self._thread.start()
        return jobs

    def describe(self, run_dirs: list[str | Path], resources: Resources | None = None) -> str:
        resources = resources or Resources()
        self._check(resources)
        if resources.gpus:
            slots = f"{len(self.gpus) // resources.gpus} at a time on GPUs {','.join(self.gpus)}"
            threads = self.gpu_threads
        else:
            slots, threads = f"{self.max_concurrent} at a time on CPU", self.cpu_threads
        lines = [f"# local: {len(run_dirs)} run(s), {slots}, {threads} thread(s) each"]
        if self._serves(resources):
            lines.append(f"# each slot is one worker that trains these runs in turn: "
                         f"{' '.join(worker_command(None, 1, self.python))}")
            lines += [f"#   {Path(d).resolve()}" for d in run_dirs]
        else:
            lines += [" ".join(worker_command(Path(d).resolve(), max(1, resources.gpus), self.python))
                      for d in run_dirs]
        return "\n".join(lines)

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """States of this executor's jobs, and of jobs other launchers recorded under the sweeps it knows."""
        with self._lock:
            mine = {j.job_id: j.state() for j in self.jobs}
        return {job_id: mine[job_id] if job_id in mine else self._recorded_state(job_id) for job_id in job_ids}

    def attach(self, job_id: str, run_dir: str | Path) -> Job:
        folder = records_dir(Path(run_dir).resolve())
        if folder is not None:
            self._record_dirs.add(folder)
        return super().attach(job_id, run_dir)

    def cancel(self, job: LocalJob) -> None:
        """Drop a queued job; send SIGTERM to a running one (its worker checkpoints, then exits)."""
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                job.dropped()
                return
            worker = next((w for w in self._workers if w.job is job), None)
            if worker is not None:
                job.cancel_requested()
                worker.signal(signal.SIGTERM)

    def shutdown(self, grace_s: float | None = None) -> None:
        """Cancel everything; wait up to `grace_s` for running workers to checkpoint and exit, then SIGKILL them."""
        grace_s = self.grace_s if grace_s is None else grace_s
        with self._lock:
            for job in list(self._queue) + [w.job for w in self._workers if w.job is not None]:
                self.cancel(job)
            for worker in self._workers:
                worker.close()
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            with self._lock:
                self._reap()
                if not self._workers:
                    return
            time.sleep(self.poll_s)
        with self._lock:
            stragglers = list(self._workers)
            for worker in stragglers:
                worker.kill_group()
        for worker in stragglers:
            worker.proc.wait()
        with self._lock:
            self._reap()

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and all(w.job is None for w in self._workers)

    # -- the scheduler ---------------------------------------------------------------------------------------------
    def _serves(self, resources: Resources) -> bool:
        """Runs with these resources go to long-lived workers (one process, or one GPU), else one process each."""
        return self.reuse_workers and resources.gpus <= 1

    def _check(self, resources: Resources) -> None:
        if resources.gpus > 0 and resources.gpus > len(self.gpus):
            raise ConfigError("resources.gpus", f"at most the {len(self.gpus)} GPU(s) visible on this machine",
                              resources.gpus)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._reap()
                self._schedule()
                if not self._queue and not self._workers:
                    self._thread = None
                    return
            time.sleep(self.poll_s)

    def _reap(self) -> None:
        """Record the runs workers finished, and the workers that exited (with the run they held, if any)."""
        for worker in list(self._workers):
            self._take_reports(worker)
            returncode = worker.proc.poll()
            if returncode is None:
                continue
            self._take_reports(worker)  # a report written just before it exited
            if worker.job is not None:
                worker.job.ended(returncode)
                worker.job = None
            self._workers.remove(worker)
            for stream in (worker.proc.stdin, worker.proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
            if worker.gpu_ids:
                self._free_gpus.extend(worker.gpu_ids)

    def _take_reports(self, worker: WorkerProcess) -> None:
        for job_id, returncode in worker.reports():
            if worker.job is not None and worker.job.job_id == job_id:
                worker.job.ended(returncode)
                worker.job = None

    def _schedule(self) -> None:
        """Start queued jobs, in order, while there is room (a job that does not fit waits; later ones may start).
        Idle serving workers that no queued job can use are told to exit, which frees their slot or GPU."""
        for job in list(self._queue):
            serves = self._serves(job.resources)
            worker = next((w for w in self._workers if serves and w.serves and w.job is None and not w.closing
                           and w.gpus == job.resources.gpus), None)
            if worker is None:
                worker = self._start_worker(job, serves)
                if worker is None:
                    continue
            self._queue.remove(job)
            if serves:
                worker.send(job)
            else:
                worker.job = job
                job.started(worker.proc.pid)
        for worker in self._workers:
            if worker.serves and worker.job is None and not worker.closing and \
                    not any(self._serves(j.resources) and j.resources.gpus == worker.gpus for j in self._queue):
                worker.close()

    def _start_worker(self, job: LocalJob, serves: bool) -> WorkerProcess | None:
        """A new worker for `job` if a slot (or enough GPUs) is free, else None."""
        gpu_ids: list[str] = []
        if job.resources.gpus > 0:
            if self._free_gpus is None:
                self._free_gpus = list(self.gpus)
            if len(self._free_gpus) < job.resources.gpus:
                return None
            gpu_ids = [self._free_gpus.pop(0) for _ in range(job.resources.gpus)]
        elif sum(1 for w in self._workers if not w.gpu_ids) >= self.max_concurrent:
            return None
        threads = self.gpu_threads if gpu_ids else self.cpu_threads
        env = dict(os.environ)
        env.update({
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "SCALING_NUM_THREADS": str(threads),  # the worker hands it to train(num_threads=...)
            "CUDA_VISIBLE_DEVICES": ",".join(gpu_ids),  # empty: the run sees no GPU
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")])),
        })
        if not serves:
            env[JOB_ID_ENV] = job.job_id
        log_path = job.run_dir / "worker.log"
        if serves:  # each run's output goes to its own worker.log; this file gets what falls between runs
            log_path = (job.record_dir or job.run_dir) / "workers.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                worker_command(None if serves else job.run_dir, max(1, len(gpu_ids)), self.python),
                env=env, stdout=subprocess.PIPE if serves else log, stderr=log,
                stdin=subprocess.PIPE if serves else subprocess.DEVNULL, bufsize=0,
                start_new_session=True,  # Ctrl-C in the terminal reaches only the launcher, which stops workers cleanly
            )
        worker = WorkerProcess(proc, gpu_ids, serves)
        self._workers.append(worker)
        return worker

    # -- jobs of other launchers -----------------------------------------------------------------------------------
    def _recorded_state(self, job_id: str) -> str:
        """The state of a job another launcher recorded under `<sweep>/local/`; see the module docstring."""
        if not JOB_ID_RE.match(job_id):
            return UNKNOWN
        path = next((f / f"{job_id}.json" for f in sorted(self._record_dirs) if (f / f"{job_id}.json").exists()),
                    None)
        try:
            record = read_json(path) if path is not None else None
        except ValueError:  # torn: nothing to go on
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("run_dir"), str):
            return UNKNOWN
        state = record.get("state")
        if not isinstance(state, str) or not STATE_RE.fullmatch(state):
            return UNKNOWN
        if state not in ACTIVE_STATES:
            return state
        run_dir = Path(record["run_dir"])
        inside = run_dir.parent.name == "runs" and (run_dir.parent.parent / RECORDS_DIR).resolve() == path.parent.resolve()
        from_store = state_from_store(run_dir, job_id) if inside else UNKNOWN  # a record must point into its sweep
        if from_store != UNKNOWN:
            return from_store
        if record.get("host") != socket.gethostname():
            return state  # another machine's launcher: its own record is all we know
        if launcher_alive(record.get("launcher_pid"), record.get("launcher_start")):
            return state
        return DROPPED  # never started, and the launcher that would have started it is gone


def process_start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (to tell a reused pid apart), None if unknown."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def launcher_alive(pid: object, start_ticks: object) -> bool:
    """True while the launcher process (pid, start time) still runs on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def launcher_identity() -> dict:
    """Who launched a job: host, pid and the pid's start time (kept in each job record)."""
    return {"host": socket.gethostname(), "launcher_pid": os.getpid(),
            "launcher_start": process_start_ticks(os.getpid())}
