"""The join buffer's upkeep, compiled and in Python, keeps one buffer.

``DnsJoin`` files each resolver answer under its name (each name's list sorted by time) and
drops the oldest as event time passes or the cap is reached; the two loops of that upkeep run
compiled (``detector/core/_speedups.c``) when it is built. These tests drive two buffers with
the same operations, one through each, and hold them to the same contents, the same answers to
every lookup and the same counts, on answers out of order, at equal times, under the cap.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core import join as join_module
from detector.core.join import PREFER_FAILING, PREFER_HEALTHY, PREFER_NEAREST, DnsJoin
from detector.core.records import SPEEDUPS, DnsRecord

NAMES = ["a.example", "b.example", "c.example", "d.example"]


def record(ts: float, name: str, outcome: str, client: str | None) -> DnsRecord:
    return DnsRecord(ts, name, "TXT", outcome, "r1", client)


records = st.builds(record, st.integers(0, 120).map(float), st.sampled_from(NAMES),
                    st.sampled_from(["NOERROR", "SERVFAIL", "NXDOMAIN"]),
                    st.sampled_from([None, "mx1", "mx2"]))
operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(records, max_size=12)),
    st.tuples(st.just("expire"), st.integers(0, 130).map(float)),
    st.tuples(st.just("match"), st.integers(0, 130).map(float), st.sampled_from(NAMES),
              st.sampled_from([None, "mx1", "mx2"]),
              st.sampled_from([PREFER_NEAREST, PREFER_HEALTHY, PREFER_FAILING]))),
    max_size=25)


def contents(join: DnsJoin) -> tuple:
    by_name = {name: [repr(entry) for entry in entries]
               for name, entries in sorted(join._by_name.items())}
    runs = sorted((first, [repr(entry) for entry in run]) for first, _, run in join._runs)
    return by_name, runs, join.size, join.evicted, join.ambiguous, join.snapshot()


@pytest.mark.parametrize("cap", [2_000_000, 7])
@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_the_compiled_upkeep_keeps_the_buffer_the_python_upkeep_keeps(cap, ops):
    assert SPEEDUPS, "detector/core/_speedups.c is not built"
    compiled, python = DnsJoin(30, 5, max_buffered=cap), DnsJoin(30, 5, max_buffered=cap)
    try:
        run(ops, compiled, python)
    finally:
        join_module._C = join_module._SPEEDUPS
    if cap == 7:
        assert compiled.size <= 7


def run(ops: list, compiled: DnsJoin, python: DnsJoin) -> None:
    for op in ops:
        answers = []
        for join, upkeep in ((compiled, join_module._SPEEDUPS), (python, None)):
            join_module._C = upkeep
            if op[0] == "add":
                join.add_many(list(op[1]))
                answers.append(None)
            elif op[0] == "expire":
                join.expire(op[1])
                answers.append(None)
            else:
                found = join.match(op[1], op[2], "TXT", op[3], op[4])
                answers.append(None if found is None else repr(found))
        assert answers[0] == answers[1]
        assert contents(compiled) == contents(python)


def test_a_name_s_answers_stay_in_time_order_whatever_order_they_come_in():
    assert SPEEDUPS, "detector/core/_speedups.c is not built"
    join = DnsJoin(30, 5)
    join.add_many([record(t, "a.example", "NOERROR", None) for t in (5.0, 3.0, 9.0, 3.0, 1.0)])
    assert [entry.ts for entry in join._by_name["a.example"]] == [1.0, 3.0, 3.0, 5.0, 9.0]
    join.expire(3.0)                      # before 3.0: one goes
    assert [entry.ts for entry in join._by_name["a.example"]] == [3.0, 3.0, 5.0, 9.0]
    join.expire(10.0)
    assert "a.example" not in join._by_name and join.size == 0


@pytest.mark.parametrize("prefer", [PREFER_NEAREST, PREFER_HEALTHY, PREFER_FAILING])
def test_a_lookup_answered_only_for_another_client_is_unmatched_and_counted(prefer):
    join = DnsJoin(30, 5)
    join.add_many([record(100.0, "a.example", "SERVFAIL", "10.1.2.3"),
                   record(101.0, "b.example", "NOERROR", "192.0.2.25")])
    lookups = [("a.example", "TXT")]
    # The mail log's server is 192.0.2.25 (its public address), the resolver saw 10.1.2.3.
    assert join.resolve_fields(110.0, "192.0.2.25", None, lookups, None, prefer) \
        == ("UNMATCHED", None)
    assert join.client_mismatched == 1
    # Answered for its own client, or for no client named, or with no answer at all in the
    # window: not counted.
    assert join.resolve_fields(110.0, "192.0.2.25", None, [("b.example", "TXT")], None,
                               prefer)[0] == "NOERROR"
    assert join.resolve_fields(200.0, "192.0.2.25", None, lookups, None, prefer) \
        == ("UNMATCHED", None)
    assert join.resolve_fields(110.0, None, None, lookups, None, prefer)[0] == "SERVFAIL"
    assert join.client_mismatched == 1
    # The fix the warning names: the client is not compared.
    lenient = DnsJoin(30, 5, match_client=False)
    lenient.add_many([record(100.0, "a.example", "SERVFAIL", "10.1.2.3")])
    assert lenient.resolve_fields(110.0, "192.0.2.25", None, lookups, None, prefer) \
        == ("SERVFAIL", "r1")
    assert lenient.client_mismatched == 0


@pytest.mark.parametrize("server,client,joined", [
    ("mail01", "10.0.0.7", True),                  # Postfix's syslog host, Unbound's address
    ("mail01.corp.example", "2001:db8::7", True),
    ("10.0.0.7", "::ffff:10.0.0.7", True),         # a dual-stack socket's spelling
    ("[2001:db8::7]", "2001:db8:0::7", True),
    ("mail01", "mail01.corp.example", True),       # a short name and a full one
    ("mail01.corp.example.", "mail01.corp.example", True),
    ("10.0.0.7", "10.0.0.8", False),
    ("mail01", "mail02.corp.example", False),
    ("mail01.corp.example", "mail01.other.example", False),
])
def test_a_server_and_a_client_are_told_apart_only_when_spelt_alike(server, client, joined):
    join = DnsJoin(30, 5)
    join.add_many([record(100.0, "a.example", "SERVFAIL", client)])
    outcome = join.resolve_fields(110.0, server, None, [("a.example", "TXT")], None)[0]
    assert outcome == ("SERVFAIL" if joined else "UNMATCHED")
    assert join.client_mismatched == (0 if joined else 1)
    # Either way, the server's own answer is the one joined when the window holds both.
    join.add_many([record(105.0, "a.example", "NOERROR", server)])
    assert join.resolve_fields(110.0, server, None, [("a.example", "TXT")], None)[0] == "NOERROR"
