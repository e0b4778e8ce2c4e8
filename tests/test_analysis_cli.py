"""`scaling fit` / `scaling recommend` in-process through scaling.cli.main."""

import json
from pathlib import Path

import pytest

from analysis import plots
from analysis.backtest import synthetic_runs
from analysis.cli import parse_columns
from scaling.cli import main
from scaling.errors import ConfigError

CHINCHILLA = Path(__file__).resolve().parent / "data" / "chinchilla_epoch.csv"  # see tests/data/README.md


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    synthetic_runs(seed=0).to_csv(path, index=False)
    return path


def test_fit_parametric_json(runs_csv, tmp_path, capsys):
    out = tmp_path / "par.json"
    assert main(["fit", str(runs_csv), "--law", "parametric", "--json", str(out), "--n-boot", "30"]) == 0
    d = json.loads(out.read_text())
    assert set(d) == {"meta", "parametric"}
    par = d["parametric"]
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        lo, hi = par["intervals"][name]
        assert lo <= par[name] <= hi, name
    assert par["n_boot"] == 30
    assert par["alpha"] == pytest.approx(0.34, abs=0.03)
    assert "parametric" in capsys.readouterr().out


def test_fit_isoflop_then_recommend_round_trip(runs_csv, tmp_path, capsys):
    fit_json, rec_json = tmp_path / "fit.json", tmp_path / "rec.json"
    assert main(["fit", str(runs_csv), "--law", "isoflop", "--json", str(fit_json), "--n-boot", "50"]) == 0
    iso = json.loads(fit_json.read_text())["isoflop"]
    for law in ("N_opt", "D_opt"):
        assert set(iso[law]["intervals"]) == {"coef", "exponent"}
        assert iso[law]["intervals"]["exponent"][0] <= iso[law]["exponent"] <= iso[law]["intervals"]["exponent"][1]
    assert len(iso["budgets"]) == 5 and all("N_opt" in b for b in iso["budgets"])
    capsys.readouterr()
    assert main(["recommend", "--budget", "1e19", "--fit", str(fit_json), "--json", str(rec_json)]) == 0
    printed = capsys.readouterr().out
    assert "N (non-embedding params)" in printed and "DeepSeek" in printed
    rec = json.loads(rec_json.read_text())
    for key in ("N", "D", "n_layer", "d_model", "n_heads", "batch_size_tokens", "lr", "steps", "expected_loss"):
        lo, hi = rec["intervals"][key]
        assert lo <= rec[key] <= hi, key
    assert rec["budget"] == 1e19 and rec["extrapolation_factor"] == pytest.approx(100)


def test_fit_out_writes_report(runs_csv, tmp_path, monkeypatch):
    def isoflop_only(d, out_dir, target_budget=None):  # every figure is drawn in test_report; keep this one fast
        return {"isoflop": plots.save_figure(plots.plot_isoflop(d), out_dir, "isoflop")}

    monkeypatch.setattr(plots, "plot_all", isoflop_only)
    out = tmp_path / "report"
    assert main(["fit", str(runs_csv), "--law", "isoflop", "--n-boot", "20", "--out", str(out),
                 "--target", "1e18", "--no-backtest"]) == 0
    assert (out / "report.md").exists() and (out / "fit.json").exists() and (out / "isoflop.svg").exists()


def test_bad_input_exits_2(runs_csv, tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing.csv")]) == 2
    assert main(["fit", str(runs_csv), "--columns", "N"]) == 2
    assert main(["fit", str(runs_csv), "--columns", "N=no such column"]) == 2
    assert main(["recommend", "--budget", "lots", "--fit", str(tmp_path / "fit.json")]) == 2
    assert main(["recommend", "--budget", "1e19", "--fit", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 5 and "--columns" in err and "--budget" in err


def test_parse_columns():
    assert parse_columns(['N="Model Size",C=Training FLOP', "loss=L"]) == {
        "N": "Model Size", "C": "Training FLOP", "loss": "L"}
    assert parse_columns(None) is None
    with pytest.raises(ConfigError):
        parse_columns(["=x"])


@pytest.mark.skipif(not CHINCHILLA.exists(), reason="../shared/data/chinchilla_epoch.csv not present")
def test_chinchilla_csv_with_column_mapping(tmp_path):
    out = tmp_path / "chinchilla.json"
    rc = main(["fit", str(CHINCHILLA), "--columns", 'N="Model Size",C="Training FLOP"', "--law", "parametric",
               "--drop-highest-loss", "5", "--n-boot", "0", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    par = d["parametric"]
    # Epoch AI's sum-of-Huber optimum on the 240 kept points (../shared/reference/anchors.md)
    assert par["E"] == pytest.approx(1.8172, abs=0.002)
    assert par["alpha"] == pytest.approx(0.3473, abs=0.003)
    assert par["beta"] == pytest.approx(0.3672, abs=0.003)
    assert par["A"] == pytest.approx(477.8, rel=0.03)
    assert d["meta"]["n_runs"] == 240 and d["meta"]["n_excluded"] == 5
