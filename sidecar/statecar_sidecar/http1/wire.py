"""
The bytes every HTTP/1.1 response starts with: the status line and the `date` header.
"""

from __future__ import annotations

from http import HTTPStatus
from time import gmtime, time
from typing import Final

_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}


#: Statuses whose answers never carry a body (RFC 9110 §6.4.1).
NO_BODY_STATUSES: Final = frozenset({204, 304})


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


class _Clock:
    """The `date` header, formatted once a second (RFC 9110 §6.6.1 asks for it on every answer)."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = 0
        self._line = b""

    def date_line(self) -> bytes:
        now = int(time())
        if now != self._second:
            self._second = now
            self._line = b"date: %s\r\n" % http_date(now)
        return self._line


CLOCK: Final = _Clock()

_DAYS: Final = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS: Final = (
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
)  # fmt: skip


def http_date(epoch: int) -> bytes:
    """RFC 9110 §5.6.7's IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT` (English names whatever
    the locale; email.utils would do the same at the cost of importing the email package)."""
    t = gmtime(epoch)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec,
    )  # fmt: skip
