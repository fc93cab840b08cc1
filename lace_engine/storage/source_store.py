"""Sources and their passages: writes, reads and full-text retrieval in PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lace_engine.domain import Passage, Source
from lace_engine.errors import NotFound
from lace_engine.storage import tenant_scope
from lace_engine.storage.schema import passages, sources

# Retrieval's query is the node's words OR-ed together: websearch_to_tsquery ANDs plain words,
# and a section title and intent rarely share every word with any one passage.
_QUERY_WORDS = 64
_WORD = re.compile(r"[^\W_]{3,}", re.UNICODE)

_SOURCE_COLUMNS = [c for c in sources.c if c.name != "text"]


def row_to_source(r: Any) -> Source:
    return Source(
        id=r.id, artifact_id=r.artifact_id, title=r.title, media_type=r.media_type, size_bytes=int(r.size_bytes),
        char_count=r.char_count, passage_count=r.passage_count, content_hash=r.content_hash,
        create_time=r.create_time, delete_time=r.delete_time,
    )


def row_to_passage(r: Any) -> Passage:
    return Passage(
        id=r.id, source_id=r.source_id, ordinal=r.ordinal, start_offset=r.start_offset, end_offset=r.end_offset,
        text=r.text, content_hash=r.content_hash, source_title=r.source_title,
    )


def _passage_select() -> sa.Select[Any]:
    return sa.select(passages.c.id, passages.c.source_id, passages.c.ordinal, passages.c.start_offset,
                     passages.c.end_offset, passages.c.text, passages.c.content_hash,
                     sources.c.title.label("source_title")).join(sources, sources.c.id == passages.c.source_id)


async def insert_source(conn: AsyncConnection, source: Source, text: str, items: Sequence[Passage]) -> None:
    """Writes a source and all its passages; the caller's transaction makes it all or nothing."""
    await conn.execute(sources.insert().values(
        id=source.id, artifact_id=source.artifact_id, title=source.title, media_type=source.media_type,
        size_bytes=source.size_bytes, char_count=source.char_count, passage_count=source.passage_count,
        content_hash=source.content_hash, text=text, create_time=source.create_time))
    if items:
        await conn.execute(passages.insert(), [
            {"id": p.id, "source_id": source.id, "artifact_id": source.artifact_id, "ordinal": p.ordinal,
             "start_offset": p.start_offset, "end_offset": p.end_offset, "text": p.text,
             "content_hash": p.content_hash}
            for p in items
        ])


async def get_source(conn: AsyncConnection, source_id: uuid.UUID, *, tenant: str | None = None) -> Source:
    """The source, if `tenant` owns its artifact (NotFound otherwise; None: any tenant's)."""
    row = (await conn.execute(sa.select(*_SOURCE_COLUMNS).where(
        sources.c.id == source_id, tenant_scope.owned_by(sources.c.artifact_id, tenant)))).first()
    if row is None:
        raise NotFound(f"source {source_id} not found", reason="SOURCE_NOT_FOUND",
                       metadata={"source_id": str(source_id)})
    return row_to_source(row)


async def list_sources(conn: AsyncConnection, artifact_id: uuid.UUID, *, limit: int,
                       after: tuple[str, str] | None) -> list[Source]:
    """Live sources of the artifact, oldest first, after the (create_time, id) position if given."""
    query = sa.select(*_SOURCE_COLUMNS).where(sources.c.artifact_id == artifact_id, sources.c.delete_time.is_(None))
    if after is not None:
        query = query.where(sa.tuple_(sources.c.create_time, sources.c.id)
                            > sa.tuple_(sa.cast(after[0], sa.DateTime(timezone=True)), sa.cast(after[1], sa.Uuid)))
    rows = await conn.execute(query.order_by(sources.c.create_time, sources.c.id).limit(limit))
    return [row_to_source(r) for r in rows]


async def mark_deleted(conn: AsyncConnection, source_id: uuid.UUID) -> None:
    """Stops the source's passages from being retrieved; a second call changes nothing."""
    await conn.execute(sources.update().where(sources.c.id == source_id, sources.c.delete_time.is_(None))
                       .values(delete_time=sa.func.now()))
    await conn.execute(passages.update().where(passages.c.source_id == source_id).values(retrievable=False))


async def source_passages(conn: AsyncConnection, source_id: uuid.UUID) -> list[Passage]:
    rows = await conn.execute(_passage_select().where(passages.c.source_id == source_id)
                              .order_by(passages.c.ordinal))
    return [row_to_passage(r) for r in rows]


async def passages_by_id(conn: AsyncConnection, artifact_id: uuid.UUID,
                         ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Passage]:
    """The artifact's passages among `ids`, deleted sources' included; ids of other artifacts are absent."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = await conn.execute(_passage_select().where(passages.c.artifact_id == artifact_id,
                                                      passages.c.id.in_(wanted)))
    return {r.id: row_to_passage(r) for r in rows}


def retrieval_query(texts: Iterable[str]) -> str:
    """A websearch_to_tsquery text matching any of the words of `texts` (first occurrences, capped)."""
    words = dict.fromkeys(w.casefold() for t in texts for w in _WORD.findall(t))
    return " or ".join(list(words)[:_QUERY_WORDS])


async def has_retrievable(conn: AsyncConnection, artifact_id: uuid.UUID) -> bool:
    row = (await conn.execute(sa.select(passages.c.id).where(
        passages.c.artifact_id == artifact_id, passages.c.retrievable).limit(1))).first()
    return row is not None


# Plain SQL, prepared once per connection: retrieval runs before every section written, and
# building this statement through SQLAlchemy cost more CPU than PostgreSQL's answer with no sources.
RETRIEVE_SQL = """
SELECT p.id, p.source_id, p.ordinal, p.start_offset, p.end_offset, p.text, p.content_hash, s.title
FROM passages p JOIN sources s ON s.id = p.source_id
WHERE p.artifact_id = %(artifact)s AND p.retrievable AND p.tsv @@ websearch_to_tsquery('english', %(query)s)
ORDER BY ts_rank(p.tsv, websearch_to_tsquery('english', %(query)s)) DESC, p.source_id, p.ordinal
LIMIT %(limit)s"""


async def retrieve(conn: psycopg.AsyncConnection[Any], artifact_id: uuid.UUID, query_text: str, *,
                   limit: int) -> list[Passage]:
    """The artifact's retrievable passages best matching `query_text` by ts_rank, best first
    (one prepared statement on a fast-read connection: it runs before every section written)."""
    if not query_text:
        return []
    cur = await conn.execute(RETRIEVE_SQL, {"artifact": artifact_id, "query": query_text, "limit": limit},
                               prepare=True)
    return [Passage(id=r[0], source_id=r[1], ordinal=r[2], start_offset=r[3], end_offset=r[4], text=r[5],
                    content_hash=r[6], source_title=r[7]) for r in await cur.fetchall()]
