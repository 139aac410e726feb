"""The join key puts a sender's mail and the lookups its checks made (SPF, DKIM, DMARC) under one
key, from the Public Suffix List; what cannot be keyed together is a name of another
organisation."""

import ipaddress
import random
from collections import Counter

import pytest
from kafka.partitioner.default import murmur2

from detector.core.partitioning import join_key, registrable_domain
from detector.core.records import domain_of


@pytest.mark.parametrize("sender, lookups", [
    ("verify@bank.example", ["bank.example", "_dmarc.bank.example",
                             "s1._domainkey.bank.example"]),
    ("no-reply@auth.bank1.example", ["auth.bank1.example", "_dmarc.auth.bank1.example",
                                     "_dmarc.bank1.example", "sel._domainkey.auth.bank1.example"]),
    ("otp@mail.bank.co.uk", ["mail.bank.co.uk", "_dmarc.bank.co.uk", "k1._domainkey.bank.co.uk"]),
    ("codes@shop.github.io", ["shop.github.io", "_dmarc.shop.github.io"]),   # a private suffix
    ("Verify@BANK.example.", ["Bank.Example.", "_DMARC.bank.example"]),
])
def test_a_senders_mail_and_its_own_lookups_share_one_key(sender, lookups):
    key = join_key(sender_domain=domain_of(sender))
    assert key is not None
    assert {join_key(qname=name) for name in lookups} == {key}


def test_another_organisations_name_has_its_own_key():
    # An SPF include of a hosted mail service: joined in its own partition, not the sender's.
    assert join_key(qname="spf.protection.outlook.com") == "outlook.com"
    assert join_key(qname="spf.protection.outlook.com") != join_key(sender_domain="bank.example")
    # GitHub Pages is a public suffix: two users' sites are two organisations.
    assert join_key(qname="a.github.io") != join_key(qname="b.github.io")


def test_names_without_a_registrable_domain_are_their_own_key():
    assert registrable_domain("co.uk") == "co.uk"
    assert registrable_domain("localhost") == "localhost"
    assert join_key(sender_domain=None) is None and join_key() is None


@pytest.mark.parametrize("name, key", [
    ("4.3.2.10.in-addr.arpa", "4.3.2.10.in-addr.arpa"),
    ("4.3.2.10.IN-ADDR.ARPA.", "4.3.2.10.in-addr.arpa"),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
     "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
    ("in-addr.arpa", "in-addr.arpa"),          # the zones themselves, as any public suffix
])
def test_a_reverse_name_is_its_own_key(name, key):
    assert join_key(qname=name) == key


def test_reverse_lookups_spread_over_the_partitions():
    # The Public Suffix List alone would make one key of each of these families (10.in-addr.arpa,
    # 2.ip6.arpa): a PTR lookup per connecting address, all in one partition.
    rng = random.Random(7)
    v4 = [ipaddress.IPv4Address(rng.randrange(10 << 24, 11 << 24)) for _ in range(3000)]
    v6 = [ipaddress.IPv6Address((0x2001_0db8 << 96) + rng.getrandbits(96)) for _ in range(3000)]
    for addresses in (v4, v6):
        keys = [join_key(qname=address.reverse_pointer) for address in addresses]
        load = Counter((murmur2(key.encode()) & 0x7FFFFFFF) % 6 for key in keys)
        assert len(load) == 6 and max(load.values()) < 0.25 * len(keys), load
