"""The `lace` command: serve, migrate, worker, and client subcommands for run control."""

from __future__ import annotations

import argparse
import os
import sys

from lace_engine.config import Settings
from lace_engine.errors import LaceError
from lace_engine.llm.factory import PROVIDERS
from lace_server import event_loop, logs

DEFAULT_LISTEN = "127.0.0.1:50051"


def _serve(args: argparse.Namespace) -> int:
    from lace_server.server import serve_forever

    if args.llm:
        os.environ["LACE_LLM"] = args.llm  # read by the provider factory with the rest of its variables
    settings = Settings.from_env()
    if args.no_execute:
        settings = Settings(**{**settings.__dict__, "execute_runs": False})
    if args.web or args.demo:
        from lace_server.launcher import serve_with_extras

        event_loop.run(serve_with_extras(settings, args.listen, web=args.web, web_port=args.web_port,
                                         demo=args.demo), settings.event_loop)
    else:
        event_loop.run(serve_forever(settings, args.listen), settings.event_loop)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from lace_engine.storage import migrate
    from lace_server.server import resolve_database

    settings = Settings.from_env()
    url, embedded = resolve_database(settings)
    try:
        if args.down or args.revision.startswith("-"):
            migrate.downgrade(url, args.revision)
        else:
            migrate.upgrade(url, args.revision)
    finally:
        if embedded is not None:
            embedded.stop()
    print(f"lace: database at revision {args.revision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lace", description="LACE: long-form artifacts from a brief, over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server (embedded PostgreSQL unless LACE_DATABASE_URL is set)")
    serve.add_argument("--listen", default=os.environ.get("LACE_LISTEN", DEFAULT_LISTEN),
                       help=f"host:port to listen on (default {DEFAULT_LISTEN})")
    serve.add_argument("--no-execute", action="store_true",
                       help="serve the API only; runs are executed by `lace worker` processes")
    serve.add_argument("--web", action="store_true", help="also run Envoy (grpc-web) and serve the browser UI")
    serve.add_argument("--llm", choices=PROVIDERS,
                       help="LLM provider (env LACE_LLM); 'local' runs llama.cpp's llama-server with a small model")
    serve.add_argument("--web-port", type=int, default=8080, help="port of the browser UI and grpc-web (default 8080)")
    serve.add_argument("--demo", action="store_true",
                       help="after start-up, write a sample artifact through the API and save it as Markdown")
    serve.set_defaults(func=_serve)

    mig = sub.add_parser("migrate", help="apply database migrations (to head by default)")
    mig.add_argument("revision", nargs="?", default="head")
    mig.add_argument("--down", action="store_true", help="downgrade to the given revision instead")
    mig.set_defaults(func=_migrate)

    try:
        from lace_client.cli import add_client_commands
    except ImportError:  # the client package is optional for a server-only install
        pass
    else:
        add_client_commands(sub)
    try:
        from lace_server.worker import add_worker_command
    except ImportError:
        pass
    else:
        add_worker_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The embedded server's pg_ctl runs in a subprocess; gRPC's fork handlers only add log noise.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    logs.configure(os.environ.get("LACE_LOG_LEVEL", "INFO"), os.environ.get("LACE_LOG_FORMAT", "json"))
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except LaceError as exc:
        print(f"lace: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
