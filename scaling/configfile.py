"""The one typed TOML / override loader and the one set of validators behind run configs and sweep specs.

`scaling.runconfig` (one run) and `sweeps.spec` (a sweep) both read TOML into plain dicts (`read_toml`), apply
`dotted.key=value` overrides whose values are TOML (`parse_value`, `set_dotted`), and build their dataclasses with
`build` (unknown keys, wrong types and non-finite numbers raise `ConfigError` naming the dotted field). Range checks
use the validators below, so a rule such as "a positive finite number" is written once.

Numbers: every float field must be finite unless its dataclass field carries `metadata={"allow_inf": True}` (e.g.
`train.divergence_factor = inf` turns the divergence check off); NaN is never accepted. Ints may be written as
integral floats (`1e6`), floats as ints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from pathlib import Path

from scaling.errors import ConfigError

# ------------------------------------------------------------------------------------------------ reading


def read_toml(path: str | os.PathLike, field: str = "config") -> dict:
    """The parsed TOML file; ConfigError naming `field` when it is missing, and naming the file when it is invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field, "an existing TOML file", str(path))
    return parse_toml(_read_text(path), str(path))


def parse_toml(text: str, source: str) -> dict:
    """Parse TOML text; ConfigError naming `source` (a file or preset) when it is invalid."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, f"valid TOML ({e})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "a UTF-8 text file", f"undecodable byte at offset {e.start}") from None


def parse_value(raw: str) -> object:
    """A TOML value (`3e-3`, `true`, `"x"`, `[1, 2]`, `inf`), or the raw text when it is not one (`x`, `/tmp/run`)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def split_override(item: str, example: str) -> tuple[list[str], object]:
    """`a.b.c=value` -> (["a", "b", "c"], parsed value); ConfigError (showing `example`) when it has no `=`."""
    if "=" not in item:
        raise ConfigError(item, f"an override of the form {example}")
    name, raw = item.split("=", 1)
    keys = name.strip().split(".")
    if not all(keys):
        raise ConfigError(item, f"an override of the form {example}", "an empty key")
    return keys, parse_value(raw.strip())


def set_dotted(raw: dict, keys: list[str], value: object) -> dict:
    """Set raw[k0][k1]...[kn] = value, creating tables on the way; return the innermost table.

    ConfigError naming the dotted prefix when a key on the way holds a value that is not a table.
    """
    table = raw
    for i, key in enumerate(keys[:-1]):
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(".".join(keys[: i + 1]), "a table of keys", table)
    table[keys[-1]] = value
    return table


# ------------------------------------------------------------------------------------------------ typed building


def build(cls: type, raw: object, prefix: str, *, skip: tuple[str, ...] = (), label: str = ""):
    """Instantiate dataclass `cls` from a table, checking keys and types; nested dataclass fields recurse.

    `None` values (JSON null) mean "not set": the field keeps its default. Fields named in `skip` are not read.
    An unknown key's message lists the known ones ("one of the <label> keys [...]").
    """
    table = as_table(raw, prefix or "config")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(dotted, f"one of the {label + ' ' if label else ''}keys {list(fields)}", "unknown key")
        if value is None:
            continue
        allow_inf = fields[key].metadata.get("allow_inf", False)
        kwargs[key] = coerce(value, hints[key], dotted, allow_inf=allow_inf)
    return cls(**kwargs)


def as_table(value: object, name: str) -> dict:
    """`value` when it is a table (dict); else ConfigError naming `name` (e.g. `train = 5` in a spec)."""
    if not isinstance(value, dict):
        raise ConfigError(name, "a table of keys", value)
    return value


def coerce(value: object, hint: object, name: str, *, allow_inf: bool = False) -> object:
    """Check `value` against a type hint (bool, int, float, str, list[...], dict, a dataclass, `X | None`)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
    if dataclasses.is_dataclass(hint):
        return build(hint, value, name)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list) or not value:
            raise ConfigError(name, "a non-empty list", value)
        (item,) = typing.get_args(hint)
        return [coerce(v, item, f"{name}[{i}]", allow_inf=allow_inf) for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        return dict(as_table(value, name))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, "true or false", value)
        return value
    if isinstance(value, bool):
        raise ConfigError(name, "an integer" if hint is int else f"a {hint.__name__}", value)
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise ConfigError(name, "an integer", value)
        return value
    if hint is float:
        if not isinstance(value, (int, float)):
            raise ConfigError(name, "a number", value)
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            raise ConfigError(name, "a finite number" if not allow_inf else "a number (not NaN)", value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, "a string", value)
        return value
    raise AssertionError(f"unhandled type {hint} for {name}")  # pragma: no cover


# ------------------------------------------------------------------------------------------------ validators


def is_number(value: object) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive(value: object, name: str, what: str = "a positive number") -> None:
    """A finite number > 0."""
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ConfigError(name, what, value)


def non_negative(value: object, name: str, what: str = "a non-negative number") -> None:
    """A finite number >= 0."""
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise ConfigError(name, what, value)


def positive_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, "a positive integer", value)


def non_negative_int(value: object, name: str, what: str = "a non-negative integer") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(name, what, value)


def in_range(value: object, lo: float, hi: float, name: str, *, lo_open: bool = False, hi_open: bool = True) -> None:
    """A finite number in [lo, hi) by default; `lo_open` / `hi_open` choose the ends."""
    ok = is_number(value) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(name, f"a number in {left}{lo}, {hi}{right}", value)


def at_least(value: object, lo: float, name: str, what: str | None = None, *, allow_inf: bool = False) -> None:
    """A number >= lo (finite unless `allow_inf`)."""
    ok = is_number(value) and not math.isnan(value) and (allow_inf or math.isfinite(value)) and value >= lo
    if not ok:
        raise ConfigError(name, what or f"a number >= {lo:g}", value)


def one_of(value: object, choices: tuple, name: str) -> None:
    if value not in choices:
        raise ConfigError(name, f"one of {choices}", value)


def writable_dir(path: str | os.PathLike, name: str) -> Path:
    """Check, writing nothing, that `path` is a folder we can write to or can create.

    ConfigError naming `name` when it is a file (or is below one), or when the folder (or its nearest existing
    parent, where it would be created) is not writable.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(name, "a folder (this path is a file)", str(path))
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(name, f"a folder path (its parent {existing} is a file)", str(path))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(name, f"a writable folder ({existing} is read-only for this user)", str(path))
    return path
