"""Errors a user can act on.

Every error quadselect raises on purpose says what went wrong, where (file, line, config key) and what to do next.
The CLI prints these as one paragraph without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class QuadselectError(Exception):
    """Base class for errors caused by input or configuration rather than by a bug."""


class ConfigError(QuadselectError):
    """The run's YAML configuration is invalid."""


class InputDataError(QuadselectError):
    """An input file cannot be read at all (missing, unknown format, nothing usable in it)."""


class RunDirError(QuadselectError):
    """The run directory is locked by another process or holds artifacts from an incompatible run."""


class DiskFullError(QuadselectError):
    """The disk (or quota, or file-size limit) ran out while a stage was writing; earlier results are intact."""


class MemoryLimitError(QuadselectError):
    """Even the smallest batch of work does not fit in memory."""
