"""Exceptions that carry their own exit code, so the CLI can print one line instead of a traceback."""

from __future__ import annotations


class BizonFastError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UserError(BizonFastError):
    """Bad input from the user (config, paths, environment): exit 2, one line, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """The pipeline config is invalid. ``message`` names the YAML path and what was expected."""


class JobFailed(BizonFastError):
    """The job ran and failed (source or destination error, restart budget spent): exit 1."""

    exit_code = 1


class Interrupted(BizonFastError):
    """The user pressed Ctrl-C; the job was drained and committed, so the same command resumes it."""

    exit_code = 130
