"""Loading configuration files: a TOML file whose tables configure the core and the shells.

The core's tables are ``[clock]``, ``[join]``, ``[otp]``, ``[model]`` and ``[alerts]``
(``detector.core.config``). Any other table is an error, so a misspelt table name fails loudly
instead of silently running on defaults.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .core.config import ConfigError, DetectorConfig

CORE_TABLES = ("clock", "join", "otp", "model", "alerts", "slices")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error raises ConfigError naming it."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from None


def detector_config(data: dict[str, Any], shell_tables: tuple[str, ...] = ()) -> DetectorConfig:
    """The core's config from a parsed file; tables of the shells in ``shell_tables`` are skipped."""
    unknown = [t for t in data if t not in CORE_TABLES and t not in shell_tables]
    if unknown:
        known = ", ".join(CORE_TABLES + shell_tables)
        raise ConfigError(f"unknown table [{unknown[0]}] (known: {known})")
    return DetectorConfig.from_mapping({t: v for t, v in data.items() if t in CORE_TABLES})


def load_detector_config(path: str | Path | None) -> DetectorConfig:
    return DetectorConfig() if path is None else detector_config(read_toml(path))
