"""The results store: idempotent init, exclusive claims across processes (and after kill -9), retries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from scaling.errors import ConfigError
from sweeps.store import Store, write_json_atomic


def fake_spec(name="s", text="name = 's'\n"):
    return SimpleNamespace(name=name, source_text=text, to_dict=lambda: {"name": name})


def fake_run(run_id, budget=1e12):
    return {"run_id": run_id, "budget": budget, "config": {}, "N": 1000, "N_total": 2000, "D": 10, "steps": 5,
            "tags": {"kind": "isoflop", "seed": 0}, "parent": None}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s")
    s.init_sweep(fake_spec(), [fake_run(i) for i in ("a", "b", "c")])
    return s


def test_init_sweep_writes_layout_and_is_idempotent(store):
    root = store.root
    assert (root / "spec.toml").read_text() == "name = 's'\n"  # verbatim
    assert json.loads((root / "spec.json").read_text()) == {"name": "s"}
    assert store.run_ids() == ["a", "b", "c"]
    assert store.planned("b")["run_id"] == "b"
    assert store.init_sweep(fake_spec(), [fake_run(i) for i in ("a", "b", "c")]) == ["a", "b", "c"]
    assert not [p for p in root.rglob("*.tmp")]  # atomic writes leave no temp files behind


def test_init_sweep_adds_new_runs_and_never_removes(store):
    ids = store.init_sweep(fake_spec(text="name = 's'\n# v2\n"), [fake_run("c", budget=5.0), fake_run("d")])
    assert ids == ["a", "b", "c", "d"]
    assert store.planned("c")["budget"] == 1e12  # planned.json is written once
    assert (store.root / "spec.toml").read_text().endswith("# v2\n")
    assert (store.root / "spec.1.toml").read_text() == "name = 's'\n"  # the earlier spec is kept
    with pytest.raises(ConfigError, match="^name: expected the sweep name"):
        store.init_sweep(fake_spec(name="other"), [])


def test_claim_is_exclusive_within_a_process(store):
    first = store.claim("a")
    assert first is not None and store.run_state("a") == "running"
    assert store.claim("a") is None
    assert store.pending_runs() == ["b", "c"]
    first.finish("completed")
    first.release()
    assert store.attempts("a")[0]["status"] == "completed" and store.attempts("a")[0]["end"]
    second = store.claim("a")
    assert second is not None
    second.release()


HOLDER = textwrap.dedent("""
    import sys, time
    from sweeps.store import Store
    claim = Store(sys.argv[1]).claim("a", job_id="job-7")
    print("claimed" if claim else "busy", flush=True)
    time.sleep(60)
""")


def test_claim_is_exclusive_across_processes_and_freed_by_kill_9(store):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "claimed"
        assert store.claim("a") is None
        assert store.run_state("a") == "running"
        assert "a" not in store.pending_runs()
        attempt = store.attempts("a")[-1]
        assert attempt["status"] == "running" and attempt["pid"] == proc.pid and attempt["job_id"] == "job-7"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert store.run_state("a") == "failed"  # recorded as running, but nobody holds the lock: lost
    assert store.failures("a") == 1
    claim = store.claim("a")
    assert claim is not None
    with claim:
        claim.finish("completed")
    assert [a["status"] for a in store.attempts("a")] == ["lost", "completed"]


def test_context_manager_records_failure_and_interruption(store):
    with pytest.raises(RuntimeError), store.claim("b"):
        raise RuntimeError("boom")
    attempt = store.attempts("b")[-1]
    assert attempt["status"] == "failed" and "boom" in attempt["error"]
    assert store.run_state("b") == "failed"
    with pytest.raises(SystemExit), store.claim("b"):
        raise SystemExit(143)  # a signalled trainer: resumable, not a failure
    assert store.attempts("b")[-1]["status"] == "interrupted"
    assert store.run_state("b") == "queued" and store.failures("b") == 1


def write_summary(store, run_id, status):
    write_json_atomic(store.run_dir(run_id) / "summary.json", {"status": status, "val_loss": 3.0})


def test_pending_runs_and_retries(tmp_path):
    store = Store(tmp_path / "s")
    store.init_sweep(fake_spec(), [fake_run(i) for i in "abcdef"])
    write_summary(store, "a", "completed")
    write_summary(store, "b", "diverged")
    for _ in range(2):
        with store.claim("c") as claim:
            claim.finish("failed", error="OOM")
    with store.claim("d") as claim:
        claim.finish("preempted")
    held = store.claim("e")
    try:
        assert store.run_state("a") == "completed" and store.run_state("b") == "diverged"
        assert store.run_state("c") == "failed" and store.failures("c") == 2
        assert store.run_state("d") == "queued" and store.failures("d") == 0
        assert store.pending_runs(max_retries=2) == ["c", "d", "f"]  # first try + up to 2 retries
        assert store.pending_runs(max_retries=1) == ["d", "f"]
        assert store.pending_runs(max_retries=0) == ["d", "f"]
        assert store.counts() == {"queued": 2, "running": 1, "completed": 1, "diverged": 1, "failed": 1}
    finally:
        held.release()
    assert store.claim("a") is None  # a completed run is never claimed again


def test_failed_summary_counts_as_one_failure(store):
    write_summary(store, "c", "failed")
    assert store.run_state("c") == "failed" and store.failures("c") == 1
    assert "c" in store.pending_runs(max_retries=1) and "c" not in store.pending_runs(max_retries=0)


def test_claim_of_unknown_run_is_an_error(store):
    with pytest.raises(FileNotFoundError):
        store.claim("zzz")


def test_lock_probe_does_not_block_a_claim(store):
    t0 = time.perf_counter()
    for _ in range(20):
        assert store.run_state("a") == "queued"
    assert time.perf_counter() - t0 < 2
    claim = store.claim("a")
    assert claim is not None
    claim.release()
