"""An artifact's sources: adding (extract, split, index in one transaction), reading and deleting.

Sources are input, like the brief, not IR: they change no artifact version. What the IR takes
from them, citations, goes through Deterministic Apply like every other change.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lace_engine.domain import Origin, Passage, Source
from lace_engine.errors import InvalidArgument
from lace_engine.ids import new_id
from lace_engine.pipeline import staleness
from lace_engine.pipeline.apply import Mutation, Provenance
from lace_engine.pipeline.context_builder import content_hash
from lace_engine.pipeline.source_text import MAX_TITLE_CHARS, extract_text, split_passages
from lace_engine.storage import apply_store, idempotency, ir_store, pagination, source_store
from lace_engine.storage.database import Database, Tx
from lace_engine.tenancy import DEFAULT_TENANT

_PASSAGE_NAMESPACE = uuid.UUID("6b1f7f0e-58a4-4a53-9d43-0b5a6c1e2f11")


@dataclass(frozen=True, slots=True)
class NewSource:
    artifact_id: uuid.UUID
    title: str
    media_type: str
    data: bytes


def passage_id_for(source_id: uuid.UUID, ordinal: int) -> uuid.UUID:
    """Passage ids are a function of their source and position: stable, and never proposed by a model."""
    return uuid.uuid5(_PASSAGE_NAMESPACE, f"{source_id}/{ordinal}")


def prepare(source_id: uuid.UUID, new: NewSource, now: datetime) -> tuple[Source, str, list[Passage]]:
    """Validates and extracts a new source: the row, its text and its passages; InvalidArgument if unusable."""
    title = " ".join(new.title.split())
    if not title:
        raise InvalidArgument("title is required", reason="MISSING_FIELD", metadata={"field": "title"})
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidArgument(f"title is longer than {MAX_TITLE_CHARS} characters", reason="FIELD_TOO_LONG",
                              metadata={"field": "title"})
    text = extract_text(new.media_type, new.data)
    spans = split_passages(text)
    passages = [Passage(id=passage_id_for(source_id, s.ordinal), source_id=source_id, ordinal=s.ordinal,
                        start_offset=s.start, end_offset=s.end, text=s.text, content_hash=content_hash(s.text),
                        source_title=title) for s in spans]
    source = Source(id=source_id, artifact_id=new.artifact_id, title=title, media_type=new.media_type,
                    size_bytes=len(new.data), char_count=len(text), passage_count=len(passages),
                    content_hash=hashlib.sha256(text.encode()).hexdigest(), create_time=now)
    return source, text, passages


class SourceLibrary:
    """The sources of every artifact, in the canonical database."""

    def __init__(self, db: Database):
        self.db = db

    async def add(self, new: NewSource, request_id: str = "", *, tenant: str = DEFAULT_TENANT) -> Source:
        req = idempotency.request("AddSource", request_id, {
            "artifact_id": str(new.artifact_id), "title": new.title, "media_type": new.media_type,
            "sha256": hashlib.sha256(new.data).hexdigest()}, tenant=tenant)
        source, text, passages = prepare(new_id(), new, datetime.now(UTC))  # before anything is read

        async def write(tx: Tx) -> Source:
            await ir_store.get_artifact(tx.conn, new.artifact_id, tenant=tenant)  # NOT_FOUND before anything
            await source_store.insert_source(tx.conn, source, text, passages)
            return source

        return (await idempotency.once(self.db, req, source.id, write, source_store.get_source)).value

    async def get(self, source_id: uuid.UUID, *, with_passages: bool,
                  tenant: str = DEFAULT_TENANT) -> tuple[Source, list[Passage]]:
        async with self.db.read() as conn:
            source = await source_store.get_source(conn, source_id, tenant=tenant)
            return source, (await source_store.source_passages(conn, source_id) if with_passages else [])

    async def list(self, artifact_id: uuid.UUID, page_size: int, page_token: str, *,
                   tenant: str = DEFAULT_TENANT) -> tuple[list[Source], str]:
        size = pagination.page_size(page_size, default=50, maximum=500)
        query = ["sources", str(artifact_id)]
        position = pagination.decode(page_token, query)
        async with self.db.read() as conn:
            await ir_store.get_artifact(conn, artifact_id, tenant=tenant)
            items = await source_store.list_sources(conn, artifact_id, limit=size + 1,
                                                    after=tuple(position) if position else None)
        return pagination.page(items, size, query, lambda s: [s.create_time.isoformat(), str(s.id)])

    async def delete(self, source_id: uuid.UUID, *, tenant: str = DEFAULT_TENANT) -> Source:
        """Stops retrieving the source; the written sections whose prompts used its passages are
        marked stale, through Apply, in the same transaction (a second delete changes nothing)."""
        async with self.db.transaction() as tx:
            source = await source_store.get_source(tx.conn, source_id, tenant=tenant)
            await source_store.mark_deleted(tx.conn, source_id)
            if source.delete_time is None:
                passages = [p.id for p in await source_store.source_passages(tx.conn, source_id)]
                users = await ir_store.passage_readers(tx.conn, source.artifact_id, passages)
                if users:
                    reason = f"source {source.title!r} was deleted; this section's prompt used its passages"
                    marks = staleness.with_marks(Mutation(source.artifact_id, Provenance(origin=Origin.HUMAN)),
                                                 dict.fromkeys(users, reason), in_run=False)
                    await apply_store.write_mutation(tx, marks)
            return await source_store.get_source(tx.conn, source_id)
