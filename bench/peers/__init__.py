"""11. Peers: the same job written with LACE, LangGraph (AsyncPostgresSaver) and DBOS (see harness.py)."""

from __future__ import annotations

from bench.common import Context, Row

NAME = "peers"


async def run(ctx: Context) -> list[Row]:
    from bench.peers.harness import run_peers

    return await run_peers(ctx)
