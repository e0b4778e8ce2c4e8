"""Every option of every `scaling` subcommand says what it is for."""

import argparse

from scaling.cli import build_parser


def options_without_help(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("scaling",)) -> list[str]:
    """'scaling sub --option' for every argument of every (sub)parser that has no help text."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += options_without_help(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(" ".join((*path, *(action.option_strings or [action.dest]))))
    return missing


def test_every_cli_option_has_help_text():
    assert options_without_help(build_parser()) == []


def test_the_check_sees_a_missing_help_text():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    sub.add_parser("x").add_argument("--bare")
    assert options_without_help(parser) == ["scaling x --bare"]


def test_every_package_registers_its_commands():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "train", "data", "sweep", "fit", "recommend"} <= set(commands)
