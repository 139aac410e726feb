"""The co-partitioning check: the two input topics must have the same number of partitions.

A join worker owns partition *p* of the mail topic and partition *p* of the DNS topic as one task
(issue 14). Keying both topics by the join key (``core.partitioning``) with the same partitioner
puts a delivery and its sender's lookups in the same partition *number* only when both topics have
the same partition count: murmur2 of a key modulo 6 and modulo 4 are different partitions. So this
is a requirement on the topics, which we check rather than repair: a repartition stage would copy
every record once more through Kafka, while a count that differs is a one-time operator mistake
(``kafka-topics --alter --partitions N`` or recreating a topic fixes it). ``copartition_problem``
is the check for a join worker's start-up; ``detector produce`` calls ``prepare_keyed_load``
before it loads keyed records into one of the configured input topics, and refuses when the
counts differ, since loading them would make data that cannot be joined once the join is split
over workers.

Metadata is read through kafka-python's admin client, installed with either transport, with
topic auto-creation off: librdkafka's metadata request for a named topic creates it on a broker
that auto-creates topics, and a check must not create what it checks.
"""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from ..settings import KafkaSettings
from .clients import client_config

#: The metadata error code of a topic that does not exist (UNKNOWN_TOPIC_OR_PARTITION).
_NO_SUCH_TOPIC = 3


class TopicMetadataError(Exception):
    """A topic's metadata could not be read (not authorised, broker unreachable, ...)."""


def partition_counts(kafka: KafkaSettings, topics: list[str]) -> dict[str, int | None]:
    """Each topic's number of partitions, ``None`` for a topic that does not exist.

    Raises ``TopicMetadataError`` naming the topic and the broker's error otherwise.
    """
    admin = _admin(kafka)
    try:
        return _counts(admin, topics)
    finally:
        admin.close()


def mismatch(mail_topic: str, mail_partitions: int | None, dns_topic: str,
             dns_partitions: int | None) -> str | None:
    """The problem, in one line, when both topics exist with different partition counts.

    >>> print(mismatch("mail-flow", 6, "dns-resolver", 4))
    input topics mail-flow (6 partitions) and dns-resolver (4 partitions) are not co-partitioned: \
a join worker owns partition p of both, so a delivery and its lookups, keyed alike, would land in \
different tasks and not join; give both 6 partitions (kafka-topics --alter --topic dns-resolver \
--partitions 6, or recreate both with one count; records already written stay in their partitions)
    >>> mismatch("mail-flow", 6, "dns-resolver", 6), mismatch("mail-flow", 6, "dns-resolver", None)
    (None, None)
    """
    if mail_partitions is None or dns_partitions is None or mail_partitions == dns_partitions:
        return None
    # Partitions can be added, never removed: the fix grows the smaller topic.
    fewer = dns_topic if dns_partitions < mail_partitions else mail_topic
    most = max(mail_partitions, dns_partitions)
    return (f"input topics {mail_topic} ({mail_partitions} partitions) and {dns_topic} "
            f"({dns_partitions} partitions) are not co-partitioned: a join worker owns partition "
            "p of both, so a delivery and its lookups, keyed alike, would land in different tasks "
            f"and not join; give both {most} partitions (kafka-topics --alter --topic {fewer} "
            f"--partitions {most}, or recreate both with one count; records already written "
            "stay in their partitions)")


def copartition_problem(kafka: KafkaSettings, mail_topic: str, dns_topic: str) -> str | None:
    """Why the two input topics cannot be joined partition by partition, or None.

    None as well while one of them does not exist yet: there is nothing to compare, and the
    check is to be made again once it does (a worker, at its next start or assignment).
    Raises ``TopicMetadataError`` when the metadata cannot be read.
    """
    counts = partition_counts(kafka, [mail_topic, dns_topic])
    return mismatch(mail_topic, counts[mail_topic], dns_topic, counts[dns_topic])


def prepare_keyed_load(kafka: KafkaSettings, mail_topic: str, dns_topic: str,
                       loading: str) -> tuple[str | None, int | None]:
    """Before keyed records go to ``loading`` (one of the two input topics): ``(problem,
    created)``.

    When the other input topic exists and ``loading`` does not, ``loading`` is created with as
    many partitions (``created`` is that count), since a broker that creates topics on first
    write would give it its own default count. ``problem`` is ``mismatch``'s line when both
    exist with different counts. Raises ``TopicMetadataError`` when the metadata cannot be read
    or the topic cannot be created.
    """
    partner = dns_topic if loading == mail_topic else mail_topic
    admin = _admin(kafka)
    try:
        counts = _counts(admin, [loading, partner])
        created = counts[partner] if counts[loading] is None else None
        if created is not None:
            try:
                admin.create_topics([NewTopic(loading, num_partitions=created,
                                              replication_factor=kafka.replication_factor)])
            except TopicAlreadyExistsError:        # created by another loader meanwhile
                created = None
                counts = _counts(admin, [loading, partner])
            except KafkaError as err:
                raise TopicMetadataError(f"cannot create topic {loading} with {created} "
                                         f"partitions (as {partner}): {_text(err)}") from None
            else:
                counts[loading] = created
    finally:
        admin.close()
    return mismatch(mail_topic, counts[mail_topic], dns_topic, counts[dns_topic]), created


def _admin(kafka: KafkaSettings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**client_config(kafka))
    except KafkaError as err:
        raise TopicMetadataError(f"cannot read topic metadata from {kafka.bootstrap_servers}: "
                                 f"{_text(err)}") from None


def _counts(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int | None]:
    try:
        described = admin.describe_topics(topics)
    except KafkaError as err:
        raise TopicMetadataError(f"cannot read the metadata of {', '.join(topics)}: "
                                 f"{_text(err)}") from None
    counts: dict[str, int | None] = {name: None for name in topics}
    for topic in described:
        name, code = topic["name"], topic["error_code"]
        if code == _NO_SUCH_TOPIC:
            continue
        # Another error with the partitions listed (a leader being elected) still gives the count.
        if code != 0 and not topic["partitions"]:
            raise TopicMetadataError(f"cannot read the metadata of topic {name}: "
                                     f"{_text(for_code(code)())}")
        counts[name] = len(topic["partitions"])
    return counts


def _text(err: Exception) -> str:
    """A kafka-python error in a few words: its name and what the broker's code means (its
    ``str`` holds the whole request and response)."""
    description = getattr(err, "description", None)
    if description:
        return f"{type(err).__name__} ({description.rstrip('.')})"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
