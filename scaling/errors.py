"""Errors raised for bad user input, shared by `scaling`, `sweeps` and `analysis`."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input: names the field (or file) and what was expected."""

    def __init__(self, field: str, expected: str, got: object = None):
        self.field, self.expected, self.got = field, expected, got
        msg = f"{field}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg)
