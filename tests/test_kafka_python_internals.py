"""The kafka-python internals this project reaches into, held to the shape its code assumes.

``io.transport.kafka_python.release_parked_fetches`` patches the fetcher's in-line slot (a
kafka-python 3.0 bug: records of a paused partition are parked, and given back on resume only
when the slot is ``None``, which a drained slot never is), the transport's ``_close_producer``
force-closes the producer's sender thread, and ``io.transport.group.GroupMember.membership``
asks the coordinator whether the member's generation is current and its session alive (a member
frozen past its session must not write a checkpoint). pyproject pins kafka-python to the releases these were read from
(``>=3.0,<3.1``); a release that moves or fixes one of them fails here, before the worker stalls
or hangs in production. (``test_transport``'s pause/resume test shows the stall itself: it fails
without the patch.)
"""

import inspect
import textwrap

import pytest
from kafka import ConsumerRebalanceListener
from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.base import BaseCoordinator
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.coordinator.heartbeat import Heartbeat
from kafka.producer.sender import Sender

from detector.io.clients import make_consumer, make_producer
from detector.io.transport.kafka_python import release_parked_fetches
from detector.settings import KafkaSettings


def code_of(function) -> str:
    """The function's source with whitespace runs collapsed, for matching statements."""
    return " ".join(textwrap.dedent(inspect.getsource(function)).split())


def test_the_fetcher_restores_parked_records_only_into_an_empty_slot():
    code = code_of(Fetcher.fetched_records)
    # Parking: a drained-or-not slot of a paused partition moves to _paused_partition_records.
    assert ("self._paused_partition_records[tp] = self._next_partition_records "
            "self._next_partition_records = None") in code
    # Restoring: only when the slot is None, not when it is merely empty (the bug patched).
    assert ("if self._next_partition_records is None: "
            "for tp in list(self._paused_partition_records):") in code
    # A slot is "drained" when false: what release_parked_fetches tests with ``not current``.
    assert "def __bool__(self): return self.record_iterator is not None" in code_of(
        Fetcher.PartitionRecords)


def test_the_producer_sender_can_be_force_closed():
    assert list(inspect.signature(Sender.force_close).parameters) == ["self"]
    assert callable(getattr(Sender, "join", None))         # a thread


def test_the_coordinator_says_when_membership_is_current_and_when_it_was_lost():
    # GroupMember.membership(): a generation only while the group is stable ...
    code = code_of(BaseCoordinator.generation_if_stable)
    assert "if self.state is not MemberState.STABLE: return None return self._generation" in code
    # ... and no answer from the coordinator for a session timeout is a possible eviction.
    assert list(inspect.signature(Heartbeat.session_timeout_expired).parameters) == ["self"]
    assert "self.last_receive" in code_of(Heartbeat.session_timeout_expired)
    # A listener hears a forced eviction as on_partitions_lost, not on_partitions_revoked.
    assert callable(ConsumerRebalanceListener.on_partitions_lost)
    code = code_of(ConsumerCoordinator._on_join_prepare_async)
    assert "if self._generation.is_lost():" in code and "'on_partitions_lost', lost" in code


@pytest.mark.kafka
def test_a_consumer_and_a_producer_carry_the_attributes_the_code_reaches(broker):
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    consumer = make_consumer(kafka, None)
    producer = make_producer(kafka)
    try:
        fetcher = consumer._fetcher
        assert isinstance(fetcher, Fetcher)
        assert fetcher._next_partition_records is None
        assert fetcher._paused_partition_records == {}
        release_parked_fetches(consumer)                    # nothing parked: a no-op
        assert fetcher._next_partition_records is None
        assert isinstance(producer._sender, Sender)
        assert isinstance(consumer._coordinator, ConsumerCoordinator)
        assert isinstance(consumer._coordinator.heartbeat, Heartbeat)
    finally:
        consumer.close()
        producer.close(timeout=5)
