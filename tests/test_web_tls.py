"""Envoy's upstream over TLS: with LACE_TLS_CERT (and mutual TLS) on the gRPC port, `lace serve --web`'s
Envoy verifies the server and shows its own certificate; a grpc-web call through it reaches the server."""

from __future__ import annotations

import asyncio
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lace.v1 import artifact_service_pb2
from lace_client import LaceClient
from lace_server.web import UpstreamTls, WebFrontend, render_envoy_config, upstream_tls
from tests.conftest import make_settings, serve_fresh
from tests.support.certs import Authority


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def grpc_web_list_artifacts(web_port: int) -> tuple[str, list[str]]:
    """One grpc-web ListArtifacts through Envoy: (grpc-status, the ids listed)."""
    message = artifact_service_pb2.ListArtifactsRequest(page_size=500).SerializeToString()
    request = urllib.request.Request(
        f"http://127.0.0.1:{web_port}/lace.v1.ArtifactService/ListArtifacts", method="POST",
        data=struct.pack(">BI", 0, len(message)) + message,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"})

    def post() -> tuple[bytes, str]:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read(), response.headers.get("grpc-status", "")
        except urllib.error.HTTPError as err:  # Envoy's own answer when the upstream cannot be reached
            return b"", err.headers.get("grpc-status", f"HTTP {err.code}")

    body, status = await asyncio.to_thread(post)
    ids: list[str] = []
    while body:  # frames: a flag byte, a 4-byte length, then a message (0x00) or the trailers (0x80)
        flag, length = struct.unpack(">BI", body[:5])
        frame, body = body[5:5 + length], body[5 + length:]
        if flag & 0x80:
            trailers = dict(line.split(":", 1) for line in frame.decode().strip().split("\r\n") if ":" in line)
            status = trailers.get("grpc-status", status).strip()
        else:
            ids = [a.id for a in artifact_service_pb2.ListArtifactsResponse.FromString(frame).artifacts]
    return status, ids


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>LACE</title>")
    return dist


@pytest.mark.timeout(180)
async def test_envoy_reaches_a_tls_server_and_shows_its_certificate_under_mutual_tls(
        pg_server_url: str, tmp_path: Path, static_dir: Path) -> None:
    ca = Authority(tmp_path)
    server, envoy_pem = ca.issue("lace-server", server=True), ca.issue("lace-envoy", server=False)
    async with serve_fresh(pg_server_url, tls_cert=str(server.cert), tls_key=str(server.key),
                           tls_client_ca=str(ca.ca_file)) as (target, running, _):
        async with LaceClient.connect(target, root_certificates=ca.ca_file.read_bytes(),
                                      certificate_chain=envoy_pem.cert.read_bytes(),
                                      private_key=envoy_pem.key.read_bytes()) as client:
            created = await client.create_artifact("Through Envoy", "A brief for the browser path.", 600)

        with_cert = UpstreamTls(str(ca.ca_file), str(envoy_pem.cert), str(envoy_pem.key))
        web = WebFrontend(running.port, free_port(), static_dir, grpc_tls=with_cert)
        await web.start()
        try:
            status, ids = await grpc_web_list_artifacts(web.web_port)
            assert status == "0" and created.id in ids
        finally:
            await web.stop()

        # Envoy without a certificate of the client CA is refused by the server: nothing listed.
        web = WebFrontend(running.port, free_port(), static_dir, grpc_tls=UpstreamTls(str(ca.ca_file)))
        await web.start()
        try:
            status, ids = await grpc_web_list_artifacts(web.web_port)
            assert status == "14" and ids == []  # UNAVAILABLE: the upstream handshake failed
        finally:
            await web.stop()


def test_the_upstream_tls_follows_the_server_settings(tmp_path: Path) -> None:
    assert upstream_tls(make_settings()) is None
    plain_tls = upstream_tls(make_settings(tls_cert="server.pem", tls_key="server.key"))
    assert plain_tls is not None and plain_tls.ca_file.endswith("server.pem") and not plain_tls.cert_file
    with pytest.raises(RuntimeError, match="LACE_WEB_CLIENT_CERT"):
        upstream_tls(make_settings(tls_cert="s.pem", tls_key="s.key", tls_client_ca="ca.pem"))
    mutual = upstream_tls(make_settings(tls_cert="s.pem", tls_key="s.key", tls_client_ca="ca.pem",
                                        web_upstream_ca="ca.pem", web_client_cert="e.pem", web_client_key="e.key"))
    assert mutual is not None and mutual.ca_file.endswith("ca.pem") and mutual.cert_file.endswith("e.pem")
    config = render_envoy_config(grpc_host="lace", grpc_port=50051, web_host="0.0.0.0", web_port=8080,
                                 static_host="web", static_port=80, grpc_tls=mutual)
    assert "UpstreamTlsContext" in config and "sni: lace" in config and mutual.key_file in config
    assert "UpstreamTlsContext" not in render_envoy_config(grpc_host="lace", grpc_port=50051, web_host="0.0.0.0",
                                                           web_port=8080, static_host="web", static_port=80)
