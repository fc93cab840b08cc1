"""Stale sections: which written nodes a change to the IR leaves out of date with what they were
written from. Pure functions over plain data; the rule is documented in docs/engine.md.

Every applied write call's prompt has a manifest (context_builder.ManifestEntry): the node ids it
showed, as which kind of piece, with the hash of the piece's text. `storage/ir_store` keeps the
node ids of each written node's latest one (`node_dependencies`, as `Reference`s) and finds the
references to the nodes a change touched; this module decides which of them are stale and why, and
adds the marks to the change's own Mutation, so Apply writes them in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from lace_engine.domain import EventType, NewEvent, Node, NodeState
from lace_engine.pipeline.apply import Mutation, NodePatch
from lace_engine.pipeline.context_builder import ManifestEntry, contribution_hash
from lace_engine.pipeline.tree import Tree

# Which of a referenced node's fields each kind of manifest piece shows ("text": its blocks, which
# its summary describes; "position": its place among its siblings; "parent": where it sits).
# Budgets are left out on purpose except for the node itself: every budget edit changes its
# parent's and the root's, and no section's text depends on how long its relatives are.
SHOWN: Mapping[str, frozenset[str]] = {
    "node": frozenset({"title", "intent", "target_words", "parent"}),
    "ancestor": frozenset({"title", "intent", "parent"}),
    "sibling": frozenset({"title", "intent", "position", "parent"}),
    "summary": frozenset({"title", "summary", "text", "parent"}),
    "covered_heading": frozenset({"title"}),
}
# Kinds whose stored hash can be compared exactly with what the node contributes now.
HASHED = frozenset({"summary", "covered_heading"})
# The order reasons are chosen in when several references of one node are stale.
_KIND_ORDER = {kind: i for i, kind in enumerate(SHOWN)}
_WHAT = {
    "ancestor": "title and intent in this section's path",
    "sibling": "entry in the sibling outline",
    "summary": "summary",
    "covered_heading": "title among the headings covered elsewhere",
}


@dataclass(frozen=True, slots=True)
class Reference:
    """One row of node_dependencies: the prompt of `node_id`'s latest applied write call showed
    `depends_on` as a `kind` piece whose text hashed to `content_hash`. `node_stale` is the
    dependant's stale_reason as it is now."""

    node_id: uuid.UUID
    depends_on: uuid.UUID
    kind: str
    content_hash: str
    node_stale: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """What a change did to one node: `before` and `after` (None: deleted), the fields that differ,
    and the cause in words ("was edited by a person")."""

    before: Node
    after: Node | None
    fields: frozenset[str]
    cause: str


@dataclass(frozen=True, slots=True)
class Arrival:
    """A node that appeared among siblings that never saw it (created, or moved in)."""

    node: Node
    siblings: tuple[uuid.UUID, ...]


def text_edited(node: Node) -> Change:
    """A person changed the text of one of `node`'s blocks; its summary (the model's) is unchanged."""
    return Change(node, node, frozenset({"text"}), f"section {node.title!r} was edited by a person")


def rewritten(before: Node, after: Node, run_id: uuid.UUID | None) -> Change:
    """A run wrote `before` again: its blocks and summary are new."""
    fields = frozenset({"summary"}) if before.summary != after.summary else frozenset()
    by = f" by run {run_id}" if run_id else ""
    return Change(before, after, fields, f"section {before.title!r} was rewritten{by}")


def outline_changes(before: Tree, after: Tree) -> tuple[dict[uuid.UUID, Change], list[Arrival]]:
    """What an outline edit changed, node by node, and the nodes it placed among new siblings."""
    changes: dict[uuid.UUID, Change] = {}
    arrivals: list[Arrival] = []
    for old in before.preorder():
        if old.id not in after:
            changes[old.id] = Change(old, None, frozenset({"deleted"}), f"section {old.title!r} was deleted")
            continue
        new = after.get(old.id)
        fields = {f for f in ("title", "intent", "target_words") if getattr(old, f) != getattr(new, f)}
        if old.parent_id != new.parent_id:
            fields.add("parent")
        elif old.ordinal != new.ordinal:
            fields.add("position")
        if fields:
            changes[old.id] = Change(old, new, frozenset(fields), _outline_cause(old, new, fields))
    for new in after.preorder():
        moved_in = new.id in before and before.get(new.id).parent_id != new.parent_id
        if (new.id not in before or moved_in) and new.parent_id is not None:
            arrivals.append(Arrival(new, tuple(s.id for s in after.children(new.parent_id) if s.id != new.id)))
    return changes, arrivals


def _outline_cause(old: Node, new: Node, fields: Collection[str]) -> str:
    parts = []
    if "title" in fields:
        parts.append(f"section {old.title!r} was retitled {new.title!r}")
    if "intent" in fields:
        parts.append(f"the intent of section {new.title!r} was changed")
    if "target_words" in fields:
        parts.append(f"the target of section {new.title!r} went from {old.target_words} to {new.target_words} words")
    if "parent" in fields:
        parts.append(f"section {new.title!r} was moved to another parent")
    if "position" in fields:
        parts.append(f"section {new.title!r} moved from position {old.ordinal + 1} to {new.ordinal + 1}")
    return " and ".join(parts)


def referenced_ids(changes: Mapping[uuid.UUID, Change], arrivals: Iterable[Arrival] = ()) -> list[uuid.UUID]:
    """The node ids whose dependants a change may make stale: what `storage.ir_store.dependants` looks up."""
    ids = dict.fromkeys(changes)
    for arrival in arrivals:
        ids.update(dict.fromkeys(arrival.siblings))
    return list(ids)


def _reference_stale(ref: Reference, change: Change) -> bool:
    if change.after is None:
        return True
    if ref.node_id == ref.depends_on and ref.kind != "node":
        return False  # a node's own outline line: its own changes are judged by its "node" piece
    if ref.kind == "node" and ref.node_id != ref.depends_on:
        return False
    shown = SHOWN.get(ref.kind, frozenset())
    if ref.kind in HASHED:
        # Exact: what the node contributes now against what the prompt held; plus what a hash
        # cannot see (a person's text behind an unchanged summary, a move away).
        return bool(change.fields & (shown - {"title", "summary"})) or \
            contribution_hash(ref.kind, change.after) != ref.content_hash
    return bool(change.fields & shown)


def _reason(ref: Reference, change: Change) -> str:
    if ref.kind == "node":
        return f"{change.cause} after this section was written from the old outline"
    return f"{change.cause}; this section's prompt used its {_WHAT.get(ref.kind, ref.kind)}"


def stale_marks(refs: Sequence[Reference], changes: Mapping[uuid.UUID, Change],
                arrivals: Sequence[Arrival] = (), *, exclude: Collection[uuid.UUID] = ()) -> dict[uuid.UUID, str]:
    """The written nodes that become stale, each with one reason (the first stale reference, by kind).

    `refs` are the references to the changed nodes (and to an arrival's siblings); a node already
    stale keeps its first reason; a deleted node and those in `exclude` (the node being written) are
    never marked.
    """
    gone = {node_id for node_id, c in changes.items() if c.after is None}
    marks: dict[uuid.UUID, str] = {}
    ordered = sorted(refs, key=lambda r: (_KIND_ORDER.get(r.kind, len(_KIND_ORDER)), str(r.node_id),
                                          str(r.depends_on)))
    for ref in ordered:
        if ref.node_stale or ref.node_id in gone or ref.node_id in exclude or ref.node_id in marks:
            continue
        change = changes.get(ref.depends_on)
        if change is not None and _reference_stale(ref, change):
            marks[ref.node_id] = _reason(ref, change)
    listed = {(r.node_id, r.kind) for r in refs}
    for arrival in arrivals:
        for sibling in arrival.siblings:
            stale = next((r.node_stale for r in refs if r.node_id == sibling), "")
            if (sibling, "sibling") in listed and sibling not in marks and sibling not in gone \
                    and sibling not in exclude and not stale:
                marks[sibling] = (f"section {arrival.node.title!r} was placed beside it; this section's prompt "
                                  "listed its siblings without it")
    return marks


def fresh_written(tree: Tree) -> list[uuid.UUID]:
    """The written sections not marked stale yet, in document order."""
    return [n.id for n in tree.preorder() if n.state is NodeState.WRITTEN and not n.stale_reason]


def with_marks(mutation: Mutation, marks: Mapping[uuid.UUID, str], *, in_run: bool) -> Mutation:
    """`mutation` with the stale marks as node patches (merged into a patch it already has), and,
    when it is written as part of a run, a nodes_marked_stale event."""
    if not marks:
        return mutation
    patches = {p.node_id: p for p in mutation.node_patches}
    for node_id, reason in marks.items():
        patch = patches.get(node_id)
        patches[node_id] = NodePatch(node_id, NodeState.WRITTEN, stale_reason=reason) if patch is None \
            else replace(patch, stale_reason=reason)
    events = mutation.events
    if in_run:
        events = (*events, NewEvent(EventType.NODES_MARKED_STALE, {
            "nodes": [{"node_id": str(node_id), "reason": reason} for node_id, reason in marks.items()]}))
    return replace(mutation, node_patches=tuple(patches.values()), events=events)


def own_check(manifest: Sequence[ManifestEntry], tree: Tree) -> str:
    """Why a node just written is stale already ("" if it is not): a piece of its prompt that
    depends on another node alone no longer matches it (that node was rewritten meanwhile, e.g. by
    a sibling written concurrently)."""
    for entry in manifest:
        if entry.node_id is None or entry.kind not in HASHED:
            continue
        if entry.node_id not in tree:
            return f"a section its prompt used as its {_WHAT[entry.kind]} was deleted while it was being written"
        other = tree.get(entry.node_id)
        if contribution_hash(entry.kind, other) != entry.content_hash:
            return (f"section {other.title!r} changed while this section was being written; its prompt used the "
                    f"earlier {_WHAT[entry.kind]}")
    return ""


# Not kept as rows: a prompt lists dozens of headings covered elsewhere (42 a leaf in a 140-leaf
# document, most of node_dependencies' rows and of a write's WAL), and only an outline edit (a
# retitle, move or delete) makes them stale, so that rare path reads them from the stored
# manifests instead (ir_store.heading_readers).
FROM_MANIFESTS = frozenset({"covered_heading"})


def dependencies(manifest: Sequence[ManifestEntry]) -> list[tuple[uuid.UUID, str, str]]:
    """(depends_on, kind, content_hash) of every node id a write call's manifest names, each once,
    but for the kinds read from the manifests when needed (FROM_MANIFESTS)."""
    seen: dict[tuple[uuid.UUID, str], str] = {}
    for entry in manifest:
        if entry.node_id is not None and entry.kind not in FROM_MANIFESTS:
            seen.setdefault((entry.node_id, entry.kind), entry.content_hash)
    return [(node_id, kind, digest) for (node_id, kind), digest in seen.items()]
