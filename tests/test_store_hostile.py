"""Hostile and damaged results folders (issue 11): path traversal through run ids, one sweep per folder with
explicit spec versions, torn store files, truncated metrics."""

from __future__ import annotations

import json
import warnings

import pytest
from helpers import small_spec_text

from scaling.errors import ConfigError
from scaling.jsonio import write_json_atomic
from sweeps.grid import plan
from sweeps.results import load_results
from sweeps.spec import load_spec
from sweeps.status import format_status
from sweeps.store import Store


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(small_spec_text())
    return path


def launched(root, spec_path, overrides=(), extend=False):
    """A store initialised as `sweep launch` does (without training anything)."""
    spec = load_spec(spec_path, list(overrides))
    store = Store(root / spec.name)
    store.init_sweep(spec, plan(spec), extend=extend)
    return store


def finish(store, run_id, loss=3.0, metrics_text=None):
    """Fake a completed run: summary.json and metrics.jsonl as the trainer writes them."""
    planned = store.planned(run_id)
    run_dir = store.run_dir(run_id)
    lines = metrics_text if metrics_text is not None else "".join(
        json.dumps({"step": s, "tokens": s * 10, "flops": s * 1e6, "train_loss": loss + 1, "val_loss": loss + 1 / s,
                    "lr": 1e-3}) + "\n" for s in (1, 2))
    (run_dir / "metrics.jsonl").write_text(lines)
    write_json_atomic(run_dir / "summary.json", {"status": "completed", "val_loss": loss, "tokens": planned["D"],
                                                 "steps": planned["steps"], "wall_time_s": 1.0})


# ------------------------------------------------------------------------------------------------ path traversal


def test_a_hostile_run_id_in_plan_json_is_refused_and_nothing_is_written_outside(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    plan_json = json.loads(store.plan_path.read_text())
    plan_json["runs"][0]["run_id"] = "../../../../X"
    store.plan_path.write_text(json.dumps(plan_json))
    with pytest.raises(ConfigError, match=r"runs\[0\]\.run_id: expected a run id of 12 lowercase hex digits"):
        store.run_ids()
    with pytest.raises(ConfigError, match="12 lowercase hex digits"):
        launched(tmp_path / "results", spec_path)  # what `sweep launch` does first
    with pytest.raises(ConfigError, match="12 lowercase hex digits"):
        format_status(store.root)
    with pytest.raises(ConfigError, match="12 lowercase hex digits"):
        store.claim("../../../../X")
    assert not (tmp_path / "X").exists() and not (tmp_path.parent / "X").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "small.toml"]


def test_a_run_folder_symlinked_outside_the_sweep_is_refused(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    run_id = store.run_ids()[0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (store.root / "runs" / run_id / "planned.json").rename(outside / "planned.json")
    (store.root / "runs" / run_id).rmdir()
    (store.root / "runs" / run_id).symlink_to(outside)
    with pytest.raises(ConfigError, match="a path inside the sweep folder"):
        store.claim(run_id)
    assert sorted(p.name for p in outside.iterdir()) == ["planned.json"]  # no lock, no attempts written there


def test_sweep_names_like_dot_dot_are_refused_and_odd_paths_work(tmp_path, spec_path):
    with pytest.raises(ConfigError, match="^name: expected a non-empty folder name"):
        load_spec(spec_path, ['name="../x"'])
    root = tmp_path / "my results ✓ ü"
    store = launched(root, spec_path)
    finish(store, store.run_ids()[0])
    runs, metrics = load_results(root)
    assert len(runs) == len(store.run_ids()) and runs["status"].tolist().count("completed") == 1
    assert len(metrics) == 2


# ------------------------------------------------------------------------------------------------ one sweep per folder


def test_a_changed_spec_is_refused_with_what_changed_and_nothing_written(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    before = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"--extend.*changed: train\.lr: 0\.003 -> 0\.02") as e:
        launched(tmp_path / "results", spec_path, ["train.lr=2e-2"])
    assert e.value.field == "spec"
    after = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    assert after == before
    launched(tmp_path / "results", spec_path, ['description="same sweep, other words"'])  # not a planning change


def test_extend_records_every_spec_version_and_load_results_tells_them_apart(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    v1_ids = store.run_ids()
    v1_planned = {r: store.run_dir(r).joinpath("planned.json").read_bytes() for r in v1_ids}
    spec_toml = (store.root / "spec.toml").read_bytes()
    launched(tmp_path / "results", spec_path, ["train.lr=2e-2"], extend=True)
    launched(tmp_path / "results", spec_path, ["train.lr=2e-2"])  # version 2 is now the folder's spec
    ids = store.run_ids()
    assert ids[: len(v1_ids)] == v1_ids and len(ids) == 2 * len(v1_ids)
    assert {r: store.run_dir(r).joinpath("planned.json").read_bytes() for r in v1_ids} == v1_planned
    assert (store.root / "spec.toml").read_bytes() == spec_toml
    assert (store.root / "spec.v2.toml").exists()
    versions = store.spec_versions()
    assert [v["version"] for v in versions] == [1, 2] and versions[1]["overrides"] == ["train.lr=2e-2"]
    assert [v["spec"]["train"]["lr"] for v in versions] == [0.003, 0.02]
    runs, _ = load_results(store.root)
    assert runs.groupby("spec_version")["run_id"].count().to_dict() == {1: len(v1_ids), 2: len(v1_ids)}
    status = format_status(store.root)
    assert "spec version 2" in status
    assert [line.rsplit(" ", 1)[-1] for line in status.splitlines()[3:]] == ["v1"] * len(v1_ids) + ["v2"] * len(v1_ids)
    assert set(runs.loc[runs["spec_version"] == 2, "lr"]) == {0.02}
    assert launched(tmp_path / "results", spec_path).run_ids() == ids  # relaunching version 1 (to resume it)
    assert [v["version"] for v in store.spec_versions()] == [1, 2]
    with pytest.raises(ConfigError, match=r"changed: .*train\.lr: 0\.02 -> 0\.01"):
        launched(tmp_path / "results", spec_path, ["train.lr=1e-2", "grid.spread=3"])  # a third, unrecorded spec


# ------------------------------------------------------------------------------------------------ torn files


def tear(path):
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def test_a_torn_plan_json_is_reported_rebuilt_and_everyone_goes_on(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    ids = store.run_ids()
    finish(store, ids[0])
    tear(store.plan_path)
    with pytest.warns(UserWarning, match=r"plan\.json is torn .*rebuilt from \d+ run folders"):
        text = format_status(store.root)  # sweep status
    assert ids[0] in text and "completed 1" in text
    with pytest.warns(UserWarning, match=r"plan\.json is torn"):
        runs, _ = load_results(store.root)  # scaling fit DIR reads this
    assert sorted(runs["run_id"]) == sorted(ids)
    with pytest.warns(UserWarning, match=r"plan\.json is torn .*kept as plan\.json\.torn"):
        launched(tmp_path / "results", spec_path)  # sweep launch: rebuilds the file under the lock
    assert (store.root / "plan.json.torn").exists()
    assert sorted(store.run_ids()) == sorted(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.run_ids()  # repaired: no more warnings


def test_torn_attempts_and_jobs_are_reported_and_the_store_goes_on(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    run_id = store.run_ids()[0]
    with store.claim(run_id) as claim:
        claim.finish("failed", error="OOM")
    store.record_jobs([(run_id, "123", "slurm", "FAILED")])
    tear(store.run_dir(run_id) / "attempts.json")
    tear(store.jobs_path)
    with pytest.warns(UserWarning, match=r"attempts\.json is torn"):
        assert store.run_state(run_id) == "queued"
    with pytest.warns(UserWarning, match=r"jobs\.json is torn"):
        assert store.jobs() == {}
    with pytest.warns(UserWarning, match=r"attempts\.json is torn"), store.claim(run_id) as claim:
        claim.finish("completed")
    assert [a["status"] for a in store.attempts(run_id)] == ["completed"]
    assert (store.run_dir(run_id) / "attempts.json.torn").exists()
    with pytest.warns(UserWarning, match=r"jobs\.json is torn"):
        store.record_jobs([(run_id, "124", "slurm", "PENDING")])
    assert [j["job_id"] for j in store.jobs()[run_id]] == ["124"]
    with pytest.raises(ConfigError, match="12 lowercase hex digits"):
        store.record_jobs([("../x", "1", "local", "PENDING")])


def test_a_truncated_metrics_file_is_reported_by_load_results(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    run_id = store.run_ids()[0]
    good = json.dumps({"step": 1, "tokens": 10, "flops": 1e6, "train_loss": 4.0, "val_loss": 4.1, "lr": 1e-3})
    finish(store, run_id, metrics_text=good + "\n" + good.replace('"step": 1', '"step": 2')[:30])
    with pytest.warns(UserWarning, match=rf"run {run_id}: metrics\.jsonl is truncated or torn \(its last line is "
                                         r"cut off\); read 1 records"):
        _, metrics = load_results(store.root)
    assert metrics["step"].tolist() == [1]


def test_a_results_folder_that_is_a_file_is_refused_and_nothing_written(tmp_path, spec_path):
    results = tmp_path / "results"
    results.write_text("not a folder")
    with pytest.raises(ConfigError, match="^results: expected a folder path"):
        launched(results, spec_path)  # results/small would be below a file
    assert results.read_text() == "not a folder"


def test_a_torn_or_missing_planned_json_is_read_from_plan_json(tmp_path, spec_path):
    store = launched(tmp_path / "results", spec_path)
    first, second = store.run_ids()[:2]
    expected = store.planned(first)
    tear(store.run_dir(first) / "planned.json")
    (store.run_dir(second) / "planned.json").unlink()
    with pytest.warns(UserWarning, match=r"planned\.json is torn .*read from plan\.json"):
        assert store.planned(first) == expected
    with pytest.warns(UserWarning, match=r"planned\.json is missing; read run"):
        assert store.planned(second)["run_id"] == second
    with pytest.warns(UserWarning):
        runs, _ = load_results(store.root)
    assert len(runs) == len(store.run_ids())
