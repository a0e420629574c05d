"""
Redis Cluster's pure routing rules (`stores.redis.slots`): CRC16 against the specification's
vectors and slots Redis itself reports, hash tags, redirections and `CLUSTER SLOTS` replies.
"""

from __future__ import annotations

import pytest

from statecar_sidecar.stores.redis.slots import (
    SLOT_COUNT,
    Redirect,
    SlotRange,
    crc16,
    group_by_node,
    hash_tagged,
    key_slot,
    parse_redirect,
    parse_slots,
    slot_spread,
)


def test_crc16_is_xmodem() -> None:
    # The Redis Cluster specification, appendix A: the check value of CRC16-XMODEM.
    assert crc16(b"123456789") == 0x31C3
    assert crc16(b"") == 0


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # Slots Redis 7 reports with CLUSTER KEYSLOT.
        ("foo", 12182),
        ("bar", 5061),
        ("hello", 866),
        ("", 0),
        ("conformance||k", key_slot("conformance||k")),
    ],
)
def test_key_slot_matches_redis(key: str, slot: int) -> None:
    assert key_slot(key) == slot
    assert key_slot(key.encode()) == slot
    assert 0 <= slot < SLOT_COUNT


def test_hash_tags_follow_the_specification() -> None:
    # The specification's examples ("Hash tags").
    assert (
        key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    )
    assert key_slot("foo{}{bar}") == crc16(b"foo{}{bar}") % SLOT_COUNT  # empty tag: whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")  # the first { up to the first }
    assert key_slot("foo{bar}{zap}") == key_slot("bar")  # only the first tag counts
    assert key_slot("no}tag{") == crc16(b"no}tag{") % SLOT_COUNT


def test_hash_tagged_prefix_puts_an_apps_keys_on_one_slot() -> None:
    assert hash_tagged("myapp||order-1") == "{myapp}||order-1"
    assert hash_tagged("myapp||a||b") == "{myapp}||a||b"
    assert hash_tagged("plain") == "plain"  # keyPrefix none: nothing to tag
    assert len(slot_spread(hash_tagged(f"myapp||k{i}") for i in range(100))) == 1
    assert len(slot_spread(f"myapp||k{i}" for i in range(100))) > 1


def test_slot_spread_names_each_slot_and_its_keys_in_order() -> None:
    spread = slot_spread(["foo", "bar", "{foo}x"])
    assert spread == {12182: ["foo", "{foo}x"], 5061: ["bar"]}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("MOVED 3999 127.0.0.1:6381", Redirect(True, 3999, "127.0.0.1", 6381)),
        ("ASK 3999 127.0.0.1:6381", Redirect(False, 3999, "127.0.0.1", 6381)),
        ("MOVED 1 :7000", Redirect(True, 1, "10.0.0.9", 7000)),  # unknown host: who answered
        ("MOVED 2 [::1]:7000", Redirect(True, 2, "::1", 7000)),
        ("ERR unknown command", None),
        ("MOVED 3999", None),
        ("MOVED x 127.0.0.1:1", None),
        ("CROSSSLOT Keys in request don't hash to the same slot", None),
    ],
)
def test_parse_redirect(message: str, expected: Redirect | None) -> None:
    assert parse_redirect(message, "10.0.0.9") == expected


def test_parse_slots_keeps_the_primary_of_each_range() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id1"], [b"127.0.0.1", 7003, b"id4"]],
        [5461, 10922, [b"", 7001, b"id2"]],
        [10923, 16383, [b"?", 7002, b"id3", {}]],
    ]
    assert parse_slots(reply, "10.1.1.1") == [
        SlotRange(0, 5460, "127.0.0.1", 7000),
        SlotRange(5461, 10922, "10.1.1.1", 7001),
        SlotRange(10923, 16383, "10.1.1.1", 7002),
    ]


def test_group_by_node_keeps_positions_per_owner() -> None:
    table: list[str | None] = ["a"] * 10 + ["b"] * 5 + [None]
    assert group_by_node([0, 12, 3, 15, 14], table) == {"a": [0, 2], "b": [1, 4], None: [3]}
