"""Run sweeps on this machine: a small scheduler of worker subprocesses (`python -m sweeps.worker RUN_DIR`).

- With GPUs (a run asking for `gpus >= 1`): one run per visible GPU at a time, pinned with CUDA_VISIBLE_DEVICES; a run
  asking for G > 1 GPUs waits for G free GPUs and runs under torchrun (`python -m torch.distributed.run
  --standalone --nproc_per_node G -m sweeps.worker RUN_DIR`).
- On CPU (`gpus == 0`): `max_concurrent` runs at a time, the cores split evenly between them (OMP_NUM_THREADS, and
  the worker calls torch.set_num_threads).
- The rest wait in a FIFO queue. Workers run in their own session, so Ctrl-C in a terminal reaches only the launcher,
  which then calls `shutdown()`: queued runs are dropped, running workers get SIGTERM (the trainer finishes its step,
  checkpoints and exits), stragglers get SIGKILL after `grace_s`. Relaunching resumes from the checkpoints.

The scheduler lives in a daemon thread of the launching process: local jobs run only while that process lives.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from scaling.errors import ConfigError
from sweeps.executors.base import Executor, Job, Resources
from sweeps.worker import EXIT_OK, JOB_ID_ENV

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `sweeps/`, put on the workers' PYTHONPATH


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):  # no torch or a broken driver: CPU only
        return []


def worker_command(run_dir: Path, nproc: int, python: str = sys.executable) -> list[str]:
    """The command line of one worker: plain python for one process, torchrun for several."""
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "sweeps.worker", str(run_dir)]
    return [python, "-m", "sweeps.worker", str(run_dir)]


class LocalJob(Job):
    def __init__(self, executor: LocalExecutor, run_dir: Path, resources: Resources):
        self.executor = executor
        self.run_dir = Path(run_dir)
        self.resources = resources
        self.job_id = f"local-{uuid.uuid4().hex[:10]}"
        self.proc: subprocess.Popen | None = None
        self.gpu_ids: list[str] = []
        self.returncode: int | None = None
        self._state = "PENDING"
        self._cancelled = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def state(self) -> str:
        return self._state

    def cancel(self) -> None:
        self.executor.cancel(self)

    def wait(self, timeout: float | None = None, poll_s: float = 0.1) -> str:
        return super().wait(timeout, poll_s)


class LocalExecutor(Executor):
    """Local scheduler. `max_concurrent`: CPU runs at a time (default 1); `gpus`: GPU ids (default: all visible)."""

    backend = "local"

    def __init__(self, max_concurrent: int | None = None, gpus: list[str] | None = None,
                 threads_per_run: int | None = None, grace_s: float = 60.0, poll_s: float = 0.1,
                 python: str = sys.executable):
        if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 1):
            raise ConfigError("local.max_concurrent", "a positive integer", max_concurrent)
        self.max_concurrent = max_concurrent or 1
        self._gpus = None if gpus is None else [str(g) for g in gpus]
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads_per_run = threads_per_run
        self.grace_s, self.poll_s, self.python = grace_s, poll_s, python
        self.jobs: list[LocalJob] = []
        self._queue: collections.deque[LocalJob] = collections.deque()
        self._running: list[LocalJob] = []
        self._free_gpus: list[str] | None = None  # filled on the first GPU run
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None

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
        lines += [" ".join(worker_command(Path(d).resolve(), max(1, resources.gpus), self.python)) for d in run_dirs]
        return "\n".join(lines)

    def cancel(self, job: LocalJob) -> None:
        """Drop a queued job; send SIGTERM to a running one (its worker checkpoints, then exits)."""
        with self._lock:
            job._cancelled = True
            if job in self._queue:
                self._queue.remove(job)
                job._state = "CANCELLED"
            elif job.proc is not None and job.returncode is None:
                _signal(job.proc, signal.SIGTERM)  # torchrun passes it on to its ranks

    def shutdown(self, grace_s: float | None = None) -> None:
        """Cancel everything; wait up to `grace_s` for running workers to checkpoint and exit, then SIGKILL them."""
        grace_s = self.grace_s if grace_s is None else grace_s
        with self._lock:
            for job in list(self._queue) + list(self._running):
                self.cancel(job)
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            with self._lock:
                self._reap()
                if not self._running:
                    return
            time.sleep(self.poll_s)
        with self._lock:
            for job in self._running:
                _signal_group(job.proc, signal.SIGKILL)
        for job in list(self._running):
            job.proc.wait()
        with self._lock:
            self._reap()

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and not self._running

    # -- the scheduler ---------------------------------------------------------------------------------------------
    def _check(self, resources: Resources) -> None:
        if resources.gpus > 0 and resources.gpus > len(self.gpus):
            raise ConfigError("resources.gpus", f"at most the {len(self.gpus)} GPU(s) visible on this machine",
                              resources.gpus)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._reap()
                self._schedule()
                if not self._queue and not self._running:
                    self._thread = None
                    return
            time.sleep(self.poll_s)

    def _reap(self) -> None:
        for job in list(self._running):
            rc = job.proc.poll()
            if rc is None:
                continue
            job.returncode = rc
            job._state = _state_for_exit(rc, job._cancelled)
            self._running.remove(job)
            if job.gpu_ids:
                self._free_gpus.extend(job.gpu_ids)

    def _schedule(self) -> None:
        """Start queued jobs, in order, while there is room (a job that does not fit waits; later ones may start)."""
        for job in list(self._queue):
            if job.resources.gpus > 0:
                if self._free_gpus is None:
                    self._free_gpus = list(self.gpus)
                if len(self._free_gpus) < job.resources.gpus:
                    continue
                job.gpu_ids = [self._free_gpus.pop(0) for _ in range(job.resources.gpus)]
            elif sum(1 for j in self._running if not j.gpu_ids) >= self.max_concurrent:
                continue
            self._queue.remove(job)
            self._start(job)

    def _start(self, job: LocalJob) -> None:
        threads = self.gpu_threads if job.gpu_ids else self.cpu_threads
        env = dict(os.environ)
        env.update({
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "SCALING_NUM_THREADS": str(threads),  # the worker hands it to train(num_threads=...)
            JOB_ID_ENV: job.job_id,
            "CUDA_VISIBLE_DEVICES": ",".join(job.gpu_ids),  # empty: the run sees no GPU
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")])),
        })
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with open(job.run_dir / "worker.log", "ab") as log:
            job.proc = subprocess.Popen(
                worker_command(job.run_dir, max(1, len(job.gpu_ids)), self.python),
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches only the launcher, which stops workers cleanly
            )
        job._state = "RUNNING"
        self._running.append(job)


def _state_for_exit(returncode: int, cancelled: bool) -> str:
    if returncode == EXIT_OK:
        return "COMPLETED"
    if cancelled:
        return "CANCELLED"
    return "FAILED"


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the worker and its children (torchrun's ranks): each worker leads its own process group."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

