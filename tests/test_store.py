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


def fake_spec(name="s", text="name = 's'\n", train=None):
    content = {"name": name, **({"train": train} if train else {})}
    return SimpleNamespace(name=name, source_text=text, to_dict=lambda: dict(content))


def rid(letter: str) -> str:
    """A valid run id (12 lowercase hex digits) made of one letter, for readable tests."""
    return letter * 12


A, B, C, D, E, F = (rid(x) for x in "abcdef")


def fake_run(run_id, budget=1e12):
    return {"run_id": run_id, "budget": budget, "config": {}, "N": 1000, "N_total": 2000, "D": 10, "steps": 5,
            "tags": {"kind": "isoflop", "seed": 0}, "parent": None}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s")
    s.init_sweep(fake_spec(), [fake_run(i) for i in (A, B, C)])
    return s


def test_init_sweep_writes_layout_and_is_idempotent(store):
    root = store.root
    assert (root / "spec.toml").read_text() == "name = 's'\n"  # verbatim
    assert [v["spec"] for v in json.loads((root / "spec.json").read_text())["versions"]] == [{"name": "s"}]
    assert store.run_ids() == [A, B, C]
    assert store.planned(B)["run_id"] == B and store.planned(B)["spec_version"] == 1
    assert store.init_sweep(fake_spec(), [fake_run(i) for i in (A, B, C)]) == [A, B, C]
    assert not [p for p in root.rglob("*.tmp")]  # atomic writes leave no temp files behind


def test_init_sweep_adds_new_runs_and_never_removes(store):
    v2 = fake_spec(text="name = 's'\n# v2\n", train={"lr": 0.02})
    ids = store.init_sweep(v2, [fake_run(C, budget=5.0), fake_run(D)], extend=True)
    assert ids == [A, B, C, D]
    assert store.planned(C)["budget"] == 1e12  # planned.json is written once
    assert store.planned(C)["spec_version"] == 1 and store.planned(D)["spec_version"] == 2
    assert (store.root / "spec.v2.toml").read_text().endswith("# v2\n")
    assert (store.root / "spec.toml").read_text() == "name = 's'\n"  # the earlier spec is kept, unchanged
    assert [v["version"] for v in store.spec_versions()] == [1, 2]
    with pytest.raises(ConfigError, match="^name: expected the sweep name"):
        store.init_sweep(fake_spec(name="other"), [])


def test_claim_is_exclusive_within_a_process(store):
    first = store.claim(A)
    assert first is not None and store.run_state(A) == "running"
    assert store.claim(A) is None
    assert store.pending_runs() == [B, C]
    first.finish("completed")
    first.release()
    assert store.attempts(A)[0]["status"] == "completed" and store.attempts(A)[0]["end"]
    second = store.claim(A)
    assert second is not None
    second.release()


HOLDER = textwrap.dedent("""
    import sys, time
    from sweeps.store import Store
    claim = Store(sys.argv[1]).claim("a" * 12, job_id="job-7")
    print("claimed" if claim else "busy", flush=True)
    time.sleep(60)
""")


def test_claim_is_exclusive_across_processes_and_freed_by_kill_9(store):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "claimed"
        assert store.claim(A) is None
        assert store.run_state(A) == "running"
        assert A not in store.pending_runs()
        attempt = store.attempts(A)[-1]
        assert attempt["status"] == "running" and attempt["pid"] == proc.pid and attempt["job_id"] == "job-7"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert store.run_state(A) == "failed"  # recorded as running, but nobody holds the lock: lost
    assert store.failures(A) == 1
    claim = store.claim(A)
    assert claim is not None
    with claim:
        claim.finish("completed")
    assert [a["status"] for a in store.attempts(A)] == ["lost", "completed"]


def test_context_manager_records_failure_and_interruption(store):
    with pytest.raises(RuntimeError), store.claim(B):
        raise RuntimeError("boom")
    attempt = store.attempts(B)[-1]
    assert attempt["status"] == "failed" and "boom" in attempt["error"]
    assert store.run_state(B) == "failed"
    with pytest.raises(SystemExit), store.claim(B):
        raise SystemExit(143)  # a signalled trainer: resumable, not a failure
    assert store.attempts(B)[-1]["status"] == "interrupted"
    assert store.run_state(B) == "queued" and store.failures(B) == 1


def write_summary(store, run_id, status):
    write_json_atomic(store.run_dir(run_id) / "summary.json", {"status": status, "val_loss": 3.0})


def test_pending_runs_and_retries(tmp_path):
    store = Store(tmp_path / "s")
    store.init_sweep(fake_spec(), [fake_run(i) for i in (A, B, C, D, E, F)])
    write_summary(store, A, "completed")
    write_summary(store, B, "diverged")
    for _ in range(2):
        with store.claim(C) as claim:
            claim.finish("failed", error="OOM")
    with store.claim(D) as claim:
        claim.finish("preempted")
    held = store.claim(E)
    try:
        assert store.run_state(A) == "completed" and store.run_state(B) == "diverged"
        assert store.run_state(C) == "failed" and store.failures(C) == 2
        assert store.run_state(D) == "queued" and store.failures(D) == 0
        assert store.pending_runs(max_retries=2) == [C, D, F]  # first try + up to 2 retries
        assert store.pending_runs(max_retries=1) == [D, F]
        assert store.pending_runs(max_retries=0) == [D, F]
        assert store.counts() == {"queued": 2, "running": 1, "completed": 1, "diverged": 1, "failed": 1}
    finally:
        held.release()
    assert store.claim(A) is None  # a completed run is never claimed again


def test_failed_summary_counts_as_one_failure(store):
    write_summary(store, C, "failed")
    assert store.run_state(C) == "failed" and store.failures(C) == 1
    assert C in store.pending_runs(max_retries=1) and C not in store.pending_runs(max_retries=0)


def test_claim_of_unknown_run_is_an_error(store):
    with pytest.raises(FileNotFoundError):
        store.claim("0" * 12)


def test_lock_probe_does_not_block_a_claim(store):
    t0 = time.perf_counter()
    for _ in range(20):
        assert store.run_state(A) == "queued"
    assert time.perf_counter() - t0 < 2
    claim = store.claim(A)
    assert claim is not None
    claim.release()
