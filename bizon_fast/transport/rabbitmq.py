"""RabbitMQ as the transport (pika): batches as persistent messages, acked after the checkpoint commit.

RabbitMQ has no partitions, so bizon-fast makes them: ``queue_name.0`` .. ``queue_name.{n-1}``, a split
always routed to the same one, so its batches stay in order. Consumer ``i`` reads queue ``i % n``;
the queues are ``x-single-active-consumer``, so when consumer machines run the same indexes one
reads and the other takes over if it dies. Unacknowledged messages of a dead consumer are requeued,
but not necessarily before the new active consumer gets later ones: the consumer gives back a batch that
arrives before its predecessors (see ``BrokerReceiver.redelivers_in_order``). ``prefetch`` (messages in
flight per consumer) is the backpressure.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

from bizon_fast.errors import UserError
from bizon_fast.transport.broker import (
    BrokerReceiver,
    BrokerSender,
    Frame,
    Received,
    decode_frame,
    encode_frame,
    skip_frame,
)

log = logging.getLogger("bizon_fast.rabbitmq")

#: RabbitMQ's default max message size is 128 MiB; large messages hurt its memory, so stay well below
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
QUEUE_ARGUMENTS = {"x-single-active-consumer": True}


def _pika() -> Any:
    try:
        import pika
    except ImportError as exc:  # pragma: no cover - a packaging problem, reported clearly
        raise UserError("engine.queue.type: rabbitmq needs pika: pip install 'bizon-fast[rabbitmq]'") from exc
    return pika


def queue_names(base: str, partitions: int) -> list[str]:
    return [f"{base}.{k}" for k in range(partitions)]


def queue_of(split_id: str, base: str, partitions: int) -> str:
    return f"{base}.{zlib.crc32(split_id.encode()) % partitions}"


def connect(url: str) -> Any:
    pika = _pika()
    try:
        params = pika.URLParameters(url)
        params.heartbeat = 60
        params.blocked_connection_timeout = 300
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise UserError(f"engine.queue.config.queue: cannot connect to RabbitMQ at {url}: {exc!r}") from exc


def probe(url: str, where: str, base: str) -> str:
    """``bizon-fast check``: connect and look the first queue up passively (a run declares them, not this).

    ``where`` names the broker in messages (``host:port/vhost``): the url carries the password.
    """
    pika = _pika()
    try:
        params = pika.URLParameters(url)
        params.socket_timeout = params.blocked_connection_timeout = 5
        params.connection_attempts = 1
        conn = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise UserError(f"engine.queue.config.queue: cannot connect to RabbitMQ at {where}: {exc!r}") from None
    try:
        try:
            conn.channel().queue_declare(queue=f"{base}.0", passive=True)
            state = "exist"
        except pika.exceptions.ChannelClosedByBroker:
            state = "to be created"
    finally:
        conn.close()
    return f"{where}, queues {base}.* ({state})"


def declare_queues(url: str, base: str, partitions: int) -> None:
    conn = connect(url)
    try:
        channel = conn.channel()
        for name in queue_names(base, partitions):
            channel.queue_declare(queue=name, durable=True, arguments=QUEUE_ARGUMENTS)
    finally:
        conn.close()


class RabbitSender(BrokerSender):
    def __init__(self, url: str, base: str, partitions: int, max_message_bytes: int) -> None:
        pika = _pika()
        self.base = base
        self.partitions = partitions
        self.max_message_bytes = max_message_bytes
        self.conn = connect(url)
        self.channel = self.conn.channel()
        self.channel.confirm_delivery()  # basic_publish returns once the broker has the message
        self.props = pika.BasicProperties
        self.durable = pika.DeliveryMode.Persistent

    def send(self, key: str, frame: Frame, value: bytes) -> None:
        props = self.props(
            delivery_mode=self.durable,
            headers={"bf": encode_frame(frame), "split": frame.split_id, "seq": frame.seq},
        )
        self.channel.basic_publish("", queue_of(key, self.base, self.partitions), value, props, mandatory=True)

    def flush(self) -> None:
        """Publisher confirms make every ``send`` synchronous: nothing is left to wait for."""

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


class RabbitReceiver(BrokerReceiver):
    #: a takeover (single active consumer) may hand the standby a split's later messages before the dead
    #: consumer's unacknowledged earlier ones are requeued: e.g. a consumer that exits cancels first, and the
    #: queue activates the standby before the channel closes and gives back what it held
    redelivers_in_order = False

    def __init__(
        self, url: str, base: str, partitions: int, index: int, prefetch: int, job_filter: Callable[[Frame], bool]
    ) -> None:
        self.accept = job_filter
        self.conn = connect(url)
        self.channel = self.conn.channel()
        self.channel.basic_qos(prefetch_count=prefetch)
        self.queue = queue_names(base, partitions)[index % partitions]
        self.inbox: list[Received] = []
        self.channel.basic_consume(self.queue, self._on_message, auto_ack=False)

    def _on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        raw = (props.headers or {}).get("bf")
        frame = decode_frame(raw) if isinstance(raw, bytes) else skip_frame()
        if not self.accept(frame):
            frame = skip_frame()
        self.inbox.append(Received(frame, body, method.delivery_tag))

    def poll(self, timeout: float) -> list[Received]:
        if not self.inbox:
            self.conn.process_data_events(time_limit=timeout)
        out, self.inbox = self.inbox, []
        return out

    def ack(self, tokens: list[object]) -> None:
        if tokens:
            self.channel.basic_ack(delivery_tag=max(tokens), multiple=True)  # type: ignore[type-var]

    def requeue(self, tokens: list[object]) -> None:
        """One by one (never ``multiple``): messages between them are someone else's to acknowledge."""
        for tag in tokens:
            self.channel.basic_nack(delivery_tag=tag, multiple=False, requeue=True)

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()
