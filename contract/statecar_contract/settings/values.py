"""
The value syntaxes Dapr component metadata uses, each parsed one way for every backend.

Every metadata value is a string (Dapr's `spec.metadata[].value`). This module owns how such a
string becomes a typed value: whole numbers, booleans, Go durations and `host:port` addresses.
Parsers raise `SettingValueError`, a message saying what is wrong and how to write it; the
settings reader (`schema`) adds the metadata name and the component, so the message the user
reads is a `ComponentError` naming `spec.metadata.<name>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HostPort",
    "SettingValueError",
    "parse_duration",
    "parse_flag",
    "parse_host_list",
    "parse_host_port",
    "parse_integer",
]


class SettingValueError(ValueError):
    """A metadata value that does not parse; the message says how to write it."""


# --- whole numbers ---------------------------------------------------------------------------

# ASCII digits only: `int()` also accepts " 5", "1_0" and other scripts' digits (U+0665), which
# Go's strconv.Atoi (how daprd reads these settings) refuses; "+5" is refused too, so a number
# has one spelling.
_INTEGER: Final = re.compile(r"-?[0-9]+", re.ASCII)


def parse_integer(
    text: str, *, minimum: int | None = None, maximum: int | None = None, example: str = "5"
) -> int:
    """A whole number in ASCII digits (a leading `-` only where `minimum` allows it)."""
    if not _INTEGER.fullmatch(text):
        raise SettingValueError(f"must be a whole number such as {example}")
    value = int(text)
    if minimum is not None and value < minimum:
        raise SettingValueError(f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise SettingValueError(f"must be at most {maximum}")
    return value


# --- booleans --------------------------------------------------------------------------------

# The spellings statecar has always accepted (the sidecar's old `flag`); anything else, such as
# `maybe`, is an error rather than false, so a typo never silently turns TLS off.
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"", "false", "0", "no", "off"})


def parse_flag(text: str) -> bool:
    """`true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case, surrounding blanks)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SettingValueError("use true or false")


# --- durations -------------------------------------------------------------------------------

# Go's time.ParseDuration syntax: one or more <number><unit>, e.g. `1h30m`, `1.5s`, `500ms`.
_GO_DURATION: Final = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_BARE: Final = re.compile(r"-?[0-9]+", re.ASCII)
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek mu: Go accepts both
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str, *, bare_unit: float) -> float:
    """Seconds from a Go duration (`500ms`, `1m30s`) or a bare whole number of `bare_unit` s.

    A bare number's unit is the component's choice in daprd: seconds for the SQL stores'
    `timeout`/`busyTimeout`/`cleanupInterval` (components-contrib metadata/utils.go,
    `toTimeDurationHookFunc`: "try parsing it as int64 seconds"), milliseconds for Redis's
    `dialTimeout`/`readTimeout` (common/component/redis/settings.go).
    """
    body = text.strip()
    if _BARE.fullmatch(body):
        return float(int(body)) * bare_unit
    sign = -1.0 if body.startswith("-") else 1.0
    unsigned = body[1:] if body[:1] in ("+", "-") else body
    if unsigned == "0":
        return 0.0
    if not _GO_DURATION.fullmatch(unsigned):
        unit = "milliseconds" if bare_unit < 1 else "seconds"
        raise SettingValueError(
            f"use a duration such as 500ms, 2s or 1m30s, or a whole number of {unit}"
        )
    total = sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_DURATION_PART.findall(unsigned))
    return sign * total


# --- addresses -------------------------------------------------------------------------------

_PORT: Final = re.compile(r"[0-9]{1,5}", re.ASCII)


@dataclass(frozen=True, slots=True)
class HostPort:
    """One server address. `host` is bare (an IPv6 address without its brackets)."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """`host:port` as a user writes it, brackets around an IPv6 address included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.address


def parse_port(text: str, *, example: int) -> int:
    """A TCP port, 1 to 65535, in ASCII digits."""
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        what = "is empty" if not text else "is not a number from 1 to 65535"
        raise SettingValueError(f"the port {what}; use an integer port such as {example}")
    return int(text)


def parse_host_port(text: str, *, default_port: int) -> HostPort:
    """`host`, `host:port` or `[v6]:port` (also `[v6]`); a missing port is `default_port`.

    The one splitter for every backend and program. An IPv6 address must be bracketed, as in
    URLs: `::1:6379` could be read two ways, so it is refused with the bracketed spelling.
    Messages never quote the address (it may come from a Secret); the reader adds it when
    it may be shown.
    """
    address = text.strip()
    if not address:
        raise SettingValueError(f"the address is empty; write host or host:{default_port}")
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not host:
            raise SettingValueError(
                f"the address opens '[' without a closing ']'; write [::1]:{default_port}"
            )
        if not rest:
            return HostPort(host, default_port)
        if not rest.startswith(":"):
            raise SettingValueError(f"the address has text after ']'; write [::1]:{default_port}")
        return HostPort(host, parse_port(rest[1:], example=default_port))
    if address.count(":") > 1:
        raise SettingValueError(f"write an IPv6 address in brackets, such as [::1]:{default_port}")
    host, colon, port = address.partition(":")
    if not host:
        raise SettingValueError(f"the address has no host; write host:{default_port}")
    if not colon:
        return HostPort(host, default_port)
    return HostPort(host, parse_port(port, example=default_port))


def parse_host_list(text: str, *, default_port: int) -> tuple[HostPort, ...]:
    """A comma-separated list of addresses (blank entries skipped); at least one."""
    parts = list(_parts(text))
    if not parts:
        raise SettingValueError(f"no address given; write host:{default_port}")
    hosts: list[HostPort] = []
    for number, part in enumerate(parts, start=1):
        try:
            hosts.append(parse_host_port(part, default_port=default_port))
        except SettingValueError as exc:
            if len(parts) == 1:
                raise
            raise SettingValueError(f"address {number} of {len(parts)}: {exc}") from None
    return tuple(hosts)


def _parts(text: str) -> Iterator[str]:
    return (part for part in text.split(",") if part.strip())
