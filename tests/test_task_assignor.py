"""TaskAssignor: whole tasks, balanced, sticky, cooperative (KIP-429).

The plan and the first round are pure functions, checked here over many random holdings against
an exhaustive search for the fewest moves. The assignor itself is then driven through a group's
rebalances in-process with kafka-python's own wire types (subscriptions and assignments encoded
and decoded as the coordinator does, topic metadata from a MetadataResponse), the members
applying each assignment as kafka-python's cooperative branch does; and through the real broker
with kafka-python consumers (tests/test_task_assignor_kafka.py)."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.cluster import ClusterMetadata
from kafka.protocol.consumer.group import JoinGroupResponse
from kafka.protocol.consumer.metadata import (ConsumerProtocolAssignment,
                                              ConsumerProtocolSubscription)
from kafka.protocol.metadata import MetadataResponse

from detector.io.task_assignor import TaskAssignor, current_claims, first_round, plan

MEMBER_IDS = [f"member-{c}" for c in "abcdef"]


@st.composite
def holdings(draw, overlapping: bool = True):
    """A task count and what each member holds now: possibly nothing, possibly tasks that are
    out of range (the topics shrank in the plan's view), possibly held by two members."""
    tasks = draw(st.integers(0, 20))
    members = draw(st.lists(st.sampled_from(MEMBER_IDS), min_size=1, max_size=6, unique=True))
    owner = st.sampled_from([None, *members])
    owned: dict[str, set[int]] = {m: set() for m in members}
    for task in range(tasks + 3):
        first = draw(owner)
        if first is not None:
            owned[first].add(task)
        if overlapping and draw(st.integers(0, 9)) == 0:
            second = draw(owner)
            if second is not None:
                owned[second].add(task)
    return tasks, owned


def uniquely_held(tasks: int, owned: dict[str, set[int]]) -> dict[str, set[int]]:
    count: dict[int, int] = {}
    for held in owned.values():
        for t in held:
            count[t] = count.get(t, 0) + 1
    return {m: {t for t in held if t < tasks and count[t] == 1} for m, held in owned.items()}


def most_kept(tasks: int, held: dict[str, set[int]]) -> int:
    """The most held tasks any balanced assignment keeps in place: every choice of which
    members get the larger share, each member keeping as many of its tasks as its share allows."""
    base, extra = divmod(tasks, len(held))
    return max(sum(min(len(held[m]), base + (m in larger)) for m in held)
               for larger in itertools.combinations(sorted(held), extra))


@settings(max_examples=600, deadline=None)
@given(holdings())
def test_the_plan_places_every_task_once_in_balanced_shares_moving_the_fewest(case):
    tasks, owned = case
    final = plan(tasks, owned)
    assert sorted(final) == sorted(owned)
    placed = [t for share in final.values() for t in share]
    assert sorted(placed) == list(range(tasks))                       # each task exactly once
    sizes = [len(share) for share in final.values()]
    assert max(sizes) - min(sizes) <= 1                               # balanced
    held = uniquely_held(tasks, owned)
    kept = sum(len(final[m] & held[m]) for m in final)
    assert kept == most_kept(tasks, held)                             # no move balance allows
    for member, share in final.items():
        if held[member] - share:              # it gave a task up: it takes none in exchange
            assert share <= held[member]


@settings(max_examples=300, deadline=None)
@given(holdings())
def test_the_plan_depends_on_the_holdings_only_not_their_order(case):
    tasks, owned = case
    reordered = {m: set(sorted(owned[m], reverse=True)) for m in reversed(list(owned))}
    assert plan(tasks, reordered) == plan(tasks, owned)


@settings(max_examples=600, deadline=None)
@given(holdings())
def test_the_first_round_gives_no_task_another_member_holds_and_the_second_moves_nothing(case):
    tasks, owned = case
    final = plan(tasks, owned)
    now = first_round(final, owned)
    held = uniquely_held(tasks, owned)
    for member, share in now.items():
        assert share <= final[member]
        for task in share:
            assert all(task not in owned[other] for other in owned if other != member)
        assert held[member] & final[member] <= share      # kept tasks are not revoked
    # The owners revoke what they were not given; the second round places every task, and
    # takes nothing from anyone: a rebalance ends in two rounds.
    again = plan(tasks, now)
    assert first_round(again, now) == again
    assert all(now[m] <= again[m] for m in now)


def test_a_stale_claim_loses_to_a_newer_one_and_equal_claims_block_both():
    # member-a was evicted at generation 3 and still claims task 1, which member-b holds since
    # generation 5; task 2 is claimed by b and c at the same generation.
    held = current_claims({"member-a": (3, {0, 1}), "member-b": (5, {1, 2}),
                           "member-c": (5, {2})})
    assert held == {"member-a": {0}, "member-b": {1, 2}, "member-c": {2}}
    final = plan(3, held)
    now = first_round(final, held)
    assert final == {"member-a": {0}, "member-b": {1}, "member-c": {2}}
    assert now == {"member-a": {0}, "member-b": {1}, "member-c": set()}


# ------------------------------------------------------------ the assignor through a group


def cluster_with(counts: dict[str, int]) -> ClusterMetadata:
    """kafka-python's cluster metadata, fed a MetadataResponse as from a broker."""
    broker = MetadataResponse.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=9092,
                                                     rack=None)
    topic_type = MetadataResponse.MetadataResponseTopic
    partition_type = topic_type.MetadataResponsePartition
    response = MetadataResponse(version=1, brokers=[broker], controller_id=0, topics=[
        topic_type(error_code=0, name=name, is_internal=False, partitions=[
            partition_type(error_code=0, partition_index=p, leader_id=0, replica_nodes=[0],
                           isr_nodes=[0]) for p in range(count)])
        for name, count in counts.items()])
    cluster = ClusterMetadata()
    cluster.update_metadata(MetadataResponse.decode(response.encode(header=False), version=1,
                                                    header=False))
    return cluster


class Member:
    """One consumer's view: its assignor, and the partitions kafka-python holds for it (the
    subscription's assignment, which it replaces by each assignment received, calling the
    listener with the difference: kafka/coordinator/consumer.py, the COOPERATIVE branch)."""

    def __init__(self, member_id: str, topics: list[str]) -> None:
        self.member_id = member_id
        self.topics = topics
        self.assignor = TaskAssignor()
        self.holds: set[TopicPartition] = set()
        self.revoked: list[set[TopicPartition]] = []
        self.added: list[set[TopicPartition]] = []

    def join_request(self):
        """The JoinGroup member as the leader decodes it (``_perform_assignment``)."""
        wire = self.assignor.metadata(set(self.topics)).encode()
        member = JoinGroupResponse.JoinGroupResponseMember(
            member_id=self.member_id, group_instance_id=None, metadata=wire)
        member.metadata = ConsumerProtocolSubscription.decode(member.metadata)
        return member

    def receive(self, assignment: ConsumerProtocolAssignment, generation: int) -> bool:
        """Apply an assignment; True when something was revoked (kafka-python rejoins)."""
        decoded = ConsumerProtocolAssignment.decode(assignment.encode())
        new = set(decoded.partitions())
        revoked, added = self.holds - new, new - self.holds
        self.holds = new
        self.assignor.on_assignment(decoded, generation)
        if revoked:
            self.revoked.append(revoked)
        if added:
            self.added.append(added)
        return bool(revoked)

    def tasks(self) -> set[int]:
        return {tp.partition for tp in self.holds}


class Group:
    def __init__(self, counts: dict[str, int]) -> None:
        self.cluster = cluster_with(counts)
        self.topics = sorted(counts)
        self.members: dict[str, Member] = {}
        self.generation = 0
        self.rounds = 0

    def rebalance(self) -> None:
        """Rounds until nobody revokes: the leader assigns, each member applies its part."""
        for self.rounds in range(1, 5):
            self.generation += 1
            joined = [m.join_request() for m in self.members.values()]
            leader = self.members[min(self.members)]       # any member: the result is the same
            assignments = leader.assignor.assign(self.cluster, joined)
            self.assert_nobody_holds_what_another_holds_or_is_given(assignments)
            rejoin = [m.receive(assignments[m.member_id], self.generation)
                      for m in self.members.values()]
            if not any(rejoin):
                return
        raise AssertionError("the rebalance did not settle in four rounds")

    def assert_nobody_holds_what_another_holds_or_is_given(self, assignments) -> None:
        for member in self.members.values():
            given = set(ConsumerProtocolAssignment.decode(
                assignments[member.member_id].encode()).partitions())
            for other in self.members.values():
                if other is not member:
                    assert not given & other.holds, (member.member_id, other.member_id)

    def shares(self) -> dict[str, set[int]]:
        return {m: member.tasks() for m, member in self.members.items()}

    def assert_settled(self, tasks: int) -> None:
        held = [tp for m in self.members.values() for tp in m.holds]
        assert len(held) == len(set(held))
        assert set(held) == {TopicPartition(t, p) for t in self.topics for p in range(tasks)}
        for member in self.members.values():                        # whole tasks
            assert member.holds == {TopicPartition(t, p) for t in self.topics
                                    for p in member.tasks()}
        sizes = [len(s) for s in self.shares().values()]
        assert max(sizes) - min(sizes) <= 1


def test_through_a_group_members_join_and_leave_and_only_moved_tasks_are_revoked():
    group = Group({"mail": 6, "dns": 6})
    for name in MEMBER_IDS[:3]:
        group.members[name] = Member(name, ["mail", "dns"])
    group.rebalance()
    group.assert_settled(6)
    assert sorted(len(s) for s in group.shares().values()) == [2, 2, 2]
    assert all(not m.revoked for m in group.members.values())

    before = group.shares()
    group.members["member-d"] = Member("member-d", ["mail", "dns"])
    group.rebalance()
    group.assert_settled(6)
    assert group.rounds == 2                        # the moved tasks are placed in round two
    after = group.shares()
    assert sorted(len(s) for s in after.values()) == [1, 1, 2, 2]
    for name, tasks in before.items():
        member = group.members[name]
        assert after[name] <= tasks                 # nobody gains; each keeps all it can
        revoked = {tp.partition for r in member.revoked for tp in r}
        assert revoked == tasks - after[name]       # only the moved tasks, by their owner
    assert group.members["member-d"].added == [
        {TopicPartition(t, p) for t in ("mail", "dns") for p in after["member-d"]}]

    before = group.shares()
    for member in group.members.values():
        member.revoked.clear()
        member.added.clear()
    del group.members["member-a"]
    group.rebalance()
    group.assert_settled(6)
    assert group.rounds == 1                       # nothing moves away from a survivor
    after = group.shares()
    assert sorted(len(s) for s in after.values()) == [2, 2, 2]
    for name, member in group.members.items():
        assert not member.revoked
        assert before[name] <= after[name]
        assert after[name] - before[name] <= before["member-a"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["join", "leave", "evict"]),
                          st.sampled_from(MEMBER_IDS)), min_size=1, max_size=12),
       st.integers(1, 9))
def test_any_sequence_of_joins_leaves_and_evictions_settles_in_two_rounds(events, partitions):
    """An evicted member comes back claiming its old tasks (kafka-python clears what it holds,
    not what its assignor remembers): the claim is stale, and never gives a task to two."""
    group = Group({"mail": partitions, "dns": partitions})
    for action, name in events:
        if action == "join" and name not in group.members:
            group.members[name] = Member(name, ["mail", "dns"])
        elif action == "leave" and name in group.members and len(group.members) > 1:
            del group.members[name]
        elif action == "evict" and name in group.members and len(group.members) > 1:
            evicted = group.members.pop(name)
            group.rebalance()                        # the others go on without it
            evicted.holds = set()                    # on_partitions_lost
            group.members[name] = evicted            # and it rejoins
        else:
            continue
        before = group.shares()
        for member in group.members.values():
            member.revoked.clear()
        group.rebalance()
        assert group.rounds <= 2
        group.assert_settled(partitions)
        # The fewest revocations balance allows, counting what each member truly holds.
        revoked = sum(len({tp.partition for r in m.revoked for tp in r})
                      for m in group.members.values())
        assert revoked == sum(map(len, before.values())) - most_kept(partitions, before)


def test_topics_of_different_partition_counts_get_the_common_tasks_and_an_error(caplog):
    group = Group({"mail": 6, "dns": 4})
    for name in MEMBER_IDS[:2]:
        group.members[name] = Member(name, ["mail", "dns"])
    with caplog.at_level(logging.ERROR, logger="detector.io.task_assignor"):
        group.rebalance()
    group.assert_settled(4)                          # tasks 0..3 of both; mail 4 and 5 idle
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "topics are not co-partitioned (dns: 4 partitions, mail: 6 partitions): assigning "
        "tasks 0..3 only, the partitions above are not consumed until the counts match"]


def test_a_member_subscribes_and_claims_with_its_last_assignment_and_generation():
    assignor = TaskAssignor()
    fresh = ConsumerProtocolSubscription.decode(assignor.metadata({"mail", "dns"}).encode())
    assert (fresh.topics, fresh.owned_partitions, fresh.generation_id) == (
        ["dns", "mail"], [], -1)
    assignor.on_assignment(ConsumerProtocolAssignment(2, [("dns", [4, 1]), ("mail", [1, 4])],
                                                      b""), 7)
    sent = ConsumerProtocolSubscription.decode(assignor.metadata({"mail", "dns"}).encode())
    assert [(tp.topic, tp.partitions) for tp in sent.owned_partitions] == [
        ("dns", [1, 4]), ("mail", [1, 4])]
    assert sent.generation_id == 7


@pytest.mark.parametrize("leader", MEMBER_IDS[:3])
def test_whichever_member_leads_the_assignment_is_the_same(leader):
    group = Group({"mail": 7, "dns": 7})
    for name in MEMBER_IDS[:3]:
        group.members[name] = Member(name, ["mail", "dns"])
    group.rebalance()
    joined = [m.join_request() for m in group.members.values()]
    ours = group.members[leader].assignor.assign(group.cluster, joined)
    reference = TaskAssignor().assign(group.cluster, list(reversed(joined)))
    assert {m: a.partitions() for m, a in ours.items()} == {
        m: a.partitions() for m, a in reference.items()}
