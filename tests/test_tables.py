"""Runs brought from elsewhere (issue 9 §6-§7, issue 11 tables): hostile files, tracker statuses, column maps,
units, C consistency, duplicates, budgets, per-checkpoint curves, and the `scaling fit` options for them."""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import sweeps
from analysis import envelope as envelope_module
from analysis.cli import parse_columns, register, run_fit
from analysis.data import SharedFrame, load_runs
from analysis.envelope import fit_envelope
from scaling.errors import ConfigError

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def runs_table(n_budgets=3, per_budget=5, seed=0) -> pd.DataFrame:
    """One row per run: isoFLOP budgets 1e17, 1e18, ... with 5 sizes each, C = 6 N D, Chinchilla-like losses."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(n_budgets):
        C = 10.0 ** (17 + b)
        for N in np.geomspace(1e6, 1e8, per_budget) * 10 ** (b / 2):
            D = C / (6 * N)
            rows.append({"run_id": f"b{b}n{N:.3g}", "N": N, "D": D, "C": C, "status": "finished",
                         "loss": E + A * N ** -ALPHA + B * D ** -BETA + rng.normal(0, 1e-3)})
    return pd.DataFrame(rows)


def curves_table(n_models=9, n_ckpt=12, nan_last=False) -> pd.DataFrame:
    """W&B-history-like rows: run id, step, tokens, FLOPs, loss of every checkpoint of each run."""
    rows = []
    for i, N in enumerate(np.geomspace(1e6, 1e9, n_models)):
        for s, D in enumerate(np.geomspace(1e8, 1e21 / (6 * N), n_ckpt)):
            rows.append({"run_id": f"r{i}", "step": 100 * (s + 1), "N": N, "D": D, "C": 6 * N * D,
                         "loss": E + A * N ** -ALPHA + B * D ** -BETA, "lr": 1e-3 * (1 - s / n_ckpt)})
        if nan_last:
            rows.append({"run_id": f"r{i}", "step": 100 * (n_ckpt + 1), "N": N, "D": D * 1.01, "C": 6 * N * D * 1.01,
                         "loss": np.nan, "lr": 0.0})
    return pd.DataFrame(rows)


def _load_quiet(*args, **kwargs) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_runs(*args, **kwargs)


# ---------------------------------------------------------------- hostile files


@pytest.mark.parametrize("content,expected", [
    (b"", "empty file"),
    (b"N,D,loss\n", "no rows"),
    (b"N,D,loss\n1e6,2e7,3.1\n2e6,1e7,\xff\xfe3.0\n", "UTF-8"),
])
def test_bad_csv_is_one_line_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "bad table.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_runs(path)
    msg = str(err.value)
    assert str(path) in msg and expected in msg and "\n" not in msg


def test_parquet_with_csv_name_and_csv_with_parquet_name(tmp_path):
    df = runs_table()
    df.to_parquet(tmp_path / "runs.csv")
    with pytest.raises(ConfigError, match=r"runs\.csv.*Parquet file with a \.csv name"):
        load_runs(tmp_path / "runs.csv")
    (tmp_path / "runs.parquet").write_text(df.to_csv(index=False))
    with pytest.raises(ConfigError, match=r"runs\.parquet.*readable Parquet") as err:
        load_runs(tmp_path / "runs.parquet")
    assert "\n" not in str(err.value)


def test_torn_sweep_store_is_a_config_error(tmp_path, monkeypatch):
    (tmp_path / "plan.json").write_text('{"runs": [')

    def torn(path):
        return json.loads((tmp_path / "plan.json").read_text())

    monkeypatch.setattr(sweeps, "load_results", torn, raising=False)
    with pytest.raises(ConfigError, match="readable sweep results directory.*JSONDecodeError"):
        load_runs(tmp_path)


def test_a_sweep_folder_with_torn_store_files_still_loads(tmp_path):
    from helpers import small_spec_text

    from scaling.jsonio import write_json_atomic
    from sweeps.grid import plan
    from sweeps.spec import load_spec
    from sweeps.store import Store

    (tmp_path / "small.toml").write_text(small_spec_text())
    spec = load_spec(tmp_path / "small.toml", [])
    store = Store(tmp_path / "results" / spec.name)
    store.init_sweep(spec, plan(spec))
    n_runs = len(store.run_ids())
    done = store.run_ids()[:3]
    for run_id in done:
        planned = store.planned(run_id)
        (store.run_dir(run_id) / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": s, "tokens": s * 10, "flops": s * 1e6, "train_loss": 4.0, "val_loss": 3 + 1 / s,
                                "lr": 1e-3}) + "\n" for s in (1, 2)))
        write_json_atomic(store.run_dir(run_id) / "summary.json", {"status": "completed", "val_loss": 3.0,
                                                                  "tokens": planned["D"], "steps": planned["steps"],
                                                                  "wall_time_s": 1.0})
    for torn in (store.root / "plan.json", store.run_dir(done[0]) / "attempts.json"):
        torn.write_text('{"runs": [')
    out = _load_quiet(store.root)
    assert sorted(out["run_id"]) == sorted(done)
    assert out.attrs["excluded_counts"] == {"queued": n_runs - 3}
    assert set(out.attrs["metrics"]["run_id"]) == set(done)


# ---------------------------------------------------------------- statuses


def test_tracker_statuses_only_finished_runs_are_fitted_and_the_rest_counted():
    df = runs_table()
    states = ["finished", "crashed", "running", "killed", "failed", "FINISHED", "Completed", "diverged",
              "CANCELLED by 123", "preempted", "weird", "finished", "finished", "finished", ""]
    df["status"] = states
    out = _load_quiet(df)
    assert set(out["run_id"]) == set(df["run_id"][[0, 5, 6, 11, 12, 13]])
    counts = out.attrs["excluded_counts"]
    assert counts == {"crashed": 1, "running": 1, "killed": 1, "failed": 1, "diverged": 1, "cancelled": 1,
                      "preempted": 1, "weird": 1, "no status": 1}
    reasons = {e["run_id"]: e["reason"] for e in out.attrs["excluded"]}
    assert "not a known finished state" in reasons[df["run_id"][10]]


def test_a_wandb_state_column_is_read_as_the_status():
    df = runs_table().drop(columns="status")
    df["State"] = ["finished"] * 14 + ["crashed"]
    out = _load_quiet(df)
    assert len(out) == 14 and out.attrs["excluded_counts"] == {"crashed": 1}
    assert out.attrs["aliases"] == {"status": "State"}


def test_crashed_runs_do_not_make_phantom_budgets():
    df = runs_table()
    ghost = df.iloc[:3].copy()
    ghost["run_id"] = ["g0", "g1", "g2"]
    ghost["C"] = 3e19
    ghost["D"] = ghost["C"] / (6 * ghost["N"])
    ghost["status"] = "crashed"
    out = _load_quiet(pd.concat([df, ghost], ignore_index=True))
    assert out["budget"].nunique() == 3 and out.attrs["excluded_counts"] == {"crashed": 3}


# ---------------------------------------------------------------- columns


def test_mapping_onto_an_existing_name_sets_the_old_column_aside():
    df = runs_table()
    df["smooth loss"] = df["loss"] - 0.01
    out = _load_quiet(df, {"loss": "smooth loss"})
    np.testing.assert_allclose(out["loss"], df["loss"] - 0.01)
    np.testing.assert_allclose(out["loss_unmapped"], df["loss"])
    assert out.attrs["set_aside"] == {"loss": "loss_unmapped"}


def test_kind_and_seed_can_be_mapped_and_swaps_work():
    df = runs_table().rename(columns={"N": "D", "D": "N"})  # a table with N and D swapped by mistake
    df["run type"] = "isoflop"
    df["Seed"] = 3
    out = _load_quiet(df, {"N": "D", "D": "N", "kind": "run type", "seed": "Seed"})
    assert (out["kind"] == "isoflop").all() and (out["seed"] == 3).all()
    np.testing.assert_allclose(out["C"], 6 * out["N"] * out["D"])
    with pytest.raises(ConfigError, match="canonical names"):
        load_runs(df, {"flops": "C"})
    with pytest.raises(ConfigError, match="one canonical name"):
        load_runs(df, {"N": "D", "D": "D"})


def test_cli_column_parser_handles_quotes_commas_and_repeats():
    assert parse_columns(['loss="smooth, loss",N=Model Size', "kind='run type'"]) == {
        "loss": "smooth, loss", "N": "Model Size", "kind": "run type"}
    with pytest.raises(ConfigError, match="once"):
        parse_columns(["N=a", "N=b"])
    with pytest.raises(ConfigError, match="closed quotes"):
        parse_columns(['loss="smooth'])


def test_N_is_derived_from_C_and_D():
    df = runs_table().drop(columns="N")
    out = _load_quiet(df)
    np.testing.assert_allclose(out["N"], out["C"] / (6 * out["D"]))
    assert out.attrs["derived"] == {"N": "C / (6 D)"}


def test_text_in_a_numeric_column_is_named():
    df = runs_table()
    df["N"] = df["N"].astype(object)
    df.loc[2, "N"] = "1.2B"
    with pytest.raises(ConfigError, match=r"column N.*1\.2B"):
        load_runs(df)


# ---------------------------------------------------------------- units and consistency


@pytest.mark.parametrize("column,factor,hint", [("C", 1e-9, "GFLOPs"), ("D", 1e-3, "thousands"),
                                                ("N", 1e-6, "millions")])
def test_implausible_units_fail_naming_the_column(column, factor, hint):
    df = runs_table()
    df[column] = df[column] * factor
    with pytest.raises(ConfigError) as err:
        load_runs(df)
    msg = str(err.value)
    assert "units of C (column 'C')" in msg and hint in msg
    df = df.rename(columns={column: "Training thing"})
    with pytest.raises(ConfigError, match="Training thing"):
        load_runs(df, {column: "Training thing"})


def test_plausible_conventions_pass():
    df = runs_table()
    df["C"] = df["C"] * 1.7  # e.g. 6N_total-counted C with non-embedding N: ratio ~10, still plausible
    out = _load_quiet(df)
    assert out.attrs["k_table"] == pytest.approx(10.2)


def test_row_whose_C_disagrees_with_kND_is_left_out_with_a_warning():
    df = runs_table()
    df.loc[4, "C"] = 5e25  # one bad row: today a fake 5e25 budget
    with pytest.warns(UserWarning, match=r"1 row\(s\) left out.*" + re.escape(df.loc[4, "run_id"])):
        out = load_runs(df)
    assert out["budget"].max() < 1e20 and len(out) == len(df) - 1
    assert out.attrs["inconsistent_C"] == [df.loc[4, "run_id"]]
    assert out.attrs["excluded_counts"] == {"C inconsistent with k·N·D": 1}
    df.loc[4, "C"] = df.loc[4, "C"] / 5e25 * 1e17 * 1.05  # within the 10% tolerance: kept
    assert len(_load_quiet(df)) == len(df)
    df.loc[4, "C"] = 1e17 * 1.3
    assert len(_load_quiet(df, c_rtol=0.5)) == len(df)  # a wider stated tolerance keeps it


def test_exact_duplicate_rows_are_counted_once():
    df = runs_table()
    doubled = pd.concat([df, df.iloc[:4]], ignore_index=True)
    with pytest.warns(UserWarning, match="4 exact duplicate"):
        out = load_runs(doubled)
    assert len(out) == len(df) and out.attrs["duplicates"] == 4
    no_ids = doubled.drop(columns="run_id")
    assert len(_load_quiet(no_ids)) == len(df)


# ---------------------------------------------------------------- budgets


def test_budget_column_wins_and_clusters_need_clear_separation():
    df = runs_table()
    df["C"] = df["C"] * np.where(np.arange(len(df)) % 2, 1.02, 0.99)  # C within 3% inside each budget
    df["D"] = df["C"] / (6 * df["N"])
    out = _load_quiet(df)
    assert out["budget"].nunique() == 3
    chain = df.iloc[:5].copy()
    chain["C"] = 1e17 * 1.03 ** np.arange(5)  # each within 3% of the next, 12.6% end to end: not one budget
    chain["D"] = chain["C"] / (6 * chain["N"])
    with pytest.warns(UserWarning, match="not treated as one budget"):
        out = load_runs(chain)
    assert out["budget"].nunique() == 5
    chain["budget"] = 1e17
    assert _load_quiet(chain)["budget"].nunique() == 1


def test_runs_of_one_N_D_cell_share_a_budget():
    df = runs_table().assign(lr=1e-3)
    near = df.iloc[[0]].assign(run_id="near", N=df["N"].iloc[0] * 0.9, C=0.99e17)  # another size, 1% below
    near["D"] = near["C"] / (6 * near["N"])
    scan = pd.concat([df.iloc[[2]]] * 4, ignore_index=True)  # an LR scan at one (N, D), its C recorded with jitter
    scan["run_id"] = [f"lr{i}" for i in range(4)]
    scan["lr"] = [1e-4, 3e-4, 1e-3, 3e-3]
    scan["C"] = 1.04e17 * np.array([0.999, 1.001, 1.0, 1.0])
    scan["D"] = 1.04e17 / (6 * scan["N"])
    out = _load_quiet(pd.concat([df, near, scan], ignore_index=True))
    assert out.loc[out["run_id"].str.startswith("lr"), "budget"].nunique() == 1  # the scan is never split
    assert out.loc[out["run_id"] == "near", "budget"].iloc[0] != out.loc[out["run_id"] == "lr0", "budget"].iloc[0]


# ---------------------------------------------------------------- batch size and parameter count


def test_batch_size_units_are_read_and_recorded():
    df = runs_table()
    df["batch_size"] = 64
    assert _load_quiet(df).attrs["batch_unit"] == "tokens"
    assert (_load_quiet(df)["batch_size"] == 64).all()
    df["seq_len"] = 1024
    with pytest.warns(UserWarning, match="read in sequences"):
        out = load_runs(df)
    assert (out["batch_size"] == 64 * 1024).all() and out.attrs["batch_unit"] == "sequences"
    assert (out["batch_size_sequences"] == 64).all()
    assert (_load_quiet(df, batch_unit="tokens")["batch_size"] == 64).all()
    with pytest.raises(ConfigError, match="seq_len"):
        load_runs(df.drop(columns="seq_len"), batch_unit="sequences")


def test_this_projects_runs_table_keeps_batch_in_tokens_and_its_own_C():
    df = runs_table()
    df["batch_size"], df["seq_len"], df["flop_convention"] = 64 * 256, 256, "exact"
    df.loc[3, "C"] *= 1.3  # the exact convention's C/(N·D) varies with the shape: not an inconsistency here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_runs(df)
    assert (out["batch_size"] == 64 * 256).all() and out.attrs["batch_unit"] == "tokens" and len(out) == len(df)
    assert out.attrs["parameter_count"] == "non-embedding"


def test_parameter_count_is_declared_not_assumed():
    df = runs_table()
    assert _load_quiet(df).attrs["parameter_count"] == "unspecified"
    assert _load_quiet(df, param_count="total").attrs["parameter_count"] == "total"
    with pytest.raises(ConfigError, match="param_count"):
        load_runs(df, param_count="embedding")


# ---------------------------------------------------------------- per-checkpoint tables


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_per_checkpoint_table_becomes_one_row_per_run_with_curves(tmp_path, fmt):
    m = curves_table(nan_last=True)
    path = tmp_path / f"history.{fmt}"
    m.to_csv(path, index=False) if fmt == "csv" else m.to_parquet(path)
    out = _load_quiet(path)
    assert len(out) == 9 and out.attrs["per_checkpoint"]
    last = m.dropna(subset=["loss"]).groupby("run_id").tail(1).set_index("run_id")
    got = out.set_index("run_id")
    np.testing.assert_allclose(got.loc[last.index, "D"], last["D"])  # the last checkpoint with a finite loss
    np.testing.assert_allclose(got["lr"], 1e-3)  # the schedule's peak, not its decayed last value
    curves = out.attrs["metrics"]
    assert list(curves.columns) == list(sweeps.results.METRIC_COLUMNS) and len(curves) == 9 * 12
    np.testing.assert_allclose(out["budget"], 1e21)  # every run ends at 1e21 FLOPs: one budget


def test_row_order_of_a_per_checkpoint_table_does_not_matter():
    m = curves_table(nan_last=True)
    a = _load_quiet(m).set_index("run_id").sort_index()
    b = _load_quiet(m.sample(frac=1.0, random_state=1)).set_index("run_id").sort_index()
    pd.testing.assert_frame_equal(a, b)
    ca = a.attrs["metrics"].sort_values(["run_id", "step"]).reset_index(drop=True)
    cb = b.attrs["metrics"].sort_values(["run_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ca, cb, check_frame_type=False)


def test_envelope_from_a_table_matches_the_envelope_from_its_curves(tmp_path):
    m = curves_table(n_models=15, n_ckpt=20)
    m.to_csv(tmp_path / "history.csv", index=False)
    out = _load_quiet(tmp_path / "history.csv")
    from_table = fit_envelope(out.attrs["metrics"], n_boot=50)
    direct = fit_envelope(m.rename(columns={"C": "flops", "D": "tokens", "loss": "val_loss"}), n_boot=50)
    assert from_table.params["a"] == pytest.approx(direct.params["a"], rel=1e-9)
    assert 0.3 < from_table.params["a"] < 0.7


def test_crashed_runs_curves_are_left_out_of_the_metrics():
    m = curves_table()
    m.loc[m["run_id"] == "r3", "status"] = "crashed"
    m["status"] = m["status"].fillna("finished")
    out = _load_quiet(m)
    assert "r3" not in set(out["run_id"]) and "r3" not in set(out.attrs["metrics"]["run_id"])


def test_run_level_columns_logged_once_per_run_are_carried_to_the_run():
    m = curves_table()
    first = m.groupby("run_id").cumcount() == 0
    m["status"] = np.where(first, "finished", None)  # e.g. the state joined onto the first history row only
    m.loc[~first, "N"] = np.nan  # and the model size only there too
    out = _load_quiet(m)
    assert len(out) == 9 and out["N"].notna().all()
    assert out.attrs["metrics"]["N"].notna().all() and len(out.attrs["metrics"]) == 9 * 12
    m.loc[3, "step"] = np.nan
    with pytest.raises(ConfigError, match="column step.*1 rows without one"):
        load_runs(m)


def test_envelope_with_too_few_runs_to_resample_says_so():
    fit = fit_envelope(curves_table(n_models=4, n_ckpt=30).rename(columns={"C": "flops", "D": "tokens"}), n_boot=100)
    iv = fit.intervals["a"]
    assert not iv.determined and "only 4 runs" in iv.reason and iv.method == "bootstrap:runs"


def test_envelope_without_bootstrap_says_so():
    fit = fit_envelope(curves_table(n_models=15, n_ckpt=20).rename(columns={"C": "flops", "D": "tokens"}), n_boot=0)
    iv = fit.intervals["a"]
    assert not iv.determined and iv.method == "none" and "n_boot = 0" in iv.reason
    assert "undetermined" in fit.summary()


def test_repeated_run_and_step_is_refused():
    m = curves_table()
    m.loc[5, "step"] = m.loc[4, "step"]
    m.loc[5, "loss"] += 0.1  # not an exact duplicate: two values for one checkpoint
    with pytest.raises(ConfigError, match="repeat a"):
        load_runs(m)


def test_curves_on_grid_matches_per_run_interpolation():
    m = curves_table(n_models=5, n_ckpt=7).sample(frac=1.0, random_state=0)  # shuffled rows
    ck = envelope_module._checkpoints(m.rename(columns={"C": "flops", "D": "tokens"}), 6.0, None)
    grid = np.geomspace(ck["C"].min(), ck["C"].max(), 17)
    runs, N_run, loss, _ = envelope_module._curves_on_grid(ck, grid)
    for r, run in enumerate(runs):
        g = ck[ck["run_id"] == run]
        lc = np.log(g["C"].to_numpy())
        inside = (np.log(grid) >= lc[0]) & (np.log(grid) <= lc[-1])
        np.testing.assert_allclose(loss[r, inside], np.interp(np.log(grid[inside]), lc, g["loss"]), rtol=1e-12)
        assert np.isinf(loss[r, ~inside]).all() and N_run[r] == g["N"].iloc[0]


def test_curves_in_attrs_are_shared_not_copied_by_each_operation():
    out = _load_quiet(curves_table())
    assert isinstance(out.attrs["metrics"], SharedFrame)
    assert out[out["N"] > 0].attrs["metrics"] is out.attrs["metrics"]
    assert load_runs(out) is out  # a loaded table is not loaded twice


# ---------------------------------------------------------------- scaling fit


def _fit_args(path, *extra):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["fit", str(path), "--law", "isoflop", "--no-backtest", *extra])


def test_fit_cli_options_reach_the_loader_and_say_what_they_did(tmp_path, capsys):
    df = runs_table(n_budgets=3)
    df["Tokens"] = df.pop("D")
    df["batch_size"] = 32
    df["seq_len"] = 512
    df.loc[0, "status"] = "crashed"
    df.to_csv(tmp_path / "runs.csv", index=False)
    assert run_fit(_fit_args(tmp_path / "runs.csv", "--columns", "D=Tokens", "--param-count", "non-embedding",
                             "--batch-unit", "sequences", "--n-boot", "0")) == 0
    out = capsys.readouterr().out
    assert "excluded 1 run(s): 1 crashed" in out
    assert "batch_size read in sequences" in out and "N counts non-embedding parameters" in out
    assert "no intervals" in out


def test_every_fit_option_has_help():
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register(sub)
    fit = sub.choices["fit"]
    assert {"param_count", "batch_unit"} <= {a.dest for a in fit._actions}
    for action in fit._actions:
        if action.dest != "help":
            assert action.help, action.dest
