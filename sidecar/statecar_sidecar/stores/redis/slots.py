"""
Redis Cluster's pure routing rules: which slot a key hashes to, what a redirection says, and
which primary owns which slots. No I/O here; `cluster` does the talking.

Sources: the Redis Cluster specification (redis.io, "Redis cluster specification": "Key
distribution model", "Hash tags", "Redirection and resharding") and the `CLUSTER SLOTS`
command reference. The slot of a key is CRC16-XMODEM of the key (or of its hash tag) mod 16384.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "SLOT_COUNT",
    "Redirect",
    "SlotRange",
    "crc16",
    "group_by_node",
    "hash_tagged",
    "key_slot",
    "parse_redirect",
    "parse_slots",
    "slot_spread",
]

SLOT_COUNT: Final = 16384


def _table() -> tuple[int, ...]:
    # CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE: Final = _table()


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, as Redis computes it (`crc16("123456789") == 0x31C3`)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _hashed_part(key: bytes) -> bytes:
    """The hash tag: the text between the first `{` and the next `}` when it is not empty."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes | str) -> int:
    raw = key.encode() if isinstance(key, str) else key
    return crc16(_hashed_part(raw)) % SLOT_COUNT


def hash_tagged(key: str, separator: str = "||") -> str:
    """`app||key` as `{app}||key`: every key of one prefix on one slot. Keys without a prefix
    (keyPrefix none) stay as they are: there is no prefix to tag."""
    prefix, found, rest = key.partition(separator)
    if not found or not prefix:
        return key
    return "{" + prefix + "}" + separator + rest


def slot_spread(keys: Iterable[str]) -> dict[int, list[str]]:
    """The keys grouped by slot, slots in first-seen order (one entry: a single-slot set)."""
    spread: dict[int, list[str]] = {}
    for key in keys:
        spread.setdefault(key_slot(key), []).append(key)
    return spread


@dataclass(frozen=True, slots=True)
class Redirect:
    """A `MOVED` (the slot lives elsewhere now) or `ASK` (this one command goes elsewhere)."""

    moved: bool
    slot: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_redirect(message: str, asked_host: str) -> Redirect | None:
    """`MOVED 3999 127.0.0.1:6381` / `ASK 3999 127.0.0.1:6381`, else None.

    Redis 7 sends `:6381` (no host) when the node does not know its own address: the spec says
    to use the host of the node that answered.
    """
    parts = message.split(" ")
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, sep, port = parts[2].rpartition(":")
    if not sep or not port.isdigit() or not parts[1].isdigit():
        return None
    host = host.strip("[]") or asked_host
    return Redirect(parts[0] == "MOVED", int(parts[1]), host, int(port))


@dataclass(frozen=True, slots=True)
class SlotRange:
    """A run of slots, `first` to `last` inclusive, and the primary that owns it."""

    first: int
    last: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def parse_slots(reply: Sequence[Any], asked_host: str) -> list[SlotRange]:
    """`CLUSTER SLOTS`: `[[first, last, [host, port, id, ...], replicas...], ...]`: the primary
    of each range (replicas are not used: reads and writes go to primaries).

    An empty host (the node does not know its address) or `?` (its preferred endpoint type is
    unknown) means the address the reply came from (`CLUSTER SLOTS` reference).
    """
    ranges: list[SlotRange] = []
    for entry in reply:
        first, last, primary = int(entry[0]), int(entry[1]), entry[2]
        host = _text(primary[0])
        if host in ("", "?"):
            host = asked_host
        ranges.append(SlotRange(first, last, host, int(primary[1])))
    return ranges


def group_by_node(slots: Sequence[int], table: Sequence[str | None]) -> dict[str | None, list[int]]:
    """Positions of `slots` grouped by the address `table` maps each slot to (None: unknown)."""
    groups: dict[str | None, list[int]] = {}
    for position, slot in enumerate(slots):
        groups.setdefault(table[slot], []).append(position)
    return groups
