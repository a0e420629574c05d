"""
HPACK (RFC 7541) for the gRPC port: a full decoder, and an encoder of plain literals.

The decoder keeps one connection's dynamic table (§2.3.2, §4) and understands every
representation (§6): indexed fields, literals with incremental, without and never indexing,
dynamic table size updates, Huffman-coded strings (`huffman`). gRPC clients (grpc-go, grpc-java,
grpcio, grpc-js) insert their constant headers into the table on the first call and then send
every later call as the same few index octets, so a decoded block is cached by its bytes for as
long as the table does not change: the common call costs one dict lookup.

The encoder writes "literal without indexing" with an indexed name where the static table has
one (§6.2.2), never Huffman, and never touches the peer's table: the responses' headers are few
and mostly constant, and precomputed blocks (`grpcapi.http2`) cost nothing per call.
"""

from __future__ import annotations

from typing import Final

from statecar_sidecar.grpcapi import huffman

Header = tuple[str, str]

#: RFC 7541 Appendix A; index 1 is the first entry.
STATIC_TABLE: Final[tuple[Header, ...]] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_STATIC_SIZE: Final = len(STATIC_TABLE)
#: §4.1: an entry's size is its name's and value's octets plus 32.
ENTRY_OVERHEAD: Final = 32
#: The default SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2), which statecar keeps.
DEFAULT_TABLE_SIZE: Final = 4096
#: Integers above this are not sizes or indexes any sane peer sends (and bound the loop).
_MAX_INTEGER: Final = 1 << 28
_CACHE_ENTRIES: Final = 256


class HpackError(ValueError):
    """A header block RFC 7541 says is a decoding error: a COMPRESSION_ERROR of the connection."""


class HeaderListTooLarge(HpackError):
    """The decoded headers exceed the limit given to `Decoder` (SETTINGS_MAX_HEADER_LIST_SIZE)."""


def _integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """§5.1: the integer starting at `position` with an N-bit prefix, and the next position."""
    mask = (1 << prefix_bits) - 1
    value = block[position] & mask
    position += 1
    if value < mask:
        return value, position
    shift = 0
    end = len(block)
    while True:
        if position >= end:
            raise HpackError("a header block ends inside an integer")
        octet = block[position]
        position += 1
        value += (octet & 0x7F) << shift
        if value > _MAX_INTEGER:
            raise HpackError("a header block holds an integer too large to be an index or size")
        if not octet & 0x80:
            return value, position
        shift += 7


def _string(block: bytes, position: int) -> tuple[str, int]:
    """§5.2: a string literal (Huffman-coded or not), as latin-1 text so bytes survive."""
    if position >= len(block):
        raise HpackError("a header block ends before a string literal")
    coded = block[position] & 0x80
    length, position = _integer(block, position, 7)
    end = position + length
    if end > len(block):
        raise HpackError("a string literal runs past the end of its header block")
    raw = block[position:end]
    if coded:
        try:
            raw = huffman.decode(raw)
        except huffman.HuffmanError as exc:
            raise HpackError(str(exc)) from None
    return raw.decode("latin-1"), end


class Decoder:
    """One connection's HPACK decoding context (the peer's encoder's mirror)."""

    def __init__(self, max_header_list_size: int, table_size: int = DEFAULT_TABLE_SIZE) -> None:
        #: Newest entry first, so dynamic index i is `_dynamic[i - 62]`.
        self._dynamic: list[Header] = []
        self._size = 0
        #: The table size the peer last chose (§6.3), at most the SETTINGS value, `_limit`.
        self._max_size = table_size
        self._limit = table_size
        self._max_list = max_header_list_size
        self._cache: dict[bytes, list[Header]] = {}

    @property
    def table(self) -> list[Header]:
        """The dynamic table, newest entry first (for tests)."""
        return list(self._dynamic)

    @property
    def size(self) -> int:
        """The dynamic table's size as §4.1 counts it."""
        return self._size

    def _entry(self, index: int) -> Header:
        if index <= 0:
            raise HpackError("a header field refers to index 0")
        if index <= _STATIC_SIZE:
            return STATIC_TABLE[index - 1]
        try:
            return self._dynamic[index - _STATIC_SIZE - 1]
        except IndexError:
            raise HpackError(f"a header field refers to index {index}, past the table") from None

    def _evict(self, room: int) -> None:
        while self._dynamic and self._size + room > self._max_size:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD

    def _insert(self, header: Header) -> None:
        size = len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
        self._evict(size)
        if size <= self._max_size:  # §4.4: a larger entry just empties the table
            self._dynamic.insert(0, header)
            self._size += size

    def decode(self, block: bytes) -> list[Header]:
        """The header list of one complete block (HEADERS plus its CONTINUATIONs).

        The returned list is shared with the cache: callers must not modify it.
        """
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        headers: list[Header] = []
        changed = False
        listed = 0
        position = 0
        end = len(block)
        while position < end:
            octet = block[position]
            if octet & 0x80:  # §6.1 indexed field
                index, position = _integer(block, position, 7)
                header = self._entry(index)
            elif octet & 0x40:  # §6.2.1 literal with incremental indexing
                index, position = _integer(block, position, 6)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, position = _string(block, position)
                value, position = _string(block, position)
                header = (name, value)
                self._insert(header)
                changed = True
            elif octet & 0x20:  # §6.3 dynamic table size update
                if headers:
                    raise HpackError("a dynamic table size update follows a header field")
                size, position = _integer(block, position, 5)
                if size > self._limit:
                    raise HpackError(
                        f"a dynamic table size update to {size} exceeds SETTINGS_HEADER_TABLE_SIZE "
                        f"{self._limit}"
                    )
                self._max_size = size
                self._evict(0)
                changed = True
                continue
            else:  # §6.2.2 without indexing, §6.2.3 never indexed: both 4-bit prefixes
                index, position = _integer(block, position, 4)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, position = _string(block, position)
                value, position = _string(block, position)
                header = (name, value)
            listed += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
            if listed > self._max_list:
                # The rest of the block must still be decoded to keep the table in step, but
                # these headers are refused: the caller resets the stream.
                self._skip(block, position)
                raise HeaderListTooLarge(
                    f"the request's headers exceed {self._max_list} bytes "
                    "(SETTINGS_MAX_HEADER_LIST_SIZE)"
                )
            headers.append(header)
        if changed:
            self._cache.clear()
        else:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            self._cache[block] = headers
        return headers

    def _skip(self, block: bytes, position: int) -> None:
        """Apply the table changes of the rest of `block` without keeping its headers."""
        limit = self._max_list
        self._max_list = 1 << 62
        try:
            self.decode(block[position:])
        finally:
            self._max_list = limit
        self._cache.clear()


def _encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(text: bytes) -> bytes:
    return _encode_integer(len(text), 7, 0) + text


_STATIC_NAMES: Final[dict[str, int]] = {}
for _index, (_name, _) in reversed(list(enumerate(STATIC_TABLE, start=1))):
    _STATIC_NAMES[_name] = _index


def encode(headers: list[tuple[str, str | bytes]]) -> bytes:
    """A header block of literals without indexing (§6.2.2); `:status 200` is indexed (§6.1).

    Values are latin-1 text or bytes; names must already be lowercase (RFC 9113 §8.2.1).
    """
    out = bytearray()
    for name, value in headers:
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        if name == ":status" and raw == b"200":
            out.append(0x88)
            continue
        index = _STATIC_NAMES.get(name, 0)
        if index:
            out += _encode_integer(index, 4, 0)
        else:
            out.append(0)
            out += _encode_string(name.encode("latin-1"))
        out += _encode_string(raw)
    return bytes(out)
