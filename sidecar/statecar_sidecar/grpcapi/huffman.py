"""
HPACK's Huffman code (RFC 7541 Appendix B), decoding only: statecar sends its headers as plain
literals, but every gRPC client Huffman-encodes the strings it sends.

The code is canonical (RFC 7541 §5.2 and Appendix B: codes of one length are consecutive and
sorted by symbol), so the code *lengths* of the 257 symbols determine it entirely; the codes are
rebuilt from them on first use. The lengths are the RFC's table, checked against its codes in
tests/unit/test_grpc_hpack.py.
"""

from __future__ import annotations

from typing import Final

#: Bit length of the code of each octet 0..255 (RFC 7541 Appendix B); EOS (256) has 30 bits.
LENGTHS: Final[tuple[int, ...]] = (
    13,
    23,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    24,
    30,
    28,
    28,
    30,
    28,
    28,  # 0-15
    28,
    28,
    28,
    28,
    28,
    28,
    30,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,  # 16-31
    6,
    10,
    10,
    12,
    13,
    6,
    8,
    11,
    10,
    10,
    8,
    11,
    8,
    6,
    6,
    6,  # 32-47
    5,
    5,
    5,
    6,
    6,
    6,
    6,
    6,
    6,
    6,
    7,
    8,
    15,
    6,
    12,
    10,  # 48-63
    13,
    6,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,  # 64-79
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    8,
    7,
    8,
    13,
    19,
    13,
    14,
    6,  # 80-95
    15,
    5,
    6,
    5,
    6,
    5,
    6,
    6,
    6,
    5,
    7,
    7,
    6,
    6,
    6,
    5,  # 96-111
    6,
    7,
    6,
    5,
    5,
    6,
    7,
    7,
    7,
    7,
    7,
    15,
    11,
    14,
    13,
    28,  # 112-127
    20,
    22,
    20,
    20,
    22,
    22,
    22,
    23,
    22,
    23,
    23,
    23,
    23,
    23,
    24,
    23,  # 128-143
    24,
    24,
    22,
    23,
    24,
    23,
    23,
    23,
    23,
    21,
    22,
    23,
    22,
    23,
    23,
    24,  # 144-159
    22,
    21,
    20,
    22,
    22,
    23,
    23,
    21,
    23,
    22,
    22,
    24,
    21,
    22,
    23,
    23,  # 160-175
    21,
    21,
    22,
    21,
    23,
    22,
    23,
    23,
    20,
    22,
    22,
    22,
    23,
    22,
    22,
    23,  # 176-191
    26,
    26,
    20,
    19,
    22,
    23,
    22,
    25,
    26,
    26,
    26,
    27,
    27,
    26,
    24,
    25,  # 192-207
    19,
    21,
    26,
    27,
    27,
    26,
    27,
    24,
    21,
    21,
    26,
    26,
    28,
    27,
    27,
    27,  # 208-223
    20,
    24,
    20,
    21,
    22,
    21,
    21,
    23,
    22,
    22,
    25,
    25,
    24,
    24,
    26,
    23,  # 224-239
    26,
    27,
    26,
    26,
    27,
    27,
    27,
    27,
    27,
    28,
    27,
    27,
    27,
    27,
    27,
    26,  # 240-255
)
EOS_LENGTH: Final = 30


class HuffmanError(ValueError):
    """A Huffman-encoded string that RFC 7541 §5.2 says is a decoding error."""


def codes() -> list[tuple[int, int]]:
    """(code, length) of each symbol 0..256, rebuilt canonically from the lengths."""
    lengths = (*LENGTHS, EOS_LENGTH)
    order = sorted(range(257), key=lambda s: (lengths[s], s))
    result = [(0, 0)] * 257
    code = 0
    previous = lengths[order[0]]
    for position, symbol in enumerate(order):
        if position:
            code = (code + 1) << (lengths[symbol] - previous)
        previous = lengths[symbol]
        result[symbol] = (code, previous)
    return result


_table: dict[str, int] = {}
_MIN_LENGTH: Final = min(LENGTHS)


def _bit_strings() -> dict[str, int]:
    if not _table:
        for symbol, (code, length) in enumerate(codes()):
            _table[format(code, f"0{length}b")] = symbol
    return _table


def decode(data: bytes) -> bytes:
    """The octets `data` encodes; raises HuffmanError for EOS, bad padding or a truncated code.

    Only header blocks not seen before on a connection get here (`hpack.Decoder` caches
    decoded blocks), so this favours brevity over speed: a bit string walked code by code.
    """
    if not data:
        return b""
    table = _bit_strings()
    size = len(data) * 8
    bits = format(int.from_bytes(data, "big"), f"0{size}b")
    out = bytearray()
    position = 0
    while position < size:
        left = size - position
        # Padding: fewer than 8 bits, all ones (the most significant bits of EOS), §5.2.
        if left < 8 and bits.count("0", position) == 0:
            break
        for length in range(_MIN_LENGTH, min(EOS_LENGTH, left) + 1):
            symbol = table.get(bits[position : position + length])
            if symbol is not None:
                break
        else:
            raise HuffmanError("a Huffman code is truncated or its padding is not all ones")
        if symbol == 256:
            raise HuffmanError("a Huffman-encoded string contains EOS")
        out.append(symbol)
        position += length
    return bytes(out)


def encode(data: bytes) -> bytes:
    """`data` Huffman-encoded (for tests, and clients written in Python)."""
    table = codes()
    value = 0
    size = 0
    for octet in data:
        code, length = table[octet]
        value = (value << length) | code
        size += length
    pad = -size % 8
    value = (value << pad) | ((1 << pad) - 1)
    return value.to_bytes((size + pad) // 8, "big")
