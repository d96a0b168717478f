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
    """The job ran and failed (source or destination error, restart budget spent): exit 1.

    What failed travels with it, for the outcome bizon users read (``run --result-json``, bizon's status
    line: ``cli/result.py``): ``part`` is ``producer`` or ``consumer`` (a worker of that role failed the
    job: the source, or the transforms and destination), ``source`` (its check, before any job) or None;
    ``error`` the first failure as the worker reported it (``<ExceptionType>: <message>``); ``job_id`` and
    ``rows`` (committed for the job) once a job exists.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        part: str | None = None,
        error: str | None = None,
        job_id: str | None = None,
        rows: int | None = None,
    ) -> None:
        super().__init__(message)
        self.part = part
        self.error = error
        self.job_id = job_id
        self.rows = rows


class DataError(JobFailed):
    """The data itself makes a step fail, the same way on every run (a transform that raises on a record).

    Its own class so the supervisor can tell it apart: a rerun of the same command on the same data fails
    again, so the CLI does not suggest one (the job still resumes from its committed cursors once the
    transform is fixed: transforms are not part of the job's identity).
    """


class StepFailed(BizonFastError):
    """A step of the run failed for a reason a retry would not cure (a destination lock held past
    ``lock_timeout``, a full disk, a watermark that cannot be computed): exit 1, one line.

    Not a JobFailed: the supervisor raises JobFailed after recording the failure itself, while this
    one is raised from inside a step, so the supervisor records the job as failed when it passes by.
    Workers do not retry it (a wait that timed out would only be waited again).
    """

    exit_code = 1


class Interrupted(BizonFastError):
    """The user pressed Ctrl-C; the job was drained and committed, so the same command resumes it."""

    exit_code = 130
