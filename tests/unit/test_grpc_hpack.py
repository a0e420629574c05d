"""
HPACK (RFC 7541) and its Huffman code, as the gRPC port decodes clients' header blocks.

The vectors are RFC 7541 Appendix C's: the literal representations (C.2), three requests on one
connection without and with Huffman coding (C.3, C.4), and three responses with a 256-octet
table that forces evictions (C.5, C.6); each step checks the headers, the dynamic table and its
size. The Huffman code is checked against Appendix B's codes for a few symbols and as a whole.
"""

from __future__ import annotations

import pytest

from statecar_sidecar.grpcapi import hpack, huffman


def dehex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


Step = tuple[str, list[tuple[str, str]], list[tuple[str, str]], int]

AUTHORITY = (":authority", "www.example.com")
CACHE = ("cache-control", "no-cache")
CUSTOM = ("custom-key", "custom-value")
GET_HTTP = [(":method", "GET"), (":scheme", "http"), (":path", "/"), AUTHORITY]
GET_HTTPS = [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), AUTHORITY]
REQUESTS: list[tuple[list[tuple[str, str]], list[tuple[str, str]], int]] = [
    (GET_HTTP, [AUTHORITY], 57),
    ([*GET_HTTP, CACHE], [CACHE, AUTHORITY], 110),
    ([*GET_HTTPS, CUSTOM], [CUSTOM, CACHE, AUTHORITY], 164),
]
C3 = ("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", "8286 84be 5808 6e6f 2d63 6163 6865",
      "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")  # fmt: skip
C4 = ("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", "8286 84be 5886 a8eb 1064 9cbf",
      "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")  # fmt: skip

DATE1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT")
DATE2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT")
PRIVATE = ("cache-control", "private")
LOCATION = ("location", "https://www.example.com")
COOKIE = ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSES: list[tuple[list[tuple[str, str]], list[tuple[str, str]], int]] = [
    ([(":status", "302"), PRIVATE, DATE1, LOCATION], [LOCATION, DATE1, PRIVATE, (":status", "302")], 222),
    ([(":status", "307"), PRIVATE, DATE1, LOCATION], [(":status", "307"), LOCATION, DATE1, PRIVATE], 222),
    ([(":status", "200"), PRIVATE, DATE2, LOCATION, ("content-encoding", "gzip"), COOKIE],
     [COOKIE, ("content-encoding", "gzip"), DATE2], 215),
]  # fmt: skip
C5 = (
    """4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
    2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63
    6f6d""",
    "4803 3330 37c1 c0bf",
    """88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
    54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851
    5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31""",
)
C6 = (
    """4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
    2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3""",
    "4883 640e ffc1 c0bf",
    """88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
    77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160
    65c0 03ed 4ee5 b106 3d50 07""",
)


@pytest.mark.parametrize(
    ("blocks", "steps", "table_size"),
    [(C3, REQUESTS, 4096), (C4, REQUESTS, 4096), (C5, RESPONSES, 256), (C6, RESPONSES, 256)],
    ids=["C.3", "C.4", "C.5", "C.6"],
)
def test_rfc7541_appendix_c_series_decode_with_the_dynamic_table(
    blocks: tuple[str, ...],
    steps: list[tuple[list[tuple[str, str]], list[tuple[str, str]], int]],
    table_size: int,
) -> None:
    decoder = hpack.Decoder(1 << 20, table_size=table_size)
    for block, (headers, table, size) in zip(blocks, steps, strict=True):
        assert decoder.decode(dehex(block)) == headers
        assert decoder.table == table
        assert decoder.size == size


@pytest.mark.parametrize(
    ("block", "header", "table"),
    [
        ("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
         ("custom-key", "custom-header"), [("custom-key", "custom-header")]),
        ("040c 2f73 616d 706c 652f 7061 7468", (":path", "/sample/path"), []),
        ("1008 7061 7373 776f 7264 0673 6563 7265 74", ("password", "secret"), []),
        ("82", (":method", "GET"), []),
    ],
    ids=["C.2.1", "C.2.2", "C.2.3", "C.2.4"],
)  # fmt: skip
def test_rfc7541_c2_literal_representations(
    block: str, header: tuple[str, str], table: list[tuple[str, str]]
) -> None:
    decoder = hpack.Decoder(1 << 20)
    assert decoder.decode(dehex(block)) == [header]
    assert decoder.table == table


def test_a_repeated_block_is_served_from_the_cache_only_while_the_table_is_unchanged() -> None:
    decoder = hpack.Decoder(1 << 20)
    decoder.decode(dehex(C3[0]))  # inserts :authority
    indexed = b"\x82\x86\x84\xbe"  # GET http / and dynamic entry 62
    first = decoder.decode(indexed)
    assert decoder.decode(indexed) is first  # cached: the same list object
    decoder.decode(dehex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))
    # Entry 62 is now custom-key: the cached answer would be wrong, so it is decoded again.
    assert decoder.decode(indexed)[-1] == ("custom-key", "custom-header")


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\x80", "index 0"),
        (b"\xff\x00", "past the table"),  # index 127 with an empty table
        (b"\x40\x05ab", "runs past"),
        (b"\x00\x81", "runs past"),
        (b"\x00\x81\xff\x00", "Huffman"),  # 8 bits of padding
        (b"\x3f\xe2\x1f", "exceeds SETTINGS_HEADER_TABLE_SIZE"),  # size update to 4097
        (b"\x82\x20", "follows a header field"),
        (b"\xff\xff\xff\xff\xff\xff\x7f", "too large"),
        (b"\x0f", "ends inside an integer"),
    ],
)
def test_bad_blocks_are_compression_errors_naming_the_fault(block: bytes, why: str) -> None:
    with pytest.raises(hpack.HpackError, match=why):
        hpack.Decoder(1 << 20).decode(block)


def test_a_header_list_over_the_limit_is_refused_but_keeps_the_table_in_step() -> None:
    decoder = hpack.Decoder(100)
    big = b"\x40\x01x\x6e" + b"v" * 110  # inserts x: v*110, over the 100-byte limit
    block = big + dehex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")
    with pytest.raises(hpack.HeaderListTooLarge, match="exceed 100 bytes"):
        decoder.decode(block)
    assert decoder.table[0] == ("custom-key", "custom-header")


def test_the_encoder_writes_literals_the_decoder_reads_back() -> None:
    headers: list[tuple[str, str | bytes]] = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "3"),
        ("grpc-message", "x" * 300),
    ]
    block = hpack.encode(headers)
    assert block[0] == 0x88
    decoder = hpack.Decoder(1 << 20)
    assert decoder.decode(block) == [
        (n, v if isinstance(v, str) else v.decode()) for n, v in headers
    ]
    assert decoder.table == []  # literals without indexing leave the peer's table alone


def test_the_huffman_code_is_appendix_bs() -> None:
    codes = huffman.codes()
    # A few rows of RFC 7541 Appendix B: (symbol, code, bits).
    for symbol, code, bits in [(0, 0x1FF8, 13), (32, 0x14, 6), (48, 0x0, 5), (97, 0x3, 5),
                               (255, 0x3FFFFEE, 26), (256, 0x3FFFFFFF, 30)]:  # fmt: skip
        assert codes[symbol] == (code, bits)
    # A complete prefix code: Kraft's sum is exactly 1.
    assert sum(2 ** (30 - bits) for _, bits in codes) == 2**30


def test_huffman_round_trips_every_octet_and_rejects_eos_and_bad_padding() -> None:
    data = bytes(range(256)) * 2
    assert huffman.decode(huffman.encode(data)) == data
    assert huffman.encode(b"www.example.com") == dehex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
    with pytest.raises(huffman.HuffmanError, match="EOS"):
        huffman.decode(b"\xff\xff\xff\xff")  # EOS (30 ones) then padding
    with pytest.raises(huffman.HuffmanError, match="padding"):
        huffman.decode(b"\x00")  # '0' (00000) then 000: padding of zeros
