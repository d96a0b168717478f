"""What a destination can do, declared once: config validation, the engine and the CLI all read it."""

from __future__ import annotations

import msgspec


class DestinationCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a destination can do, declared once in its folder's ``config.py`` (and on its class).

    Config validation reads it without importing the destination's code; the engine and the CLI
    read it to say what delivery a run gets.
    """

    #: a replay of (split, seq range) after a crash cannot duplicate rows; else at-least-once
    effectively_once: bool = False
    #: takes bizon's wrapper-level ``destination.buffer_size`` (bizon's BigQuery destinations had it)
    wrapper_buffer_size: bool = False
    #: ``--reset`` can replace a stream's data (a destination that appends in every mode cannot)
    supports_reset: bool = True
    #: bizon's default ``destination.alias`` (the type tag sent to Datadog); None: the destination's name
    default_alias: str | None = None
    #: record schemas take ``clustering_keys`` (``streams:`` injects them only then)
    clustering_keys: bool = False
    #: ``write_disposition: merge`` (upsert by primary key at publish, ``deleted_flag``)
    merge: bool = False
    #: ``schema_evolution``: adds new columns and applies compatible widenings to an existing destination
    schema_evolution: bool = False

    def delivery(self) -> str:
        """The delivery a run to this destination gets, in the words the run's log and summary use."""
        if self.effectively_once:
            return "exactly-once (a replay after a crash rewrites the same rows)"
        return "at-least-once (replays after a crash may repeat rows)"


#: what an unknown destination (whose name validation rejects) is assumed to do
NO_CAPABILITIES = DestinationCapabilities()
