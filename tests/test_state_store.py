"""Checkpoint slots: a write reported failed may still land later, so a retry never overwrites
the slot its manifest names, nor the last good checkpoint's."""

import orjson
import pytest

from detector.io.state_store import SLOTS, StateStore
from detector.io.transport import TransportError
from detector.settings import KafkaSettings


class Recorder:
    """A transport that keeps what is sent; writes to keys in ``fail`` are reported failed."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.fail: set[bytes] = set()

    def send(self, topic, key, value, headers):
        self.sent.append((key, value))
        return key

    def flush(self, timeout_s):
        pass

    def delivery_error(self, handle):
        return TransportError("timed out") if handle in self.fail else None


def manifest_slots(recorder: Recorder) -> list[int]:
    return [orjson.loads(value)["slot"] for key, value in recorder.sent if key == b"g"]


def test_a_retry_after_a_failed_manifest_writes_neither_its_slot_nor_the_last_good_one():
    store = StateStore(KafkaSettings(), "state", "g")
    recorder = Recorder()
    store.write(recorder, {"n": 1}, {})               # good: slot 1
    recorder.fail = {b"g"}
    with pytest.raises(TransportError):
        store.write(recorder, {"n": 2}, {})           # manifest "failed" (may land): slot 0
    recorder.fail = set()
    store.write(recorder, {"n": 3}, {})
    first, failed, retry = manifest_slots(recorder)
    assert len({first, failed, retry}) == 3 and SLOTS == 3
    store.write(recorder, {"n": 4}, {})               # all good again: any slot but the last
    assert manifest_slots(recorder)[-1] != retry
