"""
The bytes every HTTP/1.1 response starts with: the status line and the `date` header.
"""

from __future__ import annotations

from email.utils import formatdate
from http import HTTPStatus
from time import time
from typing import Final

_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}


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
            self._line = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
        return self._line


CLOCK: Final = _Clock()
