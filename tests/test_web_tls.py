"""Envoy's upstream over TLS: with LACE_TLS_CERT (and mutual TLS) on the gRPC port, `lace serve --web`'s
Envoy verifies the server and shows its own certificate; a grpc-web call through it reaches the server."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
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


async def list_through_envoy(grpc_port: int, static_dir: Path, tls: UpstreamTls) -> tuple[str, list[str]]:
    """A `lace serve --web` Envoy in front of `grpc_port` with upstream `tls`, for one grpc-web ListArtifacts."""
    web = WebFrontend(grpc_port, free_port(), static_dir, grpc_tls=tls)
    await web.start()
    try:
        return await grpc_web_list_artifacts(web.web_port)
    finally:
        await web.stop()


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
        status, ids = await list_through_envoy(running.port, static_dir, with_cert)
        assert status == "0" and created.id in ids

        # Envoy without a certificate of the client CA is refused by the server: nothing listed.
        status, ids = await list_through_envoy(running.port, static_dir, UpstreamTls(str(ca.ca_file)))
        assert status == "14" and ids == []  # UNAVAILABLE: the upstream handshake failed


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


REPO = Path(__file__).resolve().parents[1]
COMPOSE_TLS_ARGS = ["--print-config", "--grpc-address", "lace:50051", "--static-address", "web:80", "--web-host",
                    "0.0.0.0", "--web-port", "8080", "--upstream-ca", "/etc/lace/tls/ca.crt", "--client-cert",
                    "/etc/lace/tls/envoy.crt", "--client-key", "/etc/lace/tls/envoy.key"]


def compose_healthcheck(path: Path) -> str:
    """The Python of the first folded (`>-`) healthcheck command in a compose file."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- >-")
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line.strip())
    return " ".join(b for b in body if b)


def test_the_compose_tls_overlay_renders_envoy_as_committed(capsys: pytest.CaptureFixture[str]) -> None:
    from lace_server.web import main

    assert main(COMPOSE_TLS_ARGS) == 0
    assert capsys.readouterr().out == (REPO / "deploy/envoy-tls.yaml").read_text(), \
        "deploy/envoy-tls.yaml is stale: re-render it with the command on its first line"


@pytest.mark.timeout(180)
async def test_dev_certs_serve_mutual_tls_for_the_client_envoy_and_the_compose_healthcheck(
        pg_server_url: str, tmp_path: Path, static_dir: Path) -> None:
    """scripts/dev-certs.sh's files, as docker-compose.tls.yaml uses them: the server takes them under
    mutual TLS, the Python client and Envoy connect with theirs, and the overlay's healthcheck passes."""
    tls = tmp_path / "tls"
    made = await asyncio.create_subprocess_exec(str(REPO / "scripts/dev-certs.sh"), str(tls), "localhost",
                                                stdout=asyncio.subprocess.DEVNULL)
    assert await made.wait() == 0
    async with serve_fresh(pg_server_url, tls_cert=str(tls / "server.crt"), tls_key=str(tls / "server.key"),
                           tls_client_ca=str(tls / "ca.crt")) as (target, running, _):
        async with LaceClient.connect(target, root_certificates=(tls / "ca.crt").read_bytes(),
                                      certificate_chain=(tls / "client.crt").read_bytes(),
                                      private_key=(tls / "client.key").read_bytes()) as client:
            created = await client.create_artifact("Over dev certificates", "A brief for the TLS overlay.", 600)
        status, ids = await list_through_envoy(
            running.port, static_dir, UpstreamTls(str(tls / "ca.crt"), str(tls / "envoy.crt"), str(tls / "envoy.key")))
        assert status == "0" and created.id in ids
        # The overlay's healthcheck, pointed at this server and these files (the server's name is localhost).
        script = (compose_healthcheck(REPO / "docker-compose.tls.yaml")
                  .replace("/etc/lace/tls/", f"{tls}/").replace("127.0.0.1:50051", target)
                  .replace("'grpc.ssl_target_name_override', 'lace'", "'grpc.ssl_target_name_override', 'localhost'"))
        probe = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        assert await asyncio.wait_for(probe.wait(), 60) == 0
