"""analysis.data: loading runs tables, column mapping, exclusions, budget grouping, errors."""

import numpy as np
import pandas as pd
import pytest

import sweeps
from analysis.data import group_budgets, load_runs
from scaling.errors import ConfigError


def _runs(n=6):
    N = np.geomspace(1e6, 1e8, n)
    C = np.full(n, 1e17)
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "N": N, "D": C / (6 * N),
                         "loss": np.linspace(3.0, 3.5, n), "status": "completed"})


def test_group_budgets_within_tolerance_uses_geometric_mean():
    C = np.array([1.00e18, 1.03e18, 0.99e18, 1e19, 1.04e19, 3e19])
    b = group_budgets(C, rtol=0.05)
    assert b[0] == b[1] == b[2]
    assert b[0] == pytest.approx(np.exp(np.mean(np.log([1.00e18, 1.03e18, 0.99e18]))))
    assert b[3] == b[4] == pytest.approx(np.sqrt(1e19 * 1.04e19))
    assert b[5] == pytest.approx(3e19)
    assert np.unique(group_budgets(C, rtol=0.0)).size == 6  # no tolerance: every distinct value is a budget


def test_group_budgets_does_not_chain_far_values():
    # 1.00, 1.04, 1.08, 1.12: each within 5% of the previous, but together 12% apart: not clearly separated, so no
    # budget is formed from them (each value stays its own), while a clearly separated pair still merges.
    b = group_budgets(np.array([1.0, 1.04, 1.08, 1.12, 2.0, 2.02]) * 1e18, rtol=0.05)
    np.testing.assert_allclose(b[:4], [1.0e18, 1.04e18, 1.08e18, 1.12e18])
    assert b[4] == b[5] == pytest.approx(np.sqrt(2.0 * 2.02) * 1e18)


def test_column_mapping_defaults_and_derived_D():
    src = pd.DataFrame({"Model Size": [1e6, 2e6, 4e6], "Training FLOP": [6e15, 6e15, 6e15], "Loss": [3.2, 3.1, 3.3]})
    df = load_runs(src, {"N": "Model Size", "C": "Training FLOP", "loss": "Loss"})
    np.testing.assert_allclose(df["D"], 6e15 / (6 * src["Model Size"]))  # D = C / (6N) when only C is given
    assert df["budget"].nunique() == 1 and df["budget"].iloc[0] == pytest.approx(6e15)
    assert list(df["run_id"]) == ["row0", "row1", "row2"]


def test_C_defaults_to_6ND_and_budget_column_is_kept():
    df = _runs()
    df["budget"] = 7e17
    out = load_runs(df)
    np.testing.assert_allclose(out["C"], 6 * out["N"] * out["D"])
    assert (out["budget"] == 7e17).all()


def test_diverged_failed_and_nan_loss_are_excluded_and_listed():
    df = _runs()
    df.loc[1, "status"] = "diverged"
    df.loc[2, "status"] = "failed"
    df.loc[3, "loss"] = np.nan
    out = load_runs(df)
    assert list(out["run_id"]) == ["r0", "r4", "r5"]
    excluded = {e["run_id"]: e for e in out.attrs["excluded"]}
    assert set(excluded) == {"r1", "r2", "r3"}
    assert excluded["r1"]["status"] == "diverged" and "diverged" in excluded["r1"]["reason"]
    assert "loss" in excluded["r3"]["reason"]


def test_missing_column_error_names_it_and_lists_available():
    with pytest.raises(ConfigError) as err:
        load_runs(pd.DataFrame({"N": [1e6], "loss": [3.0]}))
    msg = str(err.value)
    assert "'D'" in msg and "available" in msg and "'N'" in msg
    with pytest.raises(ConfigError, match="Model Size"):
        load_runs(_runs(), {"N": "Model Size"})


@pytest.mark.parametrize("column,value", [("N", -1.0), ("D", 0.0), ("N", np.nan), ("C", -5.0)])
def test_non_positive_or_nan_values_are_rejected_with_count(column, value):
    df = _runs()
    df["C"] = 6 * df["N"] * df["D"]
    df.loc[[0, 2], column] = value
    with pytest.raises(ConfigError, match=rf"column {column}.*2 of 6 rows"):
        load_runs(df)


def test_csv_and_parquet_round_trip(tmp_path):
    df = _runs()
    df.to_csv(tmp_path / "runs.csv", index=False)
    df.to_parquet(tmp_path / "runs.parquet")
    a, b = load_runs(tmp_path / "runs.csv"), load_runs(str(tmp_path / "runs.parquet"))
    np.testing.assert_allclose(a["N"], df["N"])
    np.testing.assert_allclose(b["loss"], df["loss"])
    with pytest.raises(ConfigError, match="csv"):
        (tmp_path / "runs.txt").write_text("x")
        load_runs(tmp_path / "runs.txt")
    with pytest.raises(ConfigError):
        load_runs(tmp_path / "missing.csv")


def test_sweep_directory_uses_load_results_and_keeps_metrics(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    runs = _runs()
    metrics = pd.DataFrame({"run_id": ["r0", "r0"], "step": [10, 20], "val_loss": [4.0, 3.5]})
    seen = []

    def fake_load_results(path):
        seen.append(path)
        return runs, metrics

    monkeypatch.setattr(sweeps, "load_results", fake_load_results, raising=False)
    out = load_runs(tmp_path)
    assert seen and len(out) == len(runs)
    pd.testing.assert_frame_equal(out.attrs["metrics"], metrics)  # r0 is a kept run: its curve is kept as is
    with pytest.raises(ConfigError, match="runs/"):
        load_runs(tmp_path / "runs")  # a directory without runs/ inside


def test_6n_total_sweeps_count_all_params_and_others_keep_non_embedding(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    runs = pd.DataFrame({"run_id": ["a", "b"], "N": [1000.0, 4000.0], "N_total": [4000.0, 9000.0],
                         "D": [1e6, 5e5], "loss": [2.5, 2.4], "flop_convention": ["6N_total"] * 2})
    runs["C"] = 6 * runs["N_total"] * runs["D"]
    metrics = pd.DataFrame({"run_id": ["a", "b"], "step": [1, 1], "val_loss": [3.0, 3.0], "N": [1000, 4000]})
    monkeypatch.setattr(sweeps, "load_results", lambda path: (runs.copy(), metrics.copy()), raising=False)
    out = load_runs(tmp_path)
    assert list(out["N"]) == [4000.0, 9000.0] and list(out["N_non_embedding"]) == [1000.0, 4000.0]
    assert np.allclose(out["C"], 6 * out["N"] * out["D"])  # N and C now agree
    assert list(out.attrs["metrics"]["N"]) == [4000, 9000]
    six_n = runs.assign(flop_convention="6N", C=6 * runs["N"] * runs["D"])
    monkeypatch.setattr(sweeps, "load_results", lambda path: (six_n.copy(), metrics.copy()), raising=False)
    assert list(load_runs(tmp_path)["N"]) == [1000.0, 4000.0]
