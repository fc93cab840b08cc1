"""TLS and mutual TLS on the gRPC port, with a CA made here: the Python client, the CLI and buf curl
connect with the right certificates; plaintext, an unknown CA and (under mTLS) no client
certificate are refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from lace_client import LaceClient
from lace_client.errors import LaceClientError
from lace_engine.errors import InvalidArgument
from lace_server.tls import server_credentials
from tests.conftest import make_settings, serve_fresh
from tests.support.certs import Authority

REPO = Path(__file__).resolve().parents[1]
BUF = REPO / "node_modules" / ".bin" / "buf"


async def buf_list_artifacts(target: str, *flags: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(BUF), "curl", "--protocol", "grpc", *flags, "--data", "{}",
        f"https://{target}/lace.v1.ArtifactService/ListArtifacts",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


@pytest.mark.timeout(180)
async def test_server_tls_the_client_and_buf_curl_connect_and_plaintext_is_refused(
        pg_server_url: str, tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    server = ca.issue("lace-server", server=True)
    async with serve_fresh(pg_server_url, tls_cert=str(server.cert), tls_key=str(server.key)) as (target, _r, _u):
        async with LaceClient.connect(target, root_certificates=ca.ca_file.read_bytes()) as client:
            created = await client.create_artifact("Over TLS", "A brief sent encrypted.", 600)
            assert (await client.get_artifact(created.id)).artifact.title == "Over TLS"
        async with LaceClient.connect(target, timeout=5) as plain:  # no TLS at all
            with pytest.raises(LaceClientError):
                await plain.get_artifact(created.id)
        (tmp_path / "other").mkdir()
        stranger = Authority(tmp_path / "other", "Other CA")
        async with LaceClient.connect(target, root_certificates=stranger.ca_file.read_bytes(), timeout=5) as wrong:
            with pytest.raises(LaceClientError):
                await wrong.get_artifact(created.id)
        code, out = await buf_list_artifacts(target, "--cacert", str(ca.ca_file))
        assert code == 0, out
        assert created.id in {a["id"] for a in json.loads(out)["artifacts"]}


@pytest.mark.timeout(180)
async def test_mutual_tls_refuses_a_client_without_a_certificate_of_the_client_ca(
        pg_server_url: str, tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    server, client_pem = ca.issue("lace-server", server=True), ca.issue("lace-client", server=False)
    (tmp_path / "rogue").mkdir()
    rogue = Authority(tmp_path / "rogue", "Rogue CA").issue("rogue-client", server=False)
    async with serve_fresh(pg_server_url, tls_cert=str(server.cert), tls_key=str(server.key),
                           tls_client_ca=str(ca.ca_file)) as (target, _r, _u):
        root = ca.ca_file.read_bytes()
        async with LaceClient.connect(target, root_certificates=root, certificate_chain=client_pem.cert.read_bytes(),
                                      private_key=client_pem.key.read_bytes()) as client:
            created = await client.create_artifact("Mutual", "Both sides show a certificate.", 600)
        for chain, key in ((None, None), (rogue.cert.read_bytes(), rogue.key.read_bytes())):
            async with LaceClient.connect(target, root_certificates=root, certificate_chain=chain, private_key=key,
                                          timeout=5) as refused:
                with pytest.raises(LaceClientError) as raised:
                    await refused.get_artifact(created.id)
                assert raised.value.code is grpc.StatusCode.UNAVAILABLE
        code, out = await buf_list_artifacts(target, "--cacert", str(ca.ca_file))
        assert code != 0  # buf curl without a client certificate
        code, out = await buf_list_artifacts(target, "--cacert", str(ca.ca_file), "--cert", str(client_pem.cert),
                                             "--key", str(client_pem.key))
        assert code == 0, out
        assert created.id in out


def test_half_a_tls_configuration_is_refused_before_anything_starts(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    server = ca.issue("lace-server", server=True)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("plain text")
    for settings in (make_settings(tls_cert=str(server.cert)), make_settings(tls_client_ca=str(ca.ca_file)),
                     make_settings(tls_cert=str(server.cert), tls_key=str(tmp_path / "missing.key")),
                     make_settings(tls_cert=str(not_pem), tls_key=str(server.key))):
        with pytest.raises(InvalidArgument):
            server_credentials(settings)
