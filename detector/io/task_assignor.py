"""Whole-task, balanced, sticky, cooperative assignment for join workers (issue 14).

A join worker owns *tasks*: task *p* is partition *p* of the mail topic and partition *p* of the
DNS topic, which are co-partitioned (keyed by the same join key, same partition count; see
``io.copartition``). The join needs a delivery and the lookups it depended on in one process,
so a task is never split: a member given task *p* holds partition *p* of every topic it
subscribes to, and loses them together. Kafka's own assignors (range, round-robin, sticky,
cooperative-sticky) place partitions one by one and may put mail *p* and DNS *p* on different
members; ``TaskAssignor`` places tasks.

**Balanced and sticky.** With *T* tasks and *n* members, ``T % n`` members hold ``T // n + 1``
tasks and the others ``T // n``. The larger shares go to the members that own the most now (ties
by member id), each member keeps the lowest-numbered of its current tasks up to its share, and
the tasks left over (released, or owned by nobody) fill the members below their share in
member-id order, lowest task first. That moves the fewest tasks balance allows: a task moves only
from a member holding more than its share. Everything is sorted (members by id, tasks by
number), so the same input gives the same assignment whichever member leads.

**Cooperative (KIP-429, incremental cooperative rebalancing,
https://cwiki.apache.org/confluence/x/vAclBg).** The members keep consuming through a
rebalance; only the tasks that move stop. kafka-python 3.0 runs the protocol on the client
(``kafka/coordinator/consumer.py``, ``_on_join_complete_async``): a member compares the
assignment it receives with what it holds, revokes the difference, calls the listener's
``on_partitions_revoked`` with the partitions lost and ``on_partitions_assigned`` with the
partitions added only, and rejoins when it revoked anything. The assignor's side: a task moving
from member A to member B is left out of B's assignment in the first round (A's shrinks, A
revokes the task's partitions and rejoins); in the second round nobody holds it and B gets it.
So no partition is ever held by two members, and a member joining or leaving revokes nothing
from members whose tasks stay where they are. The second round moves nothing (``first_round``
gives each member a subset of its final share, and the plan over such holdings keeps every
one), so a rebalance ends in two rounds at most.

**What each member holds** comes from its subscription: the assignor encodes the partitions it
was last assigned in ``owned_partitions`` and that assignment's generation in ``generation_id``
(subscription version 2), as kafka-python's ``cooperative_sticky.py`` does for the first. The
generation matters because kafka-python clears a member's partitions when it loses its
membership (``on_partitions_lost``) without telling the assignor, so a member that was evicted
still claims its old tasks when it rejoins. A claim older than another member's claim on the
same task is therefore ignored, as Java's ``AbstractStickyAssignor`` does; a task claimed by two
members at the same generation is given to nobody in the first round (both revoke it), and
placed in the second.

One instance per consumer: it remembers that consumer's assignment.

>>> final = plan(6, {"a": {0, 1, 2, 3, 4, 5}, "b": set(), "c": set()})
>>> final
{'a': {0, 1}, 'b': {2, 3}, 'c': {4, 5}}
>>> first_round(final, {"a": {0, 1, 2, 3, 4, 5}, "b": set(), "c": set()})
{'a': {0, 1}, 'b': set(), 'c': set()}
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Iterable, Mapping

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor, RebalanceProtocol
from kafka.protocol.consumer.metadata import (ConsumerProtocolAssignment,
                                              ConsumerProtocolSubscription)

log = logging.getLogger(__name__)

#: ConsumerProtocolSubscription v1 added ``owned_partitions``, v2 ``generation_id``.
SUBSCRIPTION_VERSION = 2
#: kafka-python's generation before a member's first assignment.
NO_GENERATION = -1


def plan(tasks: int, owned: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
    """The final assignment of tasks ``0 .. tasks-1`` to the members of ``owned``.

    ``owned`` maps every member to the tasks it holds now. A task held by more than one member,
    or numbered ``tasks`` or above, counts as held by nobody. Balanced (shares differ by at most
    one) and sticky (a member keeps what it holds up to its share); see the module docstring.

    Five tasks over three members: shares of 2, 2 and 1, the 2s to ``b`` and ``a`` (they hold
    the most). ``b`` keeps two of its three; its task 2 and the unheld task 4 fill ``a`` and ``c``:

    >>> plan(5, {"b": {0, 1, 2}, "a": {3}, "c": set()})
    {'a': {2, 3}, 'b': {0, 1}, 'c': {4}}
    """
    members = sorted(owned)
    if not members:
        return {}
    holders: dict[int, list[str]] = defaultdict(list)
    for member in members:
        for task in set(owned[member]):
            if 0 <= task < tasks:
                holders[task].append(member)
    held = {m: sorted(t for t in set(owned[m]) if len(holders.get(t, ())) == 1) for m in members}
    base, extra = divmod(tasks, len(members))
    # The larger shares to the members holding the most: fewest tasks move.
    larger = set(sorted(members, key=lambda m: (-len(held[m]), m))[:extra])
    share = {m: base + (m in larger) for m in members}
    final = {m: set(held[m][:share[m]]) for m in members}
    taken = set().union(*final.values())
    pool = iter(t for t in range(tasks) if t not in taken)
    for member in members:
        while len(final[member]) < share[member]:
            final[member].add(next(pool))
    return final


def first_round(final: Mapping[str, set[int]],
                owned: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
    """What to assign now, given the ``final`` plan and what each member holds (``owned``).

    A member gets a task of its final share unless another member still holds it (held by
    several members included): that owner revokes it on seeing it missing from its own
    assignment, and the task is placed in the next round.

    >>> first_round({"a": {0}, "b": {1}}, {"a": {0, 1}, "b": set()})
    {'a': {0}, 'b': set()}
    """
    holders: dict[int, set[str]] = defaultdict(set)
    for member, tasks in owned.items():
        for task in tasks:
            holders[task].add(member)
    return {m: {t for t in tasks if holders.get(t, set()) <= {m}}
            for m, tasks in sorted(final.items())}


def current_claims(claims: Mapping[str, tuple[int, set[int]]]) -> dict[str, set[int]]:
    """Each member's held tasks, without claims that are stale.

    ``claims`` maps a member to ``(generation, tasks)``: the generation of the assignment it
    says it holds. A claim on a task that another member claims from a later generation is
    dropped: the claimant lost its membership since, and kafka-python cleared its partitions.

    >>> current_claims({"a": (3, {0, 1}), "b": (5, {1, 2}), "c": (5, {2})})
    {'a': {0}, 'b': {1, 2}, 'c': {2}}
    """
    newest: dict[int, int] = {}
    for generation, tasks in claims.values():
        for task in tasks:
            newest[task] = max(newest.get(task, NO_GENERATION), generation)
    return {m: {t for t in tasks if generation >= newest[t]}
            for m, (generation, tasks) in sorted(claims.items())}


class TaskAssignor(AbstractPartitionAssignor):
    """Whole tasks (partition *p* of every subscribed topic), balanced, sticky, cooperative.

    Pass one instance per consumer: ``KafkaConsumer(..., partition_assignment_strategy=
    [TaskAssignor()])`` (or ``io.clients.make_consumer(kafka, group, TaskAssignor())``).
    """

    name = "otp-tasks"
    version = SUBSCRIPTION_VERSION

    def __init__(self) -> None:
        self.assigned: list[Any] = []           # TopicPartitions of the last assignment
        self.generation = NO_GENERATION

    def supported_protocols(self) -> list[RebalanceProtocol]:
        return [RebalanceProtocol.COOPERATIVE]

    def metadata(self, topics) -> ConsumerProtocolSubscription:
        owned: dict[str, list[int]] = defaultdict(list)
        for tp in self.assigned:
            owned[tp.topic].append(tp.partition)
        return ConsumerProtocolSubscription(
            version=self.version, topics=sorted(topics), user_data=b"",
            owned_partitions=[ConsumerProtocolSubscription.TopicPartition(
                topic=topic, partitions=sorted(parts)) for topic, parts in sorted(owned.items())],
            generation_id=self.generation)

    def on_assignment(self, assignment, generation=None) -> None:
        self.assigned = list(assignment.partitions())
        self.generation = NO_GENERATION if generation is None else generation

    def assign(self, cluster, members) -> dict[str, ConsumerProtocolAssignment]:
        subscribed = {m.member_id: set(m.metadata.topics) for m in members}
        topics = sorted(set().union(*subscribed.values()))
        if len({frozenset(s) for s in subscribed.values()}) > 1:
            log.warning("members of the group subscribe to different topics (%s): a member gets "
                        "its tasks' partitions of the topics it subscribes to only",
                        "; ".join(f"{m}: {sorted(s)}" for m, s in sorted(subscribed.items())))
        counts = {}
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                counts[topic] = len(partitions)
            else:
                log.warning("no partitions known for topic %s: it is left out of the "
                            "assignment until its metadata arrives", topic)
        tasks = min(counts.values(), default=0)
        if len(set(counts.values())) > 1:
            log.error("topics are not co-partitioned (%s): assigning tasks 0..%d only, the "
                      "partitions above are not consumed until the counts match",
                      ", ".join(f"{t}: {n} partitions" for t, n in sorted(counts.items())),
                      tasks - 1)
        claims = {}
        for m in members:
            metadata = m.metadata
            held = {p for tp in (getattr(metadata, "owned_partitions", None) or ())
                    if tp.topic in subscribed[m.member_id] for p in tp.partitions}
            generation = getattr(metadata, "generation_id", NO_GENERATION)
            claims[m.member_id] = (NO_GENERATION if generation is None else generation, held)
        # Any partition of a task held makes the member a holder of the whole task: it must
        # not be given to another member before this one revoked it.
        holding = current_claims(claims)
        final = plan(tasks, holding)
        now = first_round(final, holding)
        moving = sum(len(final[m] - now[m]) for m in final)
        log.info("task assignment over %d tasks of %s: %s%s", tasks, ", ".join(counts),
                 "; ".join(f"{m}: {sorted(now[m])}" for m in sorted(now)),
                 f" ({moving} task(s) placed after their owners revoke them)" if moving else "")
        return {member: ConsumerProtocolAssignment(
                    self.version,
                    [(topic, sorted(now[member])) for topic in sorted(counts)
                     if topic in subscribed[member] and now[member]],
                    b"")
                for member in sorted(now)}
