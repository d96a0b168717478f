"""Which supervisor runs a pipeline: one with the ring's dispatch part, or one with the broker's.

Its own module so the choice can name both ``supervisor`` and ``distributed`` while neither imports
the other: the supervisor composes whichever dispatch part it is given.
"""

from __future__ import annotations

from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.engine.progress import Progress
from bizon_fast.engine.supervisor import Supervisor
from bizon_fast.errors import UserError


def make_supervisor(
    cfg: PipelineConfig,
    *,
    progress: Progress,
    log_file: str | None = None,
    log_format: str = "text",
    log_to_stderr: bool = False,
) -> Supervisor:
    """A supervisor with the ring's dispatch part, or the broker's when batches travel through Kafka or RabbitMQ.

    ``log_format`` (text or json) and ``log_to_stderr`` travel to every worker, so the whole run logs alike.
    """
    if cfg.engine.queue.type in ("kafka", "rabbitmq"):
        # lazily: the broker machinery (leases, broker specs) costs a ring run nothing at startup
        from bizon_fast.engine.distributed import BrokerDispatch

        return Supervisor(
            cfg,
            progress=progress,
            log_file=log_file,
            log_format=log_format,
            log_to_stderr=log_to_stderr,
            dispatch=BrokerDispatch,
        )
    if cfg.engine.runner.config.role != "all":
        raise UserError(
            f"--role {cfg.engine.runner.config.role}: roles split a pipeline across machines through a broker; "
            f"set engine.queue.type: kafka or rabbitmq (it is {cfg.engine.queue.type})"
        )
    return Supervisor(cfg, progress=progress, log_file=log_file, log_format=log_format, log_to_stderr=log_to_stderr)
