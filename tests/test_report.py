"""fit_all -> FitReport -> fit.json -> FitReport (typed round trip, schema version, malformed files), and
write_report's fit.json, report.md and figures (the figure and the table show the same expected loss)."""

import json
import re

import pytest

import analysis
from analysis import plots
from analysis import report as report_module
from analysis.backtest import BacktestResult
from analysis.envelope import EnvelopeFit
from analysis.fitreport import FitReport, load_fit
from analysis.hyperparams import HyperparamFit
from analysis.isoflop import IsoflopFit
from analysis.parametric import ParametricFit
from analysis.powerlaw import SaturatingFit
from analysis.report import fit_all, write_report
from analysis.result import SCHEMA_VERSION
from analysis.simulate import synthetic_runs
from scaling.accounting import CONVENTIONS
from scaling.errors import ConfigError

FIGURES = ("isoflop", "loss_vs_compute", "allocation", "parametric_contours", "hyperparams", "residuals", "backtest")
CLASSES = {"isoflop": IsoflopFit, "loss_vs_compute": SaturatingFit, "parametric": ParametricFit,
           "hyperparams": HyperparamFit, "envelope": EnvelopeFit}


@pytest.fixture(scope="module")
def report():
    return fit_all(synthetic_runs(hparam_grid=(5, 3), seed=0), n_boot=60, seed=0, target_budget=1e19)


@pytest.fixture(scope="module")
def size_report():
    return fit_all(synthetic_runs(seed=1), laws=["isoflop", "loss", "parametric"], n_boot=40, seed=0)


def test_fit_all_fits_every_law_the_data_allows(report):
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["schema_version"] == SCHEMA_VERSION
    for member in ("meta", "parametric", "isoflop", "loss_vs_compute", "hyperparams", "backtest",
                   "convention_sensitivity"):
        assert member in d, member
    for law, fit in report.fits.items():
        assert isinstance(fit, CLASSES[law]) and d[law]["kind"] == fit.kind, law
    assert isinstance(report.backtest, BacktestResult)
    assert "envelope" not in d and "metrics" in d["meta"]["skipped"]["envelope"]
    meta = d["meta"]
    assert meta["k"] == pytest.approx(6.0) and meta["flop_convention"] == "6N"
    assert meta["max_budget"] == pytest.approx(1e17) and len(meta["budgets"]) == 5
    assert meta["n_runs"] == len(meta["runs"]) == 5 * (7 + 15)
    assert meta["family"] == "gpt2" and meta["seq_len"] == 256
    # hparam runs stay out of the size fits: 7 isoFLOP points per budget
    assert [b["n_points"] for b in d["isoflop"]["budgets"]] == [7] * 5
    # law objects carry params, intervals with counts, and draws by name
    law = d["isoflop"]["N_opt"]
    assert set(law["params"]) == {"coef", "exponent"} and len(law["draws"]["exponent"]) == 60
    assert law["intervals"]["exponent"]["n_total"] == 60
    # the true exponent a = beta / (alpha + beta) = 0.4516 of the generating law
    assert report.fits["isoflop"].params["a"] == pytest.approx(0.4516, abs=0.02)
    assert report.fits["parametric"].params["a"] == pytest.approx(0.4516, abs=0.02)


def test_fit_json_round_trips_to_the_same_typed_report(report, tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(report.to_dict(), allow_nan=False))
    again = analysis.load_fit(path)
    assert isinstance(again, FitReport) and set(again.fits) == set(report.fits)
    for law, fit in again.fits.items():
        assert type(fit) is type(report.fits[law]), law
    assert again.fits["isoflop"].N_opt.predict(1e19) == pytest.approx(report.fits["isoflop"].N_opt.predict(1e19))
    assert again.fits["parametric"].predict(1e8, 1e9) == pytest.approx(report.fits["parametric"].predict(1e8, 1e9))
    assert again.fits["loss_vs_compute"].predict_samples(1e19) == pytest.approx(
        report.fits["loss_vs_compute"].predict_samples(1e19), rel=1e-5, nan_ok=True)
    assert again.backtest.summary() == report.backtest.summary()
    assert again.to_dict() == json.loads(path.read_text())


def _write(tmp_path, d, name="fit.json"):
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return path


def test_unknown_schema_version_is_refused_naming_the_file(size_report, tmp_path):
    d = size_report.to_dict()
    for version in (1, 3, None):
        d["schema_version"] = version
        path = _write(tmp_path, d, "old.json")
        with pytest.raises(ConfigError, match=r"old\.json: schema_version"):
            load_fit(path)
    d.pop("schema_version")
    with pytest.raises(ConfigError, match="schema_version"):
        FitReport.from_dict(d)


@pytest.mark.parametrize("edit, member", [
    (lambda d: d["isoflop"]["N_opt"]["params"].update(coef=-3.0), "isoflop"),
    (lambda d: d["parametric"]["params"].update(alpha="0.34"), "parametric"),
    (lambda d: d["meta"].update(k="six"), "meta.k"),
    (lambda d: d["meta"].pop("budgets"), "meta.budgets"),
    (lambda d: d["meta"].update(budgets=[1e15, -1.0]), r"meta.budgets\[1\]"),
    (lambda d: d["loss_vs_compute"].pop("params"), "loss_vs_compute"),
    (lambda d: d["loss_vs_compute"].update(kind="isoflop"), "loss_vs_compute: kind"),
    (lambda d: d["isoflop"]["intervals"]["a"].update(n_ok="all"), "isoflop"),
    (lambda d: d.update(isoflop=[1, 2, 3]), "isoflop"),
    (lambda d: d.update(backtest={"kind": "backtest", "params": []}), "backtest"),
    (lambda d: d.update(extra_law={}), "extra_law"),
])
def test_malformed_fit_json_is_a_clear_error_naming_file_and_member(size_report, tmp_path, edit, member):
    d = json.loads(json.dumps(size_report.to_dict()))
    edit(d)
    with pytest.raises(ConfigError, match=rf"bad\.json: {member}"):
        load_fit(_write(tmp_path, d, "bad.json"))


def test_non_object_or_non_json_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="list.json"):
        load_fit(_write(tmp_path, [1, 2], "list.json"))
    (tmp_path / "torn.json").write_text('{"schema_version": 2, "meta": {')
    with pytest.raises(ConfigError, match="torn.json"):
        load_fit(tmp_path / "torn.json")
    with pytest.raises(ConfigError, match="fit"):
        load_fit(tmp_path / "missing.json")


def test_conventions_have_one_home():
    assert report_module.CONVENTIONS is CONVENTIONS


def test_convention_sensitivity_moves_with_the_flop_convention(report):
    table = report.convention_sensitivity.set_index("convention")
    assert list(table.index) == list(CONVENTIONS)
    assert table.loc["6N_total", "N_count"] == "total"
    # N_total = 1.08 N: the same exponent, an 8% larger N at the target
    assert table.loc["6N_total", "a"] == pytest.approx(table.loc["6N", "a"], abs=1e-6)
    assert table.loc["6N_total", "N_opt_target"] / table.loc["6N", "N_opt_target"] == pytest.approx(1.08, rel=0.02)
    # the "exact" FLOPs add a share that shrinks with N, so its exponent differs from 6N's
    assert abs(table.loc["exact", "a"] - table.loc["6N", "a"]) > 1e-3
    assert table.loc["exact", "k"] > 6.5
    spread = report.to_dict()["convention_sensitivity"]
    assert spread["N_opt_target_max_over_min"] >= 1.08 - 1e-6


def test_skips_are_recorded_with_reasons():
    runs = synthetic_runs(budgets=(1e16,), seed=0)  # one budget: no isoflop laws, no L(C), no backtest
    rep = fit_all(runs, n_boot=0)
    assert set(rep.fits) <= {"parametric"}
    for law in ("isoflop", "loss_vs_compute", "hyperparams", "envelope", "backtest"):
        assert law in rep.skipped, law
    assert "2 FLOP budgets" in rep.skipped["isoflop"]


def test_bad_law_names_and_drop_highest_loss():
    with pytest.raises(ConfigError, match="laws"):
        fit_all(synthetic_runs(seed=0), laws=["approach4"])
    with pytest.raises(ConfigError, match="n_boot"):
        fit_all(synthetic_runs(seed=0), n_boot=-1)
    rep = fit_all(synthetic_runs(seed=0), laws=["parametric"], n_boot=0, drop_highest_loss=3)
    assert rep.meta["n_runs"] == 32 and rep.meta["n_excluded"] == 3
    assert all(e["status"] == "dropped" for e in rep.meta["excluded"])


@pytest.mark.slow  # draws and saves all seven figures (PNG and SVG)
def test_write_report_figure_and_table_agree_on_the_expected_loss(report, tmp_path, monkeypatch):
    drawn = {}
    save = plots.save_figure

    def keep(fig, out_dir, name):
        drawn[name] = fig
        return save(fig, out_dir, name)

    monkeypatch.setattr(plots, "save_figure", keep)
    path = write_report(report, tmp_path)
    assert path == tmp_path / "report.md"
    d = json.loads((tmp_path / "fit.json").read_text())
    assert d["meta"]["target_budget"] == pytest.approx(1e19) and d["schema_version"] == SCHEMA_VERSION
    for name in FIGURES:
        png, svg = tmp_path / f"{name}.png", tmp_path / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert "<svg" in svg.read_text()[:2000], name
    md = path.read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(linked) == {f"{name}.png" for name in FIGURES}
    for section in ("Recommendation for C = 1e+19", "Approach 2", "Approach 3", "Backtest", "Convention sensitivity",
                    "Skipped", "95% interval", "(60/60)"):
        assert section in md, section
    rec = json.loads((tmp_path / "recommendation.json").read_text())
    # the expected loss: the figure's target marker, the report's table and recommendation.json are one number
    (marker,) = [line for ax in drawn["loss_vs_compute"].axes for line in ax.get_lines()
                 if line.get_gid() == "target_expected_loss"]
    figure_loss = float(marker.get_ydata()[0])
    table_loss = float(re.search(r"\| expected final loss \(nats/token\) \| ([0-9.]+) \|", md).group(1))
    assert figure_loss == pytest.approx(rec["params"]["expected_loss"], rel=1e-12)
    assert table_loss == pytest.approx(figure_loss, rel=1e-3)
    (n_marker,) = [line for ax in drawn["allocation"].axes for line in ax.get_lines() if line.get_gid() == "target_N"]
    assert float(n_marker.get_ydata()[0]) == pytest.approx(rec["params"]["N"], rel=1e-12)


def test_write_report_from_reloaded_dict(report, tmp_path, monkeypatch):
    drawn = {}

    def fake_plot_all(rep, out_dir, target_budget=None, recommendation=None):  # figures are covered above
        drawn.update(laws=set(rep.fits), target=target_budget, rec=recommendation)
        return {}

    monkeypatch.setattr(plots, "plot_all", fake_plot_all)
    d = json.loads(json.dumps(report.to_dict()))
    d.pop("hyperparams")
    write_report(d, tmp_path, target_budget=1e18)
    assert drawn["target"] == 1e18 and "hyperparams" not in drawn["laws"] and drawn["rec"].budget == 1e18
    md = (tmp_path / "report.md").read_text()
    assert "Recommendation for C = 1e+18" in md and "Learning rate and batch size" not in md
    assert "DeepSeek" in md  # without the hyperparameter laws the published fallbacks are named
    assert "undetermined: published law" in md  # and have no interval, said as such


def test_report_marks_unreliable_quantities_and_undetermined_intervals(size_report, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot_all", lambda *a, **k: {})
    d = json.loads(json.dumps(size_report.to_dict()))
    d["isoflop"]["unreliable"]["a"] = "exponent 1.7 outside [0, 1]"
    rep = FitReport.from_dict(d)
    assert "isoflop.a: UNRELIABLE: exponent 1.7 outside [0, 1]" in rep.summary()
    md = (write_report(rep, tmp_path)).read_text()
    assert "**UNRELIABLE**: exponent 1.7 outside [0, 1]" in md
    assert "instead of isoflop.N_opt (approach 2), which is UNRELIABLE" in md  # the fallback is named
    assert not re.search(r"\[([0-9.e+-]+), \1\]", md)  # never a zero-width [x, x]


def test_no_bootstrap_report_says_there_are_no_intervals(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot_all", lambda *a, **k: {})
    rep = fit_all(synthetic_runs(seed=2), laws=["isoflop", "loss"], n_boot=0)
    md = write_report(rep, tmp_path).read_text()
    assert "**No intervals**" in md and "undetermined: " in md
    assert "OUTSIDE" not in md and "| **no** |" not in md and "no interval |" in md
    assert "OUTSIDE" not in rep.summary()


def test_report_counts_the_runs_left_out_and_names_the_batch_unit(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot_all", lambda *a, **k: {})
    runs = synthetic_runs(seed=3).drop(columns="flop_convention")  # a plain table, not this project's export
    runs["status"] = "finished"
    runs.loc[[0, 8], "status"] = "crashed"
    runs.loc[[15], "status"] = "running"
    rep = fit_all(runs, laws=["isoflop"], n_boot=0, backtest=False, batch_unit="tokens")
    assert rep.meta["n_excluded"] == 3 and rep.meta["excluded_counts"] == {"crashed": 2, "running": 1}
    assert rep.meta["parameter_count"] == "unspecified"  # the table did not say whether N counts embeddings
    md = write_report(rep, tmp_path).read_text()
    assert "3 runs excluded (2 crashed, 1 running)" in md and "batch sizes read in tokens" in md
    assert "N counts unspecified parameters" in md and "--param-count" in md
