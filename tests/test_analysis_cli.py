"""`scaling fit` / `scaling recommend` in-process through scaling.cli.main."""

import json
from pathlib import Path

import pytest

from analysis import plots
from analysis.cli import parse_columns
from analysis.simulate import synthetic_runs
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
    assert set(d) == {"schema_version", "meta", "parametric"}
    par = d["parametric"]
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        iv = par["intervals"][name]
        assert iv["lo"] < iv["hi"] and iv["n_total"] == 30 and iv["n_ok"] >= 27, name
    assert len(par["draws"]["alpha"]) == 30
    assert par["params"]["alpha"] == pytest.approx(0.34, abs=0.03)
    assert "parametric" in capsys.readouterr().out


@pytest.fixture(scope="module")
def fit_json(runs_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "fit.json"
    assert main(["fit", str(runs_csv), "--law", "isoflop", "--json", str(path), "--n-boot", "50"]) == 0
    return path


def test_fit_isoflop_then_recommend_round_trip(fit_json, tmp_path, capsys):
    rec_json = tmp_path / "rec.json"
    iso = json.loads(fit_json.read_text())["isoflop"]
    for law in ("N_opt", "D_opt"):
        assert set(iso[law]["intervals"]) == {"coef", "exponent"}
        iv = iso[law]["intervals"]["exponent"]
        assert iv["lo"] <= iso[law]["params"]["exponent"] <= iv["hi"]
    assert len(iso["budgets"]) == 5 and all("N_opt" in b for b in iso["budgets"])
    capsys.readouterr()
    assert main(["recommend", "--budget", "1e19", "--fit", str(fit_json), "--json", str(rec_json)]) == 0
    printed = capsys.readouterr().out
    assert "N (non-embedding params)" in printed and "DeepSeek" in printed and "(50/50)" in printed
    rec = json.loads(rec_json.read_text())
    for key in ("N", "D", "steps", "expected_loss"):
        iv = rec["intervals"][key]
        assert iv["lo"] < iv["hi"] and iv["n_total"] == 50, key
    for key in ("batch_size_tokens", "lr"):  # the published fallbacks have no interval, and say so
        assert rec["intervals"][key]["lo"] is None and "published" in rec["intervals"][key]["reason"], key
    assert rec["model"]["family"] == "gpt2" and rec["model"]["vocab_size"] == 256  # the fit's own metadata
    assert rec["budget"] == 1e19 and rec["extrapolation_factor"] == pytest.approx(100)


def test_recommend_shape_options_and_missing_metadata(fit_json, tmp_path, capsys):
    d = json.loads(fit_json.read_text())
    for key in ("family", "vocab_size", "seq_len"):
        d["meta"].pop(key)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(d))
    capsys.readouterr()
    assert main(["recommend", "--budget", "1e24", "--fit", str(bare)]) == 0
    out = capsys.readouterr().out
    assert "shape needs --family, --vocab-size" in out and "n_heads=" not in out
    assert "peak learning rate" in out and "steps" in out and "expected final loss" in out
    assert main(["recommend", "--budget", "1e21", "--fit", str(bare), "--family", "llama", "--vocab-size", "32000",
                 "--seq-len", "2048", "--param-count", "total"]) == 0
    out = capsys.readouterr().out
    assert "llama, vocab 32000, seq 2048" in out and "N (total params)" in out
    assert main(["recommend", "--budget", "1e21", "--fit", str(bare), "--vocab-size", "0"]) == 2


def test_recommend_answers_absurd_budgets(fit_json, capsys):
    capsys.readouterr()
    assert main(["recommend", "--budget", "1e300", "--fit", str(fit_json)]) == 0
    out = capsys.readouterr().out
    assert "beyond the shape ladder's range" in out and "UNRELIABLE" in out and "very strong extrapolation" in out
    assert main(["recommend", "--budget", "1e12", "--fit", str(fit_json)]) == 0
    assert "below the fitted range" in capsys.readouterr().out


def test_malformed_fit_json_exits_2_with_one_line(fit_json, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    d = json.loads(fit_json.read_text())
    d["isoflop"]["N_opt"]["params"]["coef"] = -1.0
    bad.write_text(json.dumps(d))
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**d, "schema_version": 1}))
    capsys.readouterr()
    for path in (bad, listed, old):
        assert main(["recommend", "--budget", "1e19", "--fit", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "bad.json: isoflop" in err[0] and "list.json" in err[1] and "old.json: schema_version" in err[2]


def test_fit_without_bootstrap_says_there_are_no_intervals(runs_csv, capsys):
    assert main(["fit", str(runs_csv), "--law", "isoflop", "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert "OUTSIDE" not in out and "no interval to check against" in out and "undetermined: " in out


def test_fit_out_writes_report(runs_csv, tmp_path, monkeypatch):
    def isoflop_only(report, out_dir, target_budget=None, recommendation=None):  # all figures: test_report
        return {"isoflop": plots.save_figure(plots.plot_isoflop(report), out_dir, "isoflop")}

    monkeypatch.setattr(plots, "plot_all", isoflop_only)
    out = tmp_path / "report"
    assert main(["fit", str(runs_csv), "--law", "isoflop", "--n-boot", "20", "--out", str(out),
                 "--target", "1e18", "--no-backtest"]) == 0
    assert (out / "report.md").exists() and (out / "fit.json").exists() and (out / "isoflop.svg").exists()
    assert (out / "recommendation.json").exists()


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


def test_chinchilla_csv_with_column_mapping(tmp_path):
    out = tmp_path / "chinchilla.json"
    rc = main(["fit", str(CHINCHILLA), "--columns", 'N="Model Size",C="Training FLOP"', "--law", "parametric",
               "--drop-highest-loss", "5", "--n-boot", "0", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    par = d["parametric"]["params"]
    # Epoch AI's sum-of-Huber optimum on the 240 kept points (../shared/reference/anchors.md)
    assert par["E"] == pytest.approx(1.8172, abs=0.002)
    assert par["alpha"] == pytest.approx(0.3473, abs=0.003)
    assert par["beta"] == pytest.approx(0.3672, abs=0.003)
    assert par["A"] == pytest.approx(477.8, rel=0.03)
    assert d["meta"]["n_runs"] == 240 and d["meta"]["n_excluded"] == 5
