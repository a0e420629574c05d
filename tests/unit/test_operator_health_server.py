"""Readiness (warm indexes + loaded certificate), the probe server, the dev certificate, and the
webhook server's TLS and namespace filling, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from tests.support.ports import free_port

from statecar_operator import health_server
from statecar_operator.webhook_tls.issuing import self_signed
from statecar_operator.webhook_tls.server import StatecarWebhookServer, fill_namespace


def test_readiness_needs_both_warm_indexes_and_a_certificate() -> None:
    readiness = health_server.Readiness()
    assert not readiness.ready
    readiness.note_indexed("a")
    assert not readiness.check_warm({"a", "b"})
    readiness.note_indexed("b")
    assert readiness.check_warm({"a", "b"})
    assert not readiness.ready
    readiness.cert_loaded = True
    assert readiness.ready
    assert readiness.check_warm({"c"})  # once warm, stays warm


async def test_wait_until_warm_relists_and_reports_problems() -> None:
    readiness = health_server.Readiness()
    calls = {"n": 0}

    async def listing() -> set[str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the server could not find the requested resource")
        readiness.note_indexed("x")
        return {"x"}

    await asyncio.wait_for(health_server.wait_until_warm(readiness, listing, interval=0.01), 5)
    assert readiness.indexes_warm
    assert calls["n"] == 2


@contextlib.asynccontextmanager
async def serving(readiness: health_server.Readiness) -> AsyncIterator[int]:
    port = free_port()
    task = asyncio.create_task(
        health_server.serve(
            readiness, addr="127.0.0.1", port=port, details=lambda: {"leader": True}
        )
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.02)
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_probe_endpoints() -> None:
    readiness = health_server.Readiness()
    async with serving(readiness) as port, aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
            assert (await response.json()) == {"alive": True, "leader": True}
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["indexesWarm"] is False
        readiness.check_warm(set())
        readiness.cert_loaded = True
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200


def test_the_dev_certificate_is_signed_by_its_ca() -> None:
    certs = self_signed(["statecar.ops.svc", "127.0.0.1"])
    ca = x509.load_pem_x509_certificate(certs.ca_pem)
    leaf = x509.load_pem_x509_certificate(certs.cert_pem)
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["statecar.ops.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(ValueError, match="at least one host name"):
        self_signed([])


def test_fill_namespace() -> None:
    request: dict[str, Any] = {
        "request": {"namespace": "shop", "object": {"metadata": {"name": "p"}}}
    }
    fill_namespace(request)
    assert request["request"]["object"]["metadata"]["namespace"] == "shop"
    kept: dict[str, Any] = {
        "request": {"namespace": "shop", "object": {"metadata": {"namespace": "x"}}}
    }
    fill_namespace(kept)
    assert kept["request"]["object"]["metadata"]["namespace"] == "x"
    fill_namespace({"nothing": 1})


async def test_the_webhook_server_serves_tls_fills_the_namespace_and_reports_readiness(
    tmp_path: Path,
) -> None:
    certs = self_signed(["localhost", "127.0.0.1"])
    for name, data in (
        ("tls.crt", certs.cert_pem),
        ("tls.key", certs.key_pem),
        ("ca.crt", certs.ca_pem),
    ):
        (tmp_path / name).write_bytes(data)
    listening = asyncio.Event()
    port = free_port()
    server = StatecarWebhookServer(
        on_listening=listening.set,
        addr="127.0.0.1",
        port=port,
        host="127.0.0.1",
        certfile=tmp_path / "tls.crt",
        pkeyfile=tmp_path / "tls.key",
        cafile=tmp_path / "ca.crt",
    )
    seen: list[tuple[Any, Any]] = []

    async def fn(
        request: Any, *, webhook: Any = None, headers: Any = None, sslpeer: Any = None
    ) -> Any:
        seen.append((request["request"]["object"]["metadata"].get("namespace"), webhook))
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": request["request"]["uid"], "allowed": True},
        }

    async def run() -> None:
        async for config in server(fn):
            assert "caBundle" in config

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(listening.wait(), 10)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "1", "namespace": "shop", "object": {"metadata": {}}},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"https://127.0.0.1:{port}/inject-pods", data=json.dumps(review), ssl=context
            ) as response,
        ):
            assert response.status == 200
            assert (await response.json())["response"]["allowed"] is True
        assert seen == [("shop", "inject-pods")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
