"""The project's one exception root and the dead-letter vocabulary, beside the records they describe.

`schemas/` imports nothing of ours, so the root lives here where every layer can reach it: catch
`FloodlightError` to catch anything Floodlight raises on purpose. `DeadLetterClass` and `Stage` are the
only values `DeadLetter.error_class` / `DeadLetter.stage` take (schemas/DeadLetter.avsc documents the
same lists; a unit test keeps them in step). They stay Avro strings on the wire so old readers keep working.
"""

from __future__ import annotations

from enum import StrEnum


class FloodlightError(Exception):
    """Root of every error Floodlight raises on purpose (not bugs, not library errors)."""


class DeadLetterClass(StrEnum):
    """Why a record went to floodlight.dlq (the machine-readable `error_class`)."""

    SCHEMA = "schema"  # not a record of the topic's schema
    DECODE = "decode"  # media that does not decode
    ENCODE = "encode"  # media that does not encode
    OVERSIZED = "oversized"  # over a size limit
    INVALID = "invalid"  # decodes, but breaks a rule (ids, timing, ...)
    IMPLAUSIBLE = "implausible"  # a QoE beacon with values no real player sends
    PUBLISH = "publish"  # Kafka refused or failed to take it


class Stage(StrEnum):
    """The role that gave up on a record (the `stage` of a DeadLetter)."""

    INGEST = "ingest"
    ENCODER = "encoder"
    PACKAGER = "packager"
    QOE = "qoe"
    API = "api"
