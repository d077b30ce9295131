"""User-facing errors: the CLI prints these as one clear message, never a traceback."""

from __future__ import annotations


class MtkdError(Exception):
    """A problem the user can fix (bad input, bad config, wrong path).

    The message names where the problem is (file, line, column or key), what was
    expected, and how to fix it.
    """


class DataError(MtkdError):
    """Bad raw data: a file, line or column that cannot be read as the schema says."""


class ConfigError(MtkdError):
    """A YAML file or option that does not validate."""
