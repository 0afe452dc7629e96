"""Validation shared by every config dataclass: one clear message naming the field."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


class ConfigError(ValueError):
    """A bad setting. The CLI turns it into one line on stderr and exit code 2."""


def existing_folder(path: str | Path, what: str = "folder") -> Path:
    """`path` as a Path if it is a folder; else a ConfigError (a missing path, a file, or a
    name the system refuses, such as one too long)."""
    from pathlib import Path

    p = Path(path)
    try:
        ok = p.is_dir()
    except OSError as e:
        raise ConfigError(f"{what} {str(p)[:80]}: {e.strerror}") from None
    if not ok:
        raise ConfigError(f"{what} {p} does not exist or is not a folder")
    return p


def check_range(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> None:
    """A ConfigError unless `value` is a finite number within [lo, hi] (lo excluded if lo_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be <= {hi}, got {value!r}")


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    """A ConfigError unless `value` is a whole number (an int, not a bool) within [lo, hi]: a
    size or a count, which a float such as 2.5 or 2.0 would only break later, inside torch."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    check_range(name, value, lo=lo, hi=hi)


def check_bool(name: str, value: Any) -> None:
    """A ConfigError unless `value` is True or False (not 'no', 0 or None, read as a truth)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """A ConfigError listing the allowed values unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """'name: saved -> current' for every setting that differs between two config dicts
    (nested dicts by dotted name), for refusals that say what changed."""
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return [] if saved == current else [f"{prefix or 'value'}: {saved!r} -> {current!r}"]
    out = []
    for k in sorted(set(saved) | set(current), key=str):
        name = f"{prefix}.{k}" if prefix else str(k)
        out += differences(saved.get(k, "(absent)"), current.get(k, "(absent)"), name)
    return out
