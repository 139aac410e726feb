"""Single-active assignment: one member of the group holds every partition, the others stand by.

The detector judges all OTP mail together, so one member of the consumer group holds every
partition of both input topics and the others are hot standbys (``SingleActiveAssignor``): a
standby takes over in one rebalance when the active member leaves or dies, restoring the active
member's last checkpoint. The assignment is sticky: a member joining never takes the partitions
from a healthy active member.

Risky here: this is the only code that decides which member judges. An assignment that gives
partitions to two members splits the judgement (each sees part of the traffic); one that gives
them to none stops the detector. It runs on the group leader, inside kafka-python's join.
"""

from __future__ import annotations

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import (ConsumerProtocolAssignment,
                                              ConsumerProtocolSubscription)


class SingleActiveAssignor(AbstractPartitionAssignor):
    """Every partition to one member (sticky), none to the others: active/standby.

    Each member says in its subscription's user data whether it holds partitions now; the group
    leader keeps that member active if it is still there, otherwise picks the first member by id.
    """

    name = "otp-single-active"
    version = 0

    def __init__(self) -> None:
        self.active = False

    def metadata(self, topics):
        return ConsumerProtocolSubscription(self.version, sorted(topics),
                                            b"active" if self.active else b"standby")

    def assign(self, cluster, members):
        ordered = sorted(members, key=lambda m: m.member_id)
        chosen = next((m for m in ordered if _user_data(m) == b"active"), ordered[0])
        topics = sorted({t for m in members for t in m.metadata.topics})
        owned = []
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                owned.append((topic, sorted(partitions)))
        return {m.member_id: ConsumerProtocolAssignment(
                    self.version, owned if m is chosen else [], b"")
                for m in members}

    def on_assignment(self, assignment, generation=None):
        self.active = bool(assignment.partitions())


def _user_data(member) -> bytes:
    data = getattr(member.metadata, "user_data", b"")
    return bytes(data) if isinstance(data, (bytes, bytearray)) else b""
