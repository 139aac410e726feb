"""Transports: how the worker reads and writes Kafka records, behind one small interface.

The worker needs little of a Kafka client: join the group with the single-active assignor, poll
batches of raw values per partition, pause/resume/seek partitions, ask where a partition ends,
commit offsets, and produce records with a way to learn, after a flush, which were acknowledged.
``Transport`` (``base``) is that interface; two implementations share it (``kafka.transport``
selects one):

``confluent`` (the default; module ``confluent``)
    Records are fetched and produced by librdkafka (confluent-kafka), which decodes them in C.
    Group membership and offset commits stay with a kafka-python consumer (module ``group``),
    because librdkafka's Python binding cannot take the custom assignor the detector needs
    (``io.assignor``).

``kafka-python`` (the pure-Python fallback; module ``kafka_python``)
    Everything through kafka-python, for where librdkafka cannot be installed: one consumer is
    both the group member and the fetcher.

Checkpoints are read back through kafka-python with either (``io.state_store``). Errors a retry
can cure (broker unreachable, buffer full, timeouts) are raised as ``TransportError``, whichever
client raised them.
"""

from __future__ import annotations

from ...settings import KafkaSettings
from .base import TP, Batch, Callback, Membership, MembershipLost, Transport, TransportError
from .confluent import CONFLUENT_MISSING, ConfluentTransport
from .kafka_python import KafkaPythonTransport


def make_transport(kafka: KafkaSettings, group_id: str, assignor) -> Transport:
    if kafka.transport == "kafka-python":
        return KafkaPythonTransport(kafka, group_id, assignor)
    return ConfluentTransport(kafka, group_id, assignor)


__all__ = ["CONFLUENT_MISSING", "TP", "Batch", "Callback", "ConfluentTransport",
           "KafkaPythonTransport", "Membership", "MembershipLost", "Transport", "TransportError",
           "make_transport"]
