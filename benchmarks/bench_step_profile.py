"""Where a training step's CPU time goes for the smallest and largest model of a sweep preset: attention, matmuls,
and the rest (embeddings, norms, GELU, the loss, the optimizer), measured with torch.profiler in one process.

    python benchmarks/bench_step_profile.py                 # the tiny-cpu preset (what `scaling demo` trains)
    python benchmarks/bench_step_profile.py --preset X.toml --steps 20

Each model trains `steps` optimizer steps of the trainer's own `train_step` (one torch thread, the preset's batch and
context) under the profiler, after 3 warm-up steps; self CPU time of every operator is put into one of three
classes: attention (the scaled-dot-product kernels, forward and backward), matmuls (mm / addmm / bmm / linear and
their backward) and the rest. It also prints tokens/s with and without the profiler. It then times, per shape, the
attention paths torch offers on a CPU (the fused flash kernel and the unfused math kernel), forward + backward,
alternating rounds, medians: the model uses the faster one, and this shows by how much.

With `--versus OTHER` (a preset or spec file, e.g. the demo's previous regime) it also times, at the smallest and
largest width of the preset, a training step of each preset's model settings (context, heads, batch in sequences)
in alternating rounds, and prints the median tokens/s of both and their ratio (this preset / OTHER).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from scaling.config import ModelConfig
from scaling.model import build_model
from scaling.train import build_optimizer, train_step
from sweeps.grid import plan
from sweeps.spec import load_spec

ATTENTION = ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax")
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")


def op_class(name: str) -> str:
    """attention / matmul / rest for one profiler operator name."""
    if any(key in name for key in ATTENTION):
        return "attention"
    if any(name == key or name.startswith(key + "_") for key in MATMUL):
        return "matmul"
    return "rest"


def warmed_up(model_cfg, batch_size: int):
    """A model of `model_cfg` with its AdamW and one random batch, after 3 warm-up training steps."""
    torch.manual_seed(0)
    model = build_model(model_cfg)
    optimizer = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
    x, y = (torch.randint(0, model_cfg.vocab_size, (batch_size, model_cfg.seq_len)) for _ in range(2))
    for _ in range(3):
        train_step(model, optimizer, [(x, y)], 1e-3)
    return model, optimizer, x, y


def step_shares(model_cfg, batch_size: int, steps: int) -> tuple[dict[str, float], float, float]:
    """Shares of self CPU time by class, and tokens/s without and with the profiler."""
    model, optimizer, x, y = warmed_up(model_cfg, batch_size)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, [(x, y)], 1e-3)
    plain = batch_size * model_cfg.seq_len * steps / (time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, optimizer, [(x, y)], 1e-3)
        profiled = batch_size * model_cfg.seq_len * steps / (time.perf_counter() - t0)
    totals = {"attention": 0.0, "matmul": 0.0, "rest": 0.0}
    for event in prof.key_averages():
        totals[op_class(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values())
    return {k: v / whole for k, v in totals.items()}, plain, profiled


def attention_paths(batch: int, heads: int, seq: int, head_dim: int, rounds: int = 5) -> dict[str, float]:
    """Median forward + backward milliseconds of each CPU attention path at one shape (alternating rounds)."""
    def flash(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def math_path(q, k, v):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    paths = {"flash (fused)": flash, "math (unfused)": math_path}
    times = {name: [] for name in paths}
    q, k, v = (torch.randn(batch, heads, seq, head_dim, requires_grad=True) for _ in range(3))
    for r in range(rounds):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            fn = paths[name]
            fn(q, k, v).sum().backward()
            t0 = time.perf_counter()
            for _ in range(10):
                fn(q, k, v).sum().backward()
            times[name].append((time.perf_counter() - t0) / 10 * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def tokens_per_s(model_cfg, batch_size: int, steps: int) -> float:
    """Training tokens/s of `steps` optimizer steps after 3 warm-up steps (one thread, random tokens)."""
    model, optimizer, x, y = warmed_up(model_cfg, batch_size)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, [(x, y)], 1e-3, 1.0)
    return batch_size * model_cfg.seq_len * steps / (time.perf_counter() - t0)


def compare_regimes(preset: str, other: str, widths: list[int], steps: int, rounds: int = 5) -> None:
    """Median tokens/s at each width under both presets' model settings (alternating rounds), and the ratio."""
    regimes = {}
    for name in (preset, other):
        spec = load_spec(name)
        batch = plan(spec)[0].batch_size
        regimes[name] = (spec.model, batch)
    for width in widths:
        rates = {name: [] for name in regimes}
        for r in range(rounds):
            for name in (list(regimes) if r % 2 == 0 else list(regimes)[::-1]):
                model, batch = regimes[name]
                heads = model.n_heads if model.n_heads and width % model.n_heads == 0 else 1
                cfg = ModelConfig(family=model.family, n_layer=model.n_layer, d_model=width, n_heads=heads,
                                  seq_len=model.seq_len, vocab_size=256)
                rates[name].append(tokens_per_s(cfg, batch, steps))
        med = {name: statistics.median(v) for name, v in rates.items()}
        print(f"d_model {width}: " + ", ".join(
            f"{name} (seq {regimes[name][0].seq_len}, {regimes[name][0].n_heads} heads, batch {regimes[name][1]}) "
            f"{med[name]:,.0f} tokens/s" for name in regimes) + f"; ratio {med[preset] / med[other]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-cpu", help="sweep preset or spec file (default tiny-cpu)")
    parser.add_argument("--steps", type=int, default=20, help="profiled optimizer steps per model (default 20)")
    parser.add_argument("--versus", metavar="OTHER", help="also compare tokens/s with another preset's model "
                        "settings at this preset's smallest and largest width")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = plan(load_spec(args.preset))
    by_size = sorted(runs, key=lambda r: r.N)
    if args.versus:
        widths = sorted({by_size[0].shape["d_model"], by_size[len(by_size) // 2].shape["d_model"],
                         by_size[-1].shape["d_model"]})
        compare_regimes(args.preset, args.versus, widths, args.steps)
    for label, run in (("smallest", by_size[0]), ("largest", by_size[-1])):
        cfg = ModelConfig.from_dict(run.config["model"])
        shares, plain, profiled = step_shares(cfg, run.batch_size, args.steps)
        print(f"{label}: N = {run.N:,} ({cfg.n_layer} x {cfg.d_model}, {cfg.n_heads} heads, seq {cfg.seq_len}, "
              f"batch {run.batch_size}): {plain:,.0f} tokens/s ({profiled:,.0f} under the profiler); "
              + ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()))
        paths = attention_paths(run.batch_size, cfg.n_heads, cfg.seq_len, cfg.d_model // cfg.n_heads)
        best = min(paths, key=paths.get)
        print("  attention fwd+bwd: " + ", ".join(f"{k} {v:.2f} ms" for k, v in paths.items())
              + f"; fastest {best} ({max(paths.values()) / paths[best]:.2f}x)")


if __name__ == "__main__":
    main()
