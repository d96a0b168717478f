"""Which supervisor runs a pipeline: the ring one, or the broker one.

Its own module so the choice can name both ``supervisor`` and ``distributed`` while ``distributed``
(whose ``BrokerSupervisor`` extends ``Supervisor``) imports ``supervisor`` one way, with no cycle.
"""

from __future__ import annotations

from bizon_fast.config.models import PipelineConfig
from bizon_fast.engine.progress import Progress
from bizon_fast.engine.supervisor import Supervisor
from bizon_fast.errors import UserError


def make_supervisor(cfg: PipelineConfig, *, progress: Progress, log_file: str | None = None) -> Supervisor:
    """The ring supervisor, or the broker one when batches travel through Kafka or RabbitMQ."""
    if cfg.engine.queue.type in ("kafka", "rabbitmq"):
        # lazily: the broker machinery (leases, broker specs) costs a ring run nothing at startup
        from bizon_fast.engine.distributed import BrokerSupervisor

        return BrokerSupervisor(cfg, progress=progress, log_file=log_file)
    if cfg.engine.runner.config.role != "all":
        raise UserError(
            f"--role {cfg.engine.runner.config.role}: roles split a pipeline across machines through a broker; "
            f"set engine.queue.type: kafka or rabbitmq (it is {cfg.engine.queue.type})"
        )
    return Supervisor(cfg, progress=progress, log_file=log_file)
