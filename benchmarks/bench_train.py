"""Training throughput of the trainer's step against a minimal nanoGPT-style eager loop, in one process.

    python benchmarks/bench_train.py            # ~1M and ~10M non-embedding params, 7 rounds
    python benchmarks/bench_train.py --quick    # 2 rounds of 2 steps

(a) `scaling.train.train_step` on `scaling.model.build_model` with `scaling.train.build_optimizer` (the code
`train()` runs), and (b) a nanoGPT-style GPT (defined below: LayerNorm, GELU MLP, SDPA attention, tied head) with a
plain AdamW, train on the same batches. Rounds alternate (a, b) and (b, a); the report gives median tokens/s, the
ratio (a)/(b), and (a)'s achieved model FLOP/s (the "exact" convention: every matmul weight plus full-square
attention, x3 for forward + backward) over a fp32 matmul peak measured in the same process (median of 2048^2
matmuls). Targets on a 2-core CPU: ratio >= 1.0 at both sizes, FLOP/s / peak >= 0.6 at ~10M.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from scaling.accounting import count_params, flops_per_token
from scaling.config import ModelConfig
from scaling.model import build_model
from scaling.train import build_optimizer, train_step

SHAPES = {"~1M": (4, 128), "~10M": (6, 384)}  # (n_layer, d_model); ctx 256, vocab 256, 4 / 6 heads


# ---------------------------------------------------------------------------------------------------- (b) reference


class RefAttention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class RefBlock(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.attn = RefAttention(d, n_heads)
        self.fc, self.fc_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class RefGPT(nn.Module):
    def __init__(self, n_layer: int, d: int, n_heads: int, seq_len: int, vocab: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(RefBlock(d, n_heads) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def ref_step(model, optimizer, x, y) -> float:
    loss = model(x, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


# ---------------------------------------------------------------------------------------------------- measuring


def matmul_peak(n: int = 2048, repeats: int = 7) -> float:
    """Median fp32 FLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def bench_shape(name: str, n_layer: int, d: int, batch: int, rounds: int, steps: int) -> dict:
    cfg = ModelConfig(n_layer=n_layer, d_model=d, n_heads=d // 64 if d >= 256 else 4, seq_len=256, vocab_size=256)
    torch.manual_seed(0)
    ours = build_model(cfg)
    ours_opt = build_optimizer(ours, 1e-3, 0.1, (0.9, 0.95))
    ref = RefGPT(n_layer, d, cfg.n_heads, cfg.seq_len, cfg.vocab_size)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    windows = [torch.randint(0, 256, (batch, cfg.seq_len + 1), generator=gen) for _ in range(steps)]
    batches = [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in windows]
    tokens = batch * cfg.seq_len * steps

    def run_ours():
        for x, y in batches:
            train_step(ours, ours_opt, [(x, y)], 1e-3, 1.0).item()

    def run_ref():
        for x, y in batches:
            ref_step(ref, ref_opt, x, y)

    run_ours(), run_ref()  # warm up both
    rates = {"ours": [], "ref": []}
    for r in range(rounds):
        order = [("ours", run_ours), ("ref", run_ref)]
        for key, fn in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            rates[key].append(tokens / (time.perf_counter() - t0))
    ours_rate, ref_rate = statistics.median(rates["ours"]), statistics.median(rates["ref"])
    return {
        "name": name,
        "N": count_params(cfg)["non_embedding"],
        "ours": ours_rate,
        "ref": ref_rate,
        "ratio": statistics.median(a / b for a, b in zip(rates["ours"], rates["ref"])),
        "flops": ours_rate * flops_per_token(cfg, "exact"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 steps")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per timed block")
    p.add_argument("--batch", type=int, default=8, help="sequences of 256 tokens per step")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x 256 tokens")
    peaks = [matmul_peak()]
    results = []
    for name, (n_layer, d) in SHAPES.items():
        results.append(bench_shape(name, n_layer, d, args.batch, args.rounds, args.steps))
        peaks.append(matmul_peak())
    peak = statistics.median(peaks)
    print(f"fp32 matmul peak (2048^2, median): {peak / 1e9:.0f} GFLOP/s")
    print(f"{'size':>6} {'N (non-emb)':>12} {'ours tok/s':>11} {'ref tok/s':>10} {'ratio':>6} {'GFLOP/s':>8} "
          f"{'/peak':>6}")
    for r in results:
        print(f"{r['name']:>6} {r['N']:>12,} {r['ours']:>11,.0f} {r['ref']:>10,.0f} {r['ratio']:>6.2f} "
              f"{r['flops'] / 1e9:>8.1f} {r['flops'] / peak:>6.2f}")
    ok = all(r["ratio"] >= 1.0 for r in results) and results[-1]["flops"] / peak >= 0.6
    print("targets (ratio >= 1.0 at both sizes, FLOP/s / peak >= 0.6 at ~10M):", "met" if ok else "not met")


if __name__ == "__main__":
    main()
