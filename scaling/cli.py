"""The `scaling` console command. Each package registers its own subcommands:

- `scaling.commands`: `train`, `data prepare`
- `sweeps.cli`: `sweep plan|launch|status`, `demo`
- `analysis.cli`: `fit`, `recommend`
"""

from __future__ import annotations

import argparse
import sys

from scaling.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling",
        description="Plan compute-optimal sweeps, train small GPT/Llama models, fit scaling laws, recommend a config.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from analysis import cli as analysis_cli
    from scaling import commands
    from sweeps import cli as sweeps_cli

    sweeps_cli.register_demo(sub)
    commands.register(sub)
    sweeps_cli.register(sub)
    analysis_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
