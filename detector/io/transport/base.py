"""The interface the worker and the notifier use to read and write Kafka records (``Transport``),
and the small types it speaks in: a topic partition, a batch, a group membership, a retryable
error and a refused commit.

Offsets are always "next to read". See the package docstring for the two implementations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple


class TransportError(Exception):
    """A Kafka operation failed in a way a retry may cure."""


class MembershipLost(TransportError):
    """The group refused a commit because it has moved on without this member: the member was
    evicted (its session expired while it stalled) or a rebalance is under way, and the
    partitions may be another member's now. Retrying the commit cannot cure it; polling does,
    by rejoining the group (so a caller that treats it as any ``TransportError`` and polls on,
    as the notifier does, recovers; the worker also drops its state)."""


class Membership(NamedTuple):
    """This member's place in the group: the group generation it joined and its member id."""

    generation: int
    member_id: str


class TP(NamedTuple):
    """A topic partition. Equal to (and hashes like) kafka-python's ``TopicPartition``."""

    topic: str
    partition: int


@dataclass(slots=True)
class Batch:
    """The records one poll returned for one partition, in offset order."""

    tp: TP
    values: list[bytes]
    offsets: list[int]


Callback = Callable[[set[TP]], None]


class Transport(ABC):
    """The interface the worker uses (see the module docstring). Offsets are "next to read"."""

    name = ""

    @abstractmethod
    def join(self, topics: list[str], on_assigned: Callback, on_revoked: Callback,
             on_lost: Callback | None = None) -> None:
        """Subscribe as a member of the worker's group; the callbacks get the partitions.

        ``on_lost`` gets the partitions taken from a member the group had already moved on from
        (evicted): they are not this member's to save or commit any more. Without it they go to
        ``on_revoked``."""

    @abstractmethod
    def membership(self) -> Membership | None:
        """This member's membership while it may act for the group: joined, the group not
        rebalancing, and the group's coordinator heard from within the session timeout. ``None``
        otherwise: evicted, rejoining, or silent long enough (a stall) that the group may have
        given its partitions to another member without its knowing yet."""

    @abstractmethod
    def poll(self, timeout_s: float) -> list[Batch]:
        """The records fetched since the last poll, a batch per partition; waits up to
        ``timeout_s`` for a first one."""

    @abstractmethod
    def pause(self, tps: Iterable[TP]) -> None:
        """No records of these partitions until they are resumed (none is lost)."""

    @abstractmethod
    def resume(self, tps: Iterable[TP]) -> None:
        """Records of these partitions again, from where they stopped or were sought to."""

    @abstractmethod
    def paused(self) -> set[TP]:
        """The partitions paused now."""

    @abstractmethod
    def assignment(self) -> set[TP]:
        """The partitions the group gives this member now."""

    @abstractmethod
    def seek(self, tp: TP, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""

    @abstractmethod
    def seek_to(self, tp: TP, where: str) -> None:
        """``earliest``, ``latest``, or ``committed`` (the group's offset; earliest if none)."""

    @abstractmethod
    def offset_for_time(self, tp: TP, millis: int) -> int | None:
        """The offset of the first record stamped at or after ``millis``, or ``None``."""

    @abstractmethod
    def highwater(self, tp: TP) -> int | None:
        """The end of the partition as of the last fetch (no request), or ``None``."""

    @abstractmethod
    def end_offset(self, tp: TP) -> int | None:
        """The end of the partition, asked of the broker."""

    @abstractmethod
    def position(self, tp: TP) -> int | None:
        """The next offset this member will read."""

    @abstractmethod
    def commit(self, offsets: dict[TP, int], asynchronous: bool = False) -> None:
        """Commit these next offsets for the group (without waiting, in a callback). Raises
        ``MembershipLost`` when the group refuses them because it has moved on."""

    @abstractmethod
    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]]) -> Any:
        """Start a write (``acks=all``); returns a handle for ``delivery_error``."""

    @abstractmethod
    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every started write to be acknowledged or fail."""

    @abstractmethod
    def delivery_error(self, handle: Any) -> Exception | None:
        """After ``flush``: ``None`` when the write was acknowledged, else why not."""

    @abstractmethod
    def rebuild_producer(self) -> None:
        """Replace a producer that keeps failing (an idempotent producer can fail for good)."""

    @abstractmethod
    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group; give unacknowledged writes ``timeout_s`` to complete."""
