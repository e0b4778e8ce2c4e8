"""The `scaling` console command: a thin dispatcher that never names the packages built on top of `scaling`.

Each package registers its own subcommands through the entry-point group `scaling.commands` (see pyproject.toml):
an entry point is a function `register(subparsers)` that adds one or more subcommands, each with `func=handler`.
`scaling` itself registers `train` and `data prepare` (`scaling.commands`); `sweeps` adds `sweep plan|launch|status`,
`analysis` adds `fit`, `recommend` and `demo`.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from scaling.errors import ConfigError

COMMAND_GROUP = "scaling.commands"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered package's subcommands (in entry-point name order)."""
    parser = argparse.ArgumentParser(
        prog="scaling",
        description="Plan compute-optimal sweeps, train small GPT/Llama models, fit scaling laws, recommend a config.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registered = sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name)
    if not registered:  # running from a tree that was never installed: only this package's own commands
        from scaling import commands

        commands.register(sub)
    for ep in registered:
        ep.load()(sub)
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
