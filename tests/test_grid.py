"""Grid design: realized FLOPs on budget, real shapes, the LR grid, dedup, stable run ids, impossible runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import pytest

from scaling.accounting import count_params, flops_per_token
from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.runconfig import RunConfig
from sweeps.grid import design, estimate_wall_time, n_opt, plan, run_id_for, solve_batch_steps
from sweeps.spec import load_spec


@pytest.fixture(scope="module")
def presets():
    return {name: design(load_spec(name)) for name in ("tiny-cpu", "gpu-small")}


@pytest.mark.parametrize("name", ["tiny-cpu", "gpu-small"])
def test_realized_flops_within_one_percent(presets, name):
    spec = load_spec(name)
    runs = presets[name].runs
    assert runs and not presets[name].dropped
    for r in runs:
        cfg = ModelConfig.from_dict(r.config["model"])
        per_token = flops_per_token(cfg, spec.budgets.convention)  # recounted independently of the plan
        tokens = r.config["train"]["steps"] * r.config["train"]["batch_size"] * cfg.seq_len
        assert r.D == tokens == r.steps * r.batch_tokens
        assert abs(per_token * tokens / r.budget - 1) <= 0.01
        assert r.flops == pytest.approx(per_token * tokens)
        assert r.N == count_params(cfg)["non_embedding"] and r.N_total == count_params(cfg)["total"]
        assert r.steps >= spec.grid.min_steps
        assert r.tokens_per_param == pytest.approx(r.D / r.N)
        assert r.config["train"]["flop_convention"] == spec.budgets.convention
        assert "out" not in r.config and set(r.config) == set(RunConfig().to_dict()) - {"out"}


def test_tiny_cpu_grid_shape(presets):
    spec = load_spec("tiny-cpu")
    runs = presets["tiny-cpu"].runs
    for budget in spec.budgets.resolved():
        iso = [r for r in runs if r.budget == budget and r.tags["kind"] == "isoflop" and r.tags["seed"] == 0]
        assert len(iso) == spec.grid.models_per_budget
        sizes = sorted(r.N for r in iso)
        assert len(set(sizes)) == len(sizes)  # distinct shapes, although the 2-layer ladder is coarse at the bottom
        # real shapes, not targets: at the bottom of the 2-layer ladder one width step is up to 2.2x in N
        assert 0.65 * spec.grid.spread <= sizes[-1] / sizes[0] <= 2.5 * spec.grid.spread
        assert sizes[0] < n_opt(spec, budget) < sizes[-1]
        replicas = [r for r in runs if r.budget == budget and r.tags["seed"] in spec.grid.replicate_seeds]
        assert len(replicas) == spec.grid.replicate_models * len(spec.grid.replicate_seeds)
        assert {r.N for r in replicas} < set(sizes) and all(r.tags["kind"] == "isoflop" for r in replicas)
        assert {r.shape["n_layer"] for r in iso} == {spec.model.n_layer}
    hparam = [r for r in runs if r.tags["kind"] == "hparam"]
    # k LR values at b budgets; the centre value (factor 1) is the isoFLOP run itself, kept once and tagged "also"
    k, b = len(spec.hparams.lr_factors), len(spec.hparams.budgets)
    assert len(hparam) == (k - 1) * b and len({r.budget for r in hparam}) == b
    centre = [r for r in runs if "hparam" in r.tags.get("also", [])]
    assert len(centre) == b and all(r.tags["kind"] == "isoflop" for r in centre)
    for r in hparam:
        twin = next(c for c in centre if c.budget == r.budget)
        assert r.N == twin.N and r.lr != twin.lr  # only the model nearest the prior optimum gets the grid


def test_replicate_seeds_repeat_the_models_nearest_the_prior_optimum(small):
    spec = load_spec(small, ["grid.replicate_seeds=[7, 8]", "grid.replicate_models=2", "hparams.lr_factors=[1.0]"])
    runs = plan(spec)
    assert len({r.run_id for r in runs}) == len(runs)
    for budget in spec.budgets.resolved():
        main = {r.N: r for r in runs if r.budget == budget and r.tags["seed"] == 0}
        nearest = sorted(main, key=lambda n: abs(math.log(n / n_opt(spec, budget))))[:2]
        for seed in (7, 8):
            extra = [r for r in runs if r.budget == budget and r.tags["seed"] == seed]
            assert sorted(r.N for r in extra) == sorted(nearest)
            for r in extra:  # a replicate differs from its seed-0 twin in the seed alone
                assert r.tags["kind"] == "isoflop" and r.config["train"]["seed"] == seed
                twin = main[r.N].config
                assert {**r.config, "train": {**r.config["train"], "seed": 0}} == twin
    assert len(runs) == len(plan(load_spec(small, ["hparams.lr_factors=[1.0]"]))) + 2 * 2 * len(spec.budgets.resolved())


def test_lr_and_batch_grid_on_all_models(small):
    spec = load_spec(small, ["hparams.lr=[1e-3,1e-2]", "hparams.batch_size=[2,8]", "hparams.models=all",
                             "hparams.budgets=[1e11]"])
    runs = plan(spec)
    hparam = [r for r in runs if r.tags["kind"] == "hparam"]
    assert {r.budget for r in hparam} == {1e11}
    assert len(hparam) == 3 * 2 * 2
    assert {(r.lr, r.batch_size) for r in hparam} == {(1e-3, 2), (1e-3, 8), (1e-2, 2), (1e-2, 8)}
    assert all(abs(r.flops_error) <= 0.01 for r in hparam)


def test_duplicate_runs_are_kept_once(small):
    spec = load_spec(small, ["hparams.lr_factors=[1.0]"])  # the grid's only point is the isoFLOP run itself
    runs = plan(spec)
    assert len({r.run_id for r in runs}) == len(runs) == 6
    assert all(r.tags["kind"] == "isoflop" for r in runs)
    assert sum("hparam" in r.tags.get("also", []) for r in runs) == 2
    with pytest.raises(ConfigError, match=r"^budgets\.values: expected distinct budgets.*collapse into one"):
        load_spec(small, ["budgets.values=[1e11,1e11]"])  # the same budget twice is an error (issue 11)


def test_run_ids_are_stable_across_processes(small):
    ids = [r.run_id for r in plan(load_spec(small))]
    code = ("import sys; from sweeps.spec import load_spec; from sweeps.grid import plan; "
            "print(' '.join(r.run_id for r in plan(load_spec(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, str(small)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ids
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


def test_run_id_changes_with_what_the_run_computes(small):
    run = plan(load_spec(small))[0]
    assert run_id_for(run.config) == run.run_id
    other = json.loads(json.dumps(run.config))
    other["train"]["lr"] *= 2
    assert run_id_for(other) != run.run_id
    cadence = json.loads(json.dumps(run.config))
    cadence["train"]["checkpoint_every"] = 7  # how often to checkpoint does not change the run
    assert run_id_for(cadence) == run.run_id
    ids_lr = {r.run_id for r in plan(load_spec(small, ["train.lr=1e-2"]))}
    assert ids_lr.isdisjoint(r.run_id for r in plan(load_spec(small)))


def test_budget_too_small_for_one_step_names_budget_and_model(small):
    with pytest.raises(ConfigError, match=r"^budgets\.values: .*smallest model \(N=.*budget 1e\+08 FLOPs"):
        plan(load_spec(small, ["budgets.values=[1e8]", "grid.sizes=[1e6]"]))


def test_unbuildable_size_names_grid_sizes(small):
    with pytest.raises(ConfigError, match=r"^grid\.sizes: expected sizes the shape ladder can build"):
        plan(load_spec(small, ["grid.sizes=[10]"]))


def test_runs_below_min_steps_are_dropped_with_a_warning(small):
    spec = load_spec(small, ["grid.min_steps=3000", "grid.batch_range=1"])
    result = design(spec)
    assert result.dropped and all("min_steps" in d.reason for d in result.dropped)
    assert all(r.steps >= 3000 for r in result.runs)
    with pytest.warns(UserWarning, match="dropped isoflop run"):
        plan(spec)
    with pytest.raises(ConfigError, match="every model at this budget was dropped"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan(load_spec(small, ["grid.min_steps=10000000"]))


def test_explicit_sizes_and_fitted_prior(small):
    runs = plan(load_spec(small, ["grid.sizes=[2e4,8e4]", "budgets.values=[1e11]"]))
    assert [r.N for r in runs] == sorted(r.N for r in runs) and len(runs) == 2
    assert runs[0].N == pytest.approx(2e4, rel=0.05) and runs[1].N == pytest.approx(8e4, rel=0.05)
    runs = plan(load_spec(small, ["grid.prior_coef=1e-2", "grid.prior_exponent=0.6", "budgets.values=[1e11]",
                                  "grid.models_per_budget=1"]))
    assert runs[0].N == pytest.approx(1e-2 * 1e11**0.6, rel=0.05)


@pytest.mark.parametrize("budget, fpt, target", [(1e11, 1.7e5, 4.0), (3.3e12, 6.1e6, 48.0), (2e9, 9e4, 16.0),
                                                 (7.7e15, 3.3e8, 13.0)])
def test_solve_batch_steps_lands_on_budget(budget, fpt, target):
    solved = solve_batch_steps(budget, fpt, 64, target, min_steps=20, batch_range=4.0, tolerance=0.01)
    assert not isinstance(solved, str)
    batch, steps = solved
    assert abs(steps * batch * 64 * fpt / budget - 1) <= 0.01
    assert steps >= 20 and target / 4 <= batch <= target * 4


def test_solve_batch_steps_respects_micro_batch_and_reports_impossible():
    batch, _ = solve_batch_steps(1e15, 1e6, 128, 50.0, min_steps=20, batch_range=2.0, tolerance=0.01, multiple=16)
    assert batch % 16 == 0
    reason = solve_batch_steps(1e9, 1e6, 128, 16.0, min_steps=20, batch_range=2.0, tolerance=0.01)
    assert isinstance(reason, str) and "fewer than grid.min_steps" in reason


def test_wall_time_estimate_packs_runs_onto_slots():
    class R:
        def __init__(self, flops):
            self.flops = flops

    runs = [R(4.0), R(3.0), R(3.0), R(2.0)]
    assert estimate_wall_time(runs, 1.0, 1) == 12.0
    assert estimate_wall_time(runs, 1.0, 2) == 6.0  # {4, 2} and {3, 3}
    assert estimate_wall_time(runs, 1.0, 10) == 4.0
    assert estimate_wall_time(runs, lambda r: r.flops, 2) == 2.0


def test_a_target_in_a_ladder_gap_moves_to_the_nearest_buildable_size():
    import functools

    from scaling.ladder import shape_for_params
    from sweeps.grid import GAP_SHIFT, nearest_buildable

    build = functools.partial(shape_for_params, family="gpt2", head_dim=4, seq_len=128)
    gap = next(n for n in range(1000, 3000, 10) if not _buildable(build, n))  # head_dim-4 tiny shapes have gaps
    cfg = nearest_buildable(build, gap)
    n = count_params(cfg)["non_embedding"]
    assert abs(n / gap - 1) <= GAP_SHIFT + 0.05
    with pytest.raises(ConfigError, match="^n_params"):
        nearest_buildable(build, 10.0)  # nothing within 15% of 10 params


def _buildable(build, n) -> bool:
    try:
        build(n)
        return True
    except ConfigError:
        return False


def test_6n_total_budgets_count_all_params(small):
    spec = load_spec(small, ["budgets.convention='6N_total'"])
    assert spec.budgets.param_count == "total"
    runs = design(spec).runs
    for budget in spec.budgets.resolved():
        iso = [r for r in runs if r.budget == budget and r.tags["kind"] == "isoflop"]
        totals = sorted(r.N_total for r in iso)
        assert totals[0] < n_opt(spec, budget) < totals[-1]  # the prior is in total params
        for r in iso:
            assert r.tokens_per_param == pytest.approx(r.D / r.N_total)
            assert 6 * r.N_total * r.D == pytest.approx(r.flops, rel=1e-9)
