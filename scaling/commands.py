"""The `scaling train` and `scaling data prepare` subcommands (registered by scaling/cli.py).

    scaling train [CONFIG.toml] [section.key=value ...] out=DIR
    scaling data prepare [--corpus stdlib] [--tokenizer bytes|bpe] [--vocab-size N]

`python -m scaling.commands train ...` runs the same without the other packages' commands (used under torchrun).
"""

from __future__ import annotations

import argparse
import sys

from scaling.errors import ConfigError
from scaling.tokenizers import TOKENIZERS


def register(subparsers) -> None:
    """Add `train` and `data` to the `scaling` command's subparsers."""
    p = subparsers.add_parser(
        "train",
        help="train one model for one budget (resumes if out=DIR holds checkpoints)",
        description="Train one model. Arguments: an optional TOML config, then section.key=value overrides "
        "(values parsed as TOML: lr=3e-3, compile=true, corpus=x), and out=DIR. Example: "
        "scaling train model.n_layer=2 train.tokens=2e5 out=runs/tiny",
    )
    p.add_argument("args", nargs="*", metavar="[CONFIG.toml] key=value", help="config file and overrides")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $SCALING_NUM_THREADS)")
    p.set_defaults(func=run_train)

    data = subparsers.add_parser("data", help="prepare corpora")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    prep = data_sub.add_parser("prepare", help="tokenize a corpus once into the cache and print a summary")
    prep.add_argument("--corpus", default="stdlib", help="'stdlib', a text file or folder, or hf:<name>[:config]")
    prep.add_argument("--tokenizer", default="bytes", choices=TOKENIZERS,
                      help="bytes (vocab 256, no extra needed) or bpe (needs the bpe extra); default bytes")
    prep.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size (default 4096)")
    prep.add_argument("--cache-dir", default=None, help="cache root (default $SCALING_CACHE or ~/.cache/scaling)")
    prep.set_defaults(func=run_data_prepare)


def split_train_args(args: list[str]) -> tuple[str | None, list[str]]:
    """The config path (a first argument without '=') and the key=value overrides."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    for a in args[1:]:
        if "=" not in a:
            raise ConfigError(a, "key=value (a config file may only come first)")
    return None, list(args)


def run_train(args: argparse.Namespace) -> int:
    from scaling.train import load_run_config, train

    path, overrides = split_train_args(args.args)
    cfg = load_run_config(path, overrides)
    summary = train(cfg, progress=not args.quiet, num_threads=args.threads)
    if not args.quiet or summary["status"] != "completed":
        print(format_summary(summary))
    return 0 if summary["status"] == "completed" else 1


def format_summary(s: dict) -> str:
    """A few lines with units: status, params, tokens, FLOPs, losses, speed."""
    p = s["params"]
    lines = [
        f"status: {s['status']}",
        f"params: N = {p['non_embedding']:,} non-embedding ({p['total']:,} total)",
        f"trained: {s['steps']} steps, D = {s['tokens']:,} tokens, C = {s['flops']:.4g} FLOPs ({s['flop_convention']})",
        f"loss: val {_num(s['val_loss'])}, train {_num(s['train_loss'])} (nats/token)",
        f"speed: {s['tokens_per_s']:,.0f} tokens/s, wall time {s['wall_time_s']:.1f} s",
    ]
    if s.get("error"):
        lines.append(f"error: {s['error'].strip().splitlines()[0]}")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def run_data_prepare(args: argparse.Namespace) -> int:
    from scaling.data import describe, prepare_corpus

    corpus = prepare_corpus(args.corpus, args.tokenizer, cache_dir=args.cache_dir, vocab_size=args.vocab_size)
    print(describe(corpus))
    print(f"cache: {corpus.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m scaling.commands ...`: these subcommands alone, with the CLI's error handling."""
    parser = argparse.ArgumentParser(prog="python -m scaling.commands")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the trainer has written a checkpoint first
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
