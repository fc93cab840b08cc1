"""Deterministic Apply, the decision half: validate a proposal against the IR and plan the mutation.

Pure functions over plain data. The same IR and the same proposal always plan the
same mutation (ids are derived, never random), so re-applying after a crash
cannot create duplicates. `apply_store.write_mutation` is the only code that
writes a planned mutation, in one transaction with its change and run events.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from lace_engine.domain import (
    Artifact,
    Block,
    BlockContent,
    BlockKind,
    ChangeOp,
    EventType,
    NewEvent,
    Node,
    NodeState,
    Origin,
    OutlineEditKind,
    RunOptions,
)
from lace_engine.errors import Aborted, FailedPrecondition, InvalidArgument
from lace_engine.pipeline.proposals import ChildPlan, ContentProposal, SplitProposal
from lace_engine.pipeline.strategy import split_budget_ok
from lace_engine.pipeline.tree import Tree
from lace_engine.tenancy import DEFAULT_TENANT

# Fixed namespaces: ids derived from them are part of the stored IR, never change them.
NODE_NAMESPACE = uuid.UUID("6f1c1e2a-6c1d-4a8e-9a57-0c4b1f6d1a01")
BLOCK_NAMESPACE = uuid.UUID("6f1c1e2a-6c1d-4a8e-9a57-0c4b1f6d1a02")

TEXT_KINDS = frozenset({BlockKind.PARAGRAPH, BlockKind.HEADING, BlockKind.CODE, BlockKind.QUOTE})
LIST_KINDS = frozenset({BlockKind.BULLET_LIST, BlockKind.ORDERED_LIST})


@dataclass(frozen=True, slots=True)
class ApplyLimits:
    """Bounds a proposal must respect; documented in docs/engine.md."""

    budget_tolerance: float = 0.10
    min_children: int = 2
    max_children: int = 12
    min_child_words: int = 50
    max_title_chars: int = 200
    max_intent_chars: int = 1000
    max_blocks: int = 200
    max_block_chars: int = 20_000
    max_items: int = 100
    max_table_cells: int = 400
    max_summary_chars: int = 1500
    max_citations: int = 8
    min_length_ratio: float = 0.5
    max_length_ratio: float = 1.6


DEFAULT_LIMITS = ApplyLimits()


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who proposed a change: stored on every change event it causes."""

    origin: Origin
    run_id: uuid.UUID | None = None
    llm_call_id: uuid.UUID | None = None
    model: str = ""


@dataclass(frozen=True, slots=True)
class NodePatch:
    """New values for some columns of an existing node (None: unchanged)."""

    node_id: uuid.UUID
    state: NodeState
    summary: str | None = None
    word_count: int | None = None
    last_run_id: uuid.UUID | None = None
    # Outline edits: what a person changed, and where a moved or renumbered node now sits.
    title: str | None = None
    intent: str | None = None
    target_words: int | None = None
    parent_id: uuid.UUID | None = None
    ordinal: int | None = None
    depth: int | None = None
    # Staleness (pipeline/staleness.py): a reason marks the node stale, "" clears the mark.
    stale_reason: str | None = None


# NodePatch's optional columns in the order the writer sets them.
PATCH_COLUMNS = ("summary", "word_count", "last_run_id", "title", "intent", "target_words", "parent_id", "ordinal",
                 "depth", "stale_reason")


@dataclass(frozen=True, slots=True)
class BlockChange:
    operation: ChangeOp
    before: Block | None
    after: Block | None


@dataclass(frozen=True, slots=True)
class Precondition:
    """What the writer re-checks under lock before writing: the IR the plan was made from."""

    node_id: uuid.UUID
    node_state: NodeState
    # (block id, version) of every block of the node the plan read.
    block_versions: tuple[tuple[uuid.UUID, int], ...] = ()
    # A human-pinned block under the node makes an LLM change a conflict.
    forbid_pinned: bool = True


@dataclass(frozen=True, slots=True)
class Mutation:
    """A planned, validated change to one artifact's IR, with the run events it causes."""

    artifact_id: uuid.UUID
    provenance: Provenance
    artifact_insert: Artifact | None = None
    node_inserts: tuple[Node, ...] = ()
    node_patches: tuple[NodePatch, ...] = ()
    block_changes: tuple[BlockChange, ...] = ()
    word_delta: int = 0
    preconditions: tuple[Precondition, ...] = ()
    events: tuple[NewEvent, ...] = ()
    nodes_planned: int = 0
    nodes_written: int = 0
    words_written: int = 0
    # Deterministic repairs Apply made to the proposal before accepting it, in words (see `repair_split`).
    repairs: tuple[str, ...] = ()
    # Outline edits: nodes removed (with their subtrees, listed whole) and the artifact's new target.
    node_deletes: tuple[uuid.UUID, ...] = ()
    artifact_target_words: int | None = None
    # UpdateArtifact: the artifact's new title, brief or style (None: unchanged).
    artifact_title: str | None = None
    artifact_brief: str | None = None
    artifact_style: str | None = None


def tree_after(tree: Tree, mutation: Mutation) -> Tree:
    """The tree as `mutation` leaves it once written: its inserted nodes, and its patches' columns."""
    def patched(p: NodePatch) -> Node:
        node = tree.get(p.node_id)
        values = {c: getattr(p, c) for c in PATCH_COLUMNS if c != "last_run_id" and getattr(p, c) is not None}
        return replace(node, state=p.state, last_run_id=p.last_run_id or node.last_run_id, **values)

    if mutation.node_deletes:
        gone = set(mutation.node_deletes)
        changed = {n.id: n for n in (*mutation.node_inserts, *(patched(p) for p in mutation.node_patches))}
        return Tree([changed.get(n.id, n) for n in tree.preorder() if n.id not in gone]
                    + [n for n in mutation.node_inserts if n.id not in tree])
    return tree.with_nodes([*mutation.node_inserts, *(patched(p) for p in mutation.node_patches)])


@dataclass(frozen=True, slots=True)
class Rejection:
    """The proposal is invalid; nothing is written. `errors` are phrased for a re-ask."""

    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewArtifact:
    title: str
    brief: str
    style: str
    target_words: int
    extra: dict[str, str] = field(default_factory=dict)
    tenant_id: str = DEFAULT_TENANT


MIN_TARGET_WORDS = 100
MAX_TARGET_WORDS = 200_000


def child_node_id(parent_id: uuid.UUID, ordinal: int) -> uuid.UUID:
    return uuid.uuid5(NODE_NAMESPACE, f"{parent_id}/{ordinal}")


def block_id_for(node_id: uuid.UUID, ordinal: int) -> uuid.UUID:
    return uuid.uuid5(BLOCK_NAMESPACE, f"{node_id}/{ordinal}")


def root_node_id(artifact_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(NODE_NAMESPACE, f"{artifact_id}/root")


def validate_new_artifact(new: NewArtifact) -> None:
    """Raises InvalidArgument naming the first bad field of a CreateArtifact request."""
    title = new.title.strip()
    if not title:
        raise InvalidArgument("artifact.title must not be empty", reason="EMPTY_TITLE",
                              metadata={"field": "artifact.title"})
    if len(title) > 300:
        raise InvalidArgument("artifact.title is longer than 300 characters", reason="FIELD_TOO_LONG",
                              metadata={"field": "artifact.title"})
    if not new.brief.strip():
        raise InvalidArgument("artifact.brief must not be empty: say what the document must cover",
                              reason="EMPTY_BRIEF", metadata={"field": "artifact.brief"})
    if len(new.brief) > 20_000:
        raise InvalidArgument("artifact.brief is longer than 20,000 characters", reason="FIELD_TOO_LONG",
                              metadata={"field": "artifact.brief"})
    if len(new.style) > 2000:
        raise InvalidArgument("artifact.style is longer than 2,000 characters", reason="FIELD_TOO_LONG",
                              metadata={"field": "artifact.style"})
    if not MIN_TARGET_WORDS <= new.target_words <= MAX_TARGET_WORDS:
        raise InvalidArgument(
            f"artifact.target_words must be between {MIN_TARGET_WORDS} and {MAX_TARGET_WORDS}, "
            f"got {new.target_words}",
            reason="TARGET_WORDS_OUT_OF_RANGE",
            metadata={"field": "artifact.target_words", "min": str(MIN_TARGET_WORDS),
                      "max": str(MAX_TARGET_WORDS)},
        )


def plan_create_artifact(artifact_id: uuid.UUID, new: NewArtifact, now: object = None) -> Mutation:
    """Plans a new artifact with its root node (PLANNED, budget = the whole target)."""
    validate_new_artifact(new)
    root_id = root_node_id(artifact_id)
    from datetime import UTC, datetime

    ts = datetime.now(UTC) if now is None else now
    assert isinstance(ts, datetime)
    artifact = Artifact(
        id=artifact_id, title=new.title.strip(), brief=new.brief.strip(), style=new.style.strip(),
        target_words=new.target_words, root_node_id=root_id, version=1, word_count=0,
        active_run_id=None, create_time=ts, update_time=ts, tenant_id=new.tenant_id,
    )
    root = Node(
        id=root_id, artifact_id=artifact_id, parent_id=None, ordinal=0, depth=0,
        title=artifact.title, intent=artifact.brief[:1000], target_words=new.target_words,
        state=NodeState.PLANNED,
    )
    return Mutation(
        artifact_id=artifact_id, provenance=Provenance(origin=Origin.HUMAN),
        artifact_insert=artifact, node_inserts=(root,),
    )


FORK_NAMESPACE = uuid.UUID("6f1c1e2a-6c1d-4a8e-9a57-0c4b1f6d1a03")


def plan_fork_artifact(artifact_id: uuid.UUID, source: Artifact, tree: Tree,
                       blocks: Mapping[uuid.UUID, Sequence[Block]], now: datetime) -> Mutation:
    """A new artifact holding a copy of `source`'s IR (as of `source.version`): its nodes and blocks under
    ids of its own, derived the way splits and writes derive them, so runs on the copy go on as on the
    original; every block a CREATE change event of the copy's first version."""
    ids: dict[uuid.UUID, uuid.UUID] = {}
    for node in tree.preorder():  # parents first: a child's id derives from its parent's new id
        if node.parent_id is None:
            ids[node.id] = root_node_id(artifact_id)
        elif node.id == child_node_id(node.parent_id, node.ordinal):
            ids[node.id] = child_node_id(ids[node.parent_id], node.ordinal)
        else:  # a person's node (a fresh id): another fresh one, the same for every replay of the fork
            ids[node.id] = uuid.uuid5(FORK_NAMESPACE, f"{artifact_id}/{node.id}")
    copies = [replace(n, id=ids[n.id], artifact_id=artifact_id, parent_id=ids[n.parent_id] if n.parent_id else None,
                      last_run_id=None, create_time=now, update_time=now) for n in tree.preorder()]
    new_blocks = [replace(b, id=block_id_for(ids[b.node_id], b.ordinal), artifact_id=artifact_id,
                          node_id=ids[b.node_id], version=1, create_time=now, update_time=now)
                  for n in tree.preorder() for b in blocks.get(n.id, ())]
    words = sum(b.content.words() for b in new_blocks)
    artifact = replace(source, id=artifact_id, root_node_id=ids[tree.root.id], version=1, word_count=words,
                       active_run_id=None, create_time=now, update_time=now, forked_from_id=source.id,
                       forked_from_version=source.version)
    return Mutation(artifact_id=artifact_id, provenance=Provenance(origin=Origin.HUMAN), artifact_insert=artifact,
                    node_inserts=tuple(copies),
                    block_changes=tuple(BlockChange(ChangeOp.CREATE, None, b) for b in new_blocks))


def rescale_budgets(targets: Sequence[int], total: int) -> list[int]:
    """Targets scaled to add up to exactly `total`, in proportion (largest remainder, ties by position)."""
    have = sum(targets)
    if have <= 0:
        return list(targets)
    floors = [t * total // have for t in targets]
    # Remainders compared as exact integers: (t * total) mod have, largest first.
    order = sorted(range(len(targets)), key=lambda i: (-(targets[i] * total % have), i))
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


def repair_split(node: Node, proposal: SplitProposal, limits: ApplyLimits = DEFAULT_LIMITS) \
        -> tuple[SplitProposal, tuple[str, ...]]:
    """The proposal with the faults that have exactly one right fix fixed, and what was fixed.

    Surrounding whitespace is trimmed; siblings with the same title are merged (see
    `merge_same_titles`); budgets that miss the parent's total by more than the tolerance are
    rescaled in proportion to it (only when every child keeps its minimum).
    """
    repairs: list[str] = []
    children = [ChildPlan(c.title.strip(), c.intent.strip(), c.target_words) for c in proposal.children]
    trimmed = sum((a.title, a.intent) != (b.title, b.intent) for a, b in zip(children, proposal.children, strict=True))
    if trimmed:
        repairs.append(f"trimmed surrounding whitespace from the title or intent of {trimmed} children")
    merged = merge_same_titles(children, limits)
    if len(merged) < len(children):
        counts = Counter(c.title.casefold() for c in children)
        repeated = [m.title for m in merged if counts[m.title.casefold()] > 1]
        repairs.append(f"children sharing a title merged into one section each, budgets summed and intents "
                       f"joined: {', '.join(map(repr, repeated))} ({len(children)} children proposed, "
                       f"{len(merged)} kept)")
        children = merged
    targets = [c.target_words for c in children]
    if (len(children) >= limits.min_children and all(t >= limits.min_child_words for t in targets)
            and not split_budget_ok(node.target_words, targets, limits.budget_tolerance)):
        scaled = rescale_budgets(targets, node.target_words)
        if all(t >= limits.min_child_words for t in scaled):
            repairs.append(f"children's target_words added up to {sum(targets)}, not {node.target_words}: "
                           f"rescaled in proportion to {scaled}")
            children = [replace(c, target_words=t) for c, t in zip(children, scaled, strict=True)]
    return SplitProposal(tuple(children)), tuple(repairs)


def merge_same_titles(children: Sequence[ChildPlan], limits: ApplyLimits = DEFAULT_LIMITS) -> list[ChildPlan]:
    """Siblings whose titles are equal (case-insensitive) as one child at the first one's place.

    Two sections of one name are one section proposed twice: the merge keeps both budgets (summed)
    and both intents (the distinct ones, joined), so it invents nothing and loses nothing. It is
    not made when it would leave fewer than the minimum children, an empty title, or an intent
    over the limit; the proposal is then rejected as before.
    """
    groups: dict[str, list[ChildPlan]] = {}
    for child in children:
        groups.setdefault(child.title.casefold(), []).append(child)
    if len(groups) == len(children) or len(groups) < limits.min_children or "" in groups:
        return list(children)
    merged: list[ChildPlan] = []
    for same in groups.values():
        intent = " ".join(dict.fromkeys(c.intent for c in same if c.intent))
        if len(intent) > limits.max_intent_chars:
            return list(children)
        merged.append(ChildPlan(same[0].title, intent, sum(c.target_words for c in same)))
    return merged


def plan_split(
    node: Node,
    proposal: SplitProposal,
    *,
    options: RunOptions,
    provenance: Provenance,
    limits: ApplyLimits = DEFAULT_LIMITS,
) -> Mutation | Rejection:
    """Repairs what has one right fix (`repair_split`), validates the split for `node` and plans its children."""
    errors: list[str] = []
    if node.state is not NodeState.PLANNED:
        raise FailedPrecondition(f"node {node.id} is {node.state.value}, not planned", reason="NODE_NOT_PLANNED")
    if node.depth + 1 > options.max_depth:
        errors.append(f"this section is at depth {node.depth}; it may not be split below depth {options.max_depth}")
    proposal, repairs = repair_split(node, proposal, limits)
    children = proposal.children
    if not limits.min_children <= len(children) <= limits.max_children:
        errors.append(f"propose between {limits.min_children} and {limits.max_children} children, "
                      f"not {len(children)}")
    seen: set[str] = set()
    for i, child in enumerate(children):
        if not child.title.strip():
            errors.append(f"children[{i}].title is empty")
        elif len(child.title) > limits.max_title_chars:
            errors.append(f"children[{i}].title is longer than {limits.max_title_chars} characters")
        key = child.title.casefold()
        if key and key in seen:
            errors.append(f"children[{i}].title {child.title!r} repeats an earlier sibling's title")
        seen.add(key)
        if len(child.intent) > limits.max_intent_chars:
            errors.append(f"children[{i}].intent is longer than {limits.max_intent_chars} characters")
        if child.target_words < limits.min_child_words:
            errors.append(f"children[{i}].target_words is {child.target_words}; each child needs at least "
                          f"{limits.min_child_words}")
    total = sum(c.target_words for c in children)
    if children and not split_budget_ok(node.target_words, [c.target_words for c in children],
                                        limits.budget_tolerance):
        errors.append(f"children's target_words add up to {total}; they must add up to {node.target_words} "
                      f"(within ±{limits.budget_tolerance:.0%})")
    if errors:
        return Rejection(tuple(errors))

    inserts = tuple(
        Node(
            id=child_node_id(node.id, i), artifact_id=node.artifact_id, parent_id=node.id, ordinal=i,
            depth=node.depth + 1, title=c.title, intent=c.intent, target_words=c.target_words,
            state=NodeState.PLANNED,
        )
        for i, c in enumerate(children)
    )
    event = NewEvent(EventType.NODE_SPLIT, {
        "node_id": str(node.id),
        "children": [
            {"node_id": str(n.id), "title": n.title, "intent": n.intent, "target_words": n.target_words}
            for n in inserts
        ],
        "repairs": list(repairs),
    })
    return Mutation(
        artifact_id=node.artifact_id,
        provenance=provenance,
        node_inserts=inserts,
        node_patches=(NodePatch(node.id, NodeState.SPLIT, last_run_id=provenance.run_id),),
        preconditions=(Precondition(node.id, NodeState.PLANNED),),
        events=(event,),
        nodes_planned=len(inserts),
        repairs=repairs,
    )


def validate_block(content: BlockContent, where: str, limits: ApplyLimits = DEFAULT_LIMITS) -> list[str]:
    """Problems with one block's content, phrased for the model (or a person) to fix."""
    errors: list[str] = []
    kind = content.kind
    if kind in TEXT_KINDS:
        if not content.text.strip():
            errors.append(f"{where}: a {kind.value} block needs non-empty text")
        if len(content.text) > limits.max_block_chars:
            errors.append(f"{where}: text is longer than {limits.max_block_chars} characters; split it")
    if kind is BlockKind.HEADING and not 1 <= content.heading_level <= 4:
        errors.append(f"{where}: heading_level must be 1 to 4, not {content.heading_level}")
    if kind in LIST_KINDS:
        if not content.items or any(not item.strip() for item in content.items):
            errors.append(f"{where}: a list needs at least one item and no empty items")
        if len(content.items) > limits.max_items:
            errors.append(f"{where}: a list may have at most {limits.max_items} items")
    if kind is BlockKind.TABLE:
        if not content.table_header or any(not h.strip() for h in content.table_header):
            errors.append(f"{where}: a table needs a header with no empty cells")
        if not content.table_rows:
            errors.append(f"{where}: a table needs at least one row")
        width = len(content.table_header)
        for r, row in enumerate(content.table_rows):
            if len(row) != width:
                errors.append(f"{where}: table row {r} has {len(row)} cells, the header has {width}")
        if width * (len(content.table_rows) + 1) > limits.max_table_cells:
            errors.append(f"{where}: a table may have at most {limits.max_table_cells} cells")
    return errors


def normalize_block(content: BlockContent) -> BlockContent:
    """Drops the fields a kind does not use, so equal content compares (and hashes) equal."""
    kind = content.kind
    return BlockContent(
        kind=kind,
        text=content.text.strip() if kind in TEXT_KINDS and kind is not BlockKind.CODE else (
            content.text if kind is BlockKind.CODE else ""),
        heading_level=content.heading_level if kind is BlockKind.HEADING else 0,
        items=tuple(i.strip() for i in content.items) if kind in LIST_KINDS else (),
        language=content.language.strip() if kind is BlockKind.CODE else "",
        table_header=tuple(h.strip() for h in content.table_header) if kind is BlockKind.TABLE else (),
        table_rows=tuple(tuple(c.strip() for c in r) for r in content.table_rows) if kind is BlockKind.TABLE
        else (),
        citations=content.citations,
    )


def plan_content(
    node: Node,
    existing: Sequence[Block],
    proposal: ContentProposal,
    *,
    provenance: Provenance,
    citable: Sequence[uuid.UUID] = (),
    limits: ApplyLimits = DEFAULT_LIMITS,
) -> Mutation | Rejection:
    """Validates a content proposal for `node` and plans the block changes (replacing old blocks).

    `citable` are the passages this call's prompt numbered (passage n is citable[n - 1]): a block
    may cite those and nothing else."""
    if any(b.pinned for b in existing):
        raise Aborted(f"node {node.id} has human-pinned blocks; an LLM may not overwrite them",
                      reason="NODE_PINNED")
    errors: list[str] = []
    cited, cite_errors, repeated = resolve_citations(proposal, citable, limits.max_citations)
    errors.extend(cite_errors)
    blocks = tuple(replace(normalize_block(b), citations=c) for b, c in zip(proposal.blocks, cited,
                                                                                          strict=True))
    if not blocks:
        errors.append("propose at least one block")
    if len(blocks) > limits.max_blocks:
        errors.append(f"propose at most {limits.max_blocks} blocks, not {len(blocks)}")
    headings: set[str] = set()
    for i, content in enumerate(blocks):
        errors.extend(validate_block(content, f"blocks[{i}]", limits))
        if content.kind is BlockKind.HEADING:
            key = content.text.casefold()
            if key in headings:
                errors.append(f"blocks[{i}]: heading {content.text!r} appears twice in this section")
            if key == node.title.casefold():
                errors.append(f"blocks[{i}]: do not repeat the section title {node.title!r} as a heading")
            headings.add(key)
    words = sum(b.words() for b in blocks)
    low = math.ceil(node.target_words * limits.min_length_ratio)
    high = int(node.target_words * limits.max_length_ratio)
    if blocks and not low <= words <= high:
        errors.append(f"the section has {words} words; write between {low} and {high} "
                      f"(target {node.target_words})")
    if not proposal.summary.strip():
        errors.append("summary is empty; give a one- or two-sentence summary of the section")
    elif len(proposal.summary) > limits.max_summary_chars:
        errors.append(f"summary is longer than {limits.max_summary_chars} characters")
    if errors:
        return Rejection(tuple(errors))
    padded = sum(_padded(b) for b in proposal.blocks)
    repairs = ((f"trimmed surrounding whitespace in {padded} blocks",) if padded else ()) + (
        (f"dropped repeated citations in {repeated} blocks",) if repeated else ())

    by_ordinal = {b.ordinal: b for b in existing}
    block_ids = [block_id_for(node.id, i) for i in range(len(blocks))]
    changes: list[BlockChange] = []
    for i, content in enumerate(blocks):
        old = by_ordinal.get(i)
        if old is not None and old.content == content and old.origin is provenance.origin:
            continue
        new = Block(
            id=block_ids[i], artifact_id=node.artifact_id, node_id=node.id, ordinal=i,
            content=content, origin=provenance.origin, pinned=False,
            version=1 if old is None else old.version + 1,
        )
        changes.append(BlockChange(ChangeOp.CREATE if old is None else ChangeOp.UPDATE, old, new))
    removed = [b for b in existing if b.ordinal >= len(blocks)]
    changes.extend(BlockChange(ChangeOp.DELETE, b, None) for b in removed)
    old_words = sum(b.content.words() for b in existing)
    event = NewEvent(EventType.BLOCKS_APPLIED, {
        "node_id": str(node.id),
        "block_ids": [str(block_id) for block_id in block_ids],
        "word_count": words,
        "removed_blocks": len(removed),
        "repairs": list(repairs),
    })
    return Mutation(
        artifact_id=node.artifact_id,
        provenance=provenance,
        # Written again from the IR as it is now: no longer stale (staleness.own_check may say otherwise).
        node_patches=(NodePatch(node.id, NodeState.WRITTEN, summary=proposal.summary, word_count=words,
                                last_run_id=provenance.run_id, stale_reason=""),),
        block_changes=tuple(changes),
        word_delta=words - old_words,
        preconditions=(Precondition(node.id, node.state,
                                    tuple((b.id, b.version) for b in existing)),),
        events=(event,),
        nodes_written=1,
        words_written=words,
        repairs=repairs,
    )


def resolve_citations(proposal: ContentProposal, citable: Sequence[uuid.UUID], max_citations: int) \
        -> tuple[list[tuple[uuid.UUID, ...]], list[str], int]:
    """Each block's cited passage ids, the errors of citations outside this prompt's passages, and
    how many blocks cited a passage twice (the repeat is dropped: the one right fix)."""
    resolved: list[tuple[uuid.UUID, ...]] = []
    errors: list[str] = []
    repeated = 0
    for i in range(len(proposal.blocks)):
        numbers = proposal.cites[i] if i < len(proposal.cites) else ()
        unique = tuple(dict.fromkeys(numbers))
        repeated += len(unique) < len(numbers)
        if len(unique) > max_citations:
            errors.append(f"blocks[{i}]: cite at most {max_citations} passages, not {len(unique)}")
        wrong = [n for n in unique if not 1 <= n <= len(citable)]
        if wrong:
            given = f"only passages 1 to {len(citable)} were given" if citable else "no passages were given"
            errors.append(f"blocks[{i}]: cites {wrong}, but {given}; cite only the numbered passages above")
            unique = tuple(n for n in unique if n not in wrong)
        resolved.append(tuple(citable[n - 1] for n in unique))
    return resolved, errors, repeated


def _padded(content: BlockContent) -> bool:
    """Whether a block's used text fields carry surrounding whitespace that normalize_block trims."""
    kind = content.kind
    fields: list[str] = []
    if kind in TEXT_KINDS and kind is not BlockKind.CODE:
        fields.append(content.text)
    if kind in LIST_KINDS:
        fields.extend(content.items)
    if kind is BlockKind.TABLE:
        fields.extend(content.table_header)
        fields.extend(c for row in content.table_rows for c in row)
    return any(f != f.strip() for f in fields)


def plan_edit_block(
    block: Block, content: BlockContent, *, node: Node, expected_version: int = 0,
    known_passages: Collection[uuid.UUID] = frozenset(), limits: ApplyLimits = DEFAULT_LIMITS,
) -> Mutation:
    """Plans a human edit: the block takes the new content, origin HUMAN, and is pinned.

    Its citations must be passages of the artifact's sources (`known_passages`)."""
    if expected_version and expected_version != block.version:
        raise Aborted(f"block {block.id} is at version {block.version}, not {expected_version}; "
                      "re-read it and edit again", reason="STALE_VERSION",
                      metadata={"current_version": str(block.version)})
    if content.kind not in set(BlockKind):
        raise InvalidArgument("block.kind is required", reason="MISSING_FIELD", metadata={"field": "block.kind"})
    normalized = replace(normalize_block(content), citations=tuple(dict.fromkeys(content.citations)))
    errors = validate_block(normalized, "block", limits)
    if len(normalized.citations) > limits.max_citations:
        errors.append(f"block: cite at most {limits.max_citations} passages, not {len(normalized.citations)}")
    unknown = [str(p) for p in normalized.citations if p not in known_passages]
    if unknown:
        errors.append(f"block: cited_passage_ids {unknown} are not passages of this artifact's sources")
    if errors:
        raise InvalidArgument("; ".join(errors), reason="INVALID_BLOCK", metadata={"field": "block"})
    after = replace(block, content=normalized, origin=Origin.HUMAN, pinned=True, version=block.version + 1)
    delta = normalized.words() - block.content.words()
    return Mutation(
        artifact_id=block.artifact_id,
        provenance=Provenance(origin=Origin.HUMAN),
        node_patches=(NodePatch(node.id, node.state, word_count=node.word_count + delta),),
        block_changes=(BlockChange(ChangeOp.UPDATE, block, after),),
        word_delta=delta,
        preconditions=(Precondition(node.id, node.state, ((block.id, block.version),), forbid_pinned=False),),
    )


# Outline edits (a person's UpdateNode, CreateNode, DeleteNode, MoveNode) -----------------------

MIN_NODE_WORDS = DEFAULT_LIMITS.min_child_words


@dataclass(frozen=True, slots=True)
class OutlineRules:
    """What an outline edit is checked against besides the tree.

    `max_depth` is the deepest level a node may sit at (the awaiting run's option, or the server's
    default). With `run_id` (a run that awaits review) written sections and sections holding pinned
    blocks are frozen, and the edit is also an outline_edited event of that run.
    """

    max_depth: int
    run_id: uuid.UUID | None = None
    scope_node_id: uuid.UUID | None = None
    pinned_nodes: frozenset[uuid.UUID] = frozenset()


@dataclass(frozen=True, slots=True)
class NodeFields:
    """The fields an outline edit sets; None leaves a field as it is."""

    title: str | None = None
    intent: str | None = None
    target_words: int | None = None


def outline_json(tree: Tree) -> list[dict[str, object]]:
    """Every node in document order as PlannedNode (run.proto) fields: what a reviewer sees."""
    return [{"node_id": str(n.id), "parent_id": str(n.parent_id) if n.parent_id else "", "ordinal": n.ordinal,
             "depth": n.depth, "title": n.title, "intent": n.intent, "target_words": n.target_words,
             "state": n.state.value} for n in tree.preorder()]


def _checked_fields(fields: NodeFields, limits: ApplyLimits = DEFAULT_LIMITS) -> NodeFields:
    """The fields trimmed, or InvalidArgument naming the first bad one."""
    title = intent = None
    if fields.title is not None:
        title = fields.title.strip()
        if not title:
            raise InvalidArgument("node.title must not be empty", reason="EMPTY_TITLE",
                                  metadata={"field": "node.title"})
        if len(title) > limits.max_title_chars:
            raise InvalidArgument(f"node.title is longer than {limits.max_title_chars} characters",
                                  reason="FIELD_TOO_LONG", metadata={"field": "node.title"})
    if fields.intent is not None:
        intent = fields.intent.strip()
        if len(intent) > limits.max_intent_chars:
            raise InvalidArgument(f"node.intent is longer than {limits.max_intent_chars} characters",
                                  reason="FIELD_TOO_LONG", metadata={"field": "node.intent"})
    words = fields.target_words
    if words is not None and not MIN_NODE_WORDS <= words <= MAX_TARGET_WORDS:
        raise InvalidArgument(f"node.target_words must be between {MIN_NODE_WORDS} and {MAX_TARGET_WORDS}, got {words}",
                              reason="TARGET_WORDS_OUT_OF_RANGE",
                              metadata={"field": "node.target_words", "min": str(MIN_NODE_WORDS),
                                        "max": str(MAX_TARGET_WORDS)})
    return NodeFields(title, intent, words)


def _unique_title(title: str, siblings: Sequence[Node], node_id: uuid.UUID | None) -> None:
    key = title.casefold()
    for other in siblings:
        if other.id != node_id and other.title.casefold() == key:
            raise InvalidArgument(f"a sibling section is already titled {other.title!r}; titles are unique among "
                                  "siblings", reason="DUPLICATE_TITLE",
                                  metadata={"field": "node.title", "node_id": str(other.id)})


def _frozen(tree: Tree, top: uuid.UUID, rules: OutlineRules) -> None:
    """While a run awaits review, a written section and one with pinned blocks stay as they are."""
    if rules.run_id is None:
        return
    for node in tree.subtree(top):
        if node.state is NodeState.WRITTEN:
            raise FailedPrecondition(f"section {node.title!r} is written; while run {rules.run_id} awaits review only "
                                     "unwritten sections may change", reason="NODE_WRITTEN",
                                     metadata={"node_id": str(node.id), "run_id": str(rules.run_id)})
        if node.id in rules.pinned_nodes:
            raise FailedPrecondition(f"section {node.title!r} holds blocks a person edited (pinned); while run "
                                     f"{rules.run_id} awaits review it stays as it is", reason="NODE_PINNED",
                                     metadata={"node_id": str(node.id), "run_id": str(rules.run_id)})


def _parent_ok(parent: Node) -> None:
    """A section takes children when it is split already, or planned (it becomes split)."""
    if parent.state not in (NodeState.PLANNED, NodeState.SPLIT):
        reason = "PARENT_WRITTEN" if parent.state is NodeState.WRITTEN else "PARENT_NOT_PLANNED"
        raise FailedPrecondition(f"section {parent.title!r} is {parent.state.value}: only a planned or split section "
                                 "takes child sections", reason=reason, metadata={"node_id": str(parent.id)})


def _position(position: int | None, count: int) -> int:
    """The index a node goes to among `count` others: 0..count, `count` (the end) when unset."""
    if position is None:
        return count
    if not 0 <= position <= count:
        raise InvalidArgument(f"position must be between 0 and {count}, got {position}",
                              reason="POSITION_OUT_OF_RANGE", metadata={"field": "position", "max": str(count)})
    return position


def _not_root(tree: Tree, node: Node, what: str) -> None:
    if node.parent_id is None:
        raise InvalidArgument(f"the root section cannot be {what}; it is the document itself", reason="ROOT_NODE",
                              metadata={"node_id": str(node.id)})


def _keeps_a_child(tree: Tree, node: Node, what: str) -> None:
    """A split section keeps at least one child: it is never planned again, so a later split could
    never re-derive (uuid5(parent, ordinal)) the ids of children it once had."""
    assert node.parent_id is not None
    if len(tree.children(node.parent_id)) == 1:
        parent = tree.get(node.parent_id)
        raise FailedPrecondition(f"section {node.title!r} is the only child of {parent.title!r}, which cannot be "
                                 f"left without sections; {what} {parent.title!r} itself, or add a sibling first",
                                 reason="LAST_CHILD", metadata={"node_id": str(node.id), "parent_id": str(parent.id)})


def _outline_mutation(tree: Tree, artifact: Artifact, nodes: dict[uuid.UUID, Node], *, kind: OutlineEditKind,
                      subject: uuid.UUID, rules: OutlineRules, touched: Sequence[uuid.UUID],
                      deleted: Sequence[uuid.UUID] = (), block_deletes: Sequence[Block] = ()) -> Mutation:
    """The mutation that turns `tree` into `nodes`, after budgets follow the children.

    `touched` are the sections whose children changed: each, and every ancestor of each, takes the
    sum of its children's budgets (a planned section that gained children becomes split); the
    artifact's target is the root's.
    """
    children: dict[uuid.UUID, list[Node]] = {}
    for n in nodes.values():
        if n.parent_id is not None:
            children.setdefault(n.parent_id, []).append(n)
    chain: dict[uuid.UUID, Node] = {}
    for start in touched:
        at: uuid.UUID | None = start
        while at is not None and at not in chain:
            chain[at] = nodes[at]
            at = nodes[at].parent_id
    for node in sorted(chain.values(), key=lambda n: -n.depth):
        kids = children.get(node.id)
        if kids:
            fresh = nodes[node.id]
            nodes[node.id] = replace(fresh, target_words=sum(nodes[k.id].target_words for k in kids),
                                     state=NodeState.SPLIT if fresh.state is NodeState.PLANNED else fresh.state)
    root = nodes[tree.root.id]
    if not MIN_TARGET_WORDS <= root.target_words <= MAX_TARGET_WORDS:
        raise InvalidArgument(f"after this edit the document's target would be {root.target_words} words; it must be "
                              f"between {MIN_TARGET_WORDS} and {MAX_TARGET_WORDS}", reason="TARGET_WORDS_OUT_OF_RANGE",
                              metadata={"target_words": str(root.target_words)})
    patches: list[NodePatch] = []
    inserts: list[Node] = []
    for node in nodes.values():
        if node.id not in tree:
            inserts.append(node)
            continue
        old = tree.get(node.id)
        if old == node:
            continue
        changed = {c: getattr(node, c) for c in ("title", "intent", "target_words", "parent_id", "ordinal", "depth")
                   if getattr(node, c) != getattr(old, c)}
        patches.append(NodePatch(node.id, node.state, **changed))
    after = Tree(nodes.values())
    events: tuple[NewEvent, ...] = ()
    if rules.run_id is not None:
        events = (NewEvent(EventType.OUTLINE_EDITED, {"kind": kind.value, "node_id": str(subject),
                                                       "outline": outline_json(after)}),)
    pre = tree.get(subject) if subject in tree else tree.get(touched[0])
    return Mutation(
        artifact_id=artifact.id,
        provenance=Provenance(origin=Origin.HUMAN),
        node_inserts=tuple(inserts),
        node_patches=tuple(sorted(patches, key=lambda p: p.node_id.int)),
        block_changes=tuple(BlockChange(ChangeOp.DELETE, b, None) for b in block_deletes),
        word_delta=-sum(b.content.words() for b in block_deletes),
        preconditions=(Precondition(pre.id, pre.state, forbid_pinned=False),),
        events=events,
        node_deletes=tuple(deleted),
        artifact_target_words=root.target_words if root.target_words != artifact.target_words else None,
    )


def _renumbered(nodes: dict[uuid.UUID, Node], ordered: Sequence[Node]) -> None:
    """Ordinals 0..k-1 in this order (dense, whatever was inserted or removed)."""
    for i, n in enumerate(ordered):
        current = nodes[n.id]
        if current.ordinal != i:
            nodes[n.id] = replace(current, ordinal=i)


@dataclass(frozen=True, slots=True)
class ArtifactFields:
    """The fields UpdateArtifact sets; None leaves a field as it is."""

    title: str | None = None
    brief: str | None = None
    style: str | None = None
    target_words: int | None = None


def plan_update_artifact(tree: Tree, artifact: Artifact, fields: ArtifactFields, rules: OutlineRules) -> Mutation:
    """A person changes the artifact's title, brief, style or length (AIP-134).

    The root section follows: its title is the artifact's, its intent the brief's start (unless a
    person gave it another), its budget the target (only while it has no sections: a split root's
    target is the sum of its children's)."""
    merged = NewArtifact(
        title=artifact.title if fields.title is None else fields.title,
        brief=artifact.brief if fields.brief is None else fields.brief,
        style=artifact.style if fields.style is None else fields.style,
        target_words=artifact.target_words if fields.target_words is None else fields.target_words)
    validate_new_artifact(merged)
    title, brief, style = merged.title.strip(), merged.brief.strip(), merged.style.strip()
    root = tree.root
    if fields.target_words is not None and fields.target_words != root.target_words and tree.children(root.id):
        raise InvalidArgument("the document is planned into sections: its target_words is the sum of theirs; "
                              "change the sections' budgets (UpdateNode)", reason="TARGET_FOLLOWS_CHILDREN",
                              metadata={"field": "artifact.target_words"})
    if fields.target_words is not None:
        _frozen(tree, root.id, rules)
    intent = brief[:1000] if root.intent == artifact.brief[:1000] else root.intent
    nodes = {n.id: n for n in tree.preorder()}
    nodes[root.id] = replace(root, title=title, intent=intent, target_words=merged.target_words)
    outline = _outline_mutation(tree, artifact, nodes, kind=OutlineEditKind.UPDATE_ARTIFACT, subject=root.id,
                                rules=rules, touched=[root.id])
    return replace(outline, artifact_title=title if title != artifact.title else None,
                   artifact_brief=brief if brief != artifact.brief else None,
                   artifact_style=style if style != artifact.style else None)


def plan_update_node(tree: Tree, artifact: Artifact, node_id: uuid.UUID, fields: NodeFields,
                     rules: OutlineRules) -> Mutation:
    """A person changes a section's title, intent or budget (a section without children only)."""
    node = tree.get(node_id)
    fields = _checked_fields(fields)
    _frozen(tree, node_id, rules)
    if fields.target_words is not None and tree.children(node_id):
        raise InvalidArgument(f"section {node.title!r} is split: its target_words is the sum of its children's; "
                              "change theirs", reason="TARGET_FOLLOWS_CHILDREN",
                              metadata={"field": "node.target_words"})
    if fields.title is not None:
        _unique_title(fields.title, tree.siblings(node_id) if node.parent_id else (), node_id)
    updated = replace(node, title=node.title if fields.title is None else fields.title,
                      intent=node.intent if fields.intent is None else fields.intent,
                      target_words=node.target_words if fields.target_words is None else fields.target_words)
    nodes = {n.id: n for n in tree.preorder()}
    nodes[node_id] = updated
    return _outline_mutation(tree, artifact, nodes, kind=OutlineEditKind.UPDATE, subject=node_id, rules=rules,
                             touched=[node.parent_id] if node.parent_id else [node_id])


def plan_create_node(tree: Tree, artifact: Artifact, parent_id: uuid.UUID, new_node_id: uuid.UUID, fields: NodeFields,
                     position: int | None, rules: OutlineRules) -> Mutation:
    """A person adds a PLANNED section under `parent_id` at `position` (the end when None).

    Its id is fresh (`new_node_id`, a UUIDv7), never uuid5(parent, ordinal): a split's children
    keep those, so the two can never collide."""
    parent = tree.get(parent_id)
    fields = _checked_fields(fields)
    if fields.title is None or fields.target_words is None:
        missing = "node.title" if fields.title is None else "node.target_words"
        raise InvalidArgument(f"{missing} is required", reason="MISSING_FIELD", metadata={"field": missing})
    _parent_ok(parent)  # planned or split: neither holds blocks, so nothing written or pinned changes
    if parent.depth + 1 > rules.max_depth:
        raise InvalidArgument(f"a section under {parent.title!r} would be at depth {parent.depth + 1}, below the "
                              f"maximum depth {rules.max_depth}", reason="DEPTH_EXCEEDED",
                              metadata={"max_depth": str(rules.max_depth)})
    siblings = list(tree.children(parent_id))
    at = _position(position, len(siblings))
    _unique_title(fields.title, siblings, None)
    node = Node(id=new_node_id, artifact_id=artifact.id, parent_id=parent_id, ordinal=at, depth=parent.depth + 1,
                title=fields.title, intent=fields.intent or "", target_words=fields.target_words,
                state=NodeState.PLANNED)
    nodes = {n.id: n for n in tree.preorder()}
    nodes[node.id] = node
    siblings.insert(at, node)
    _renumbered(nodes, siblings)
    return _outline_mutation(tree, artifact, nodes, kind=OutlineEditKind.CREATE, subject=node.id, rules=rules,
                             touched=[parent_id])


def plan_delete_node(tree: Tree, artifact: Artifact, node_id: uuid.UUID, blocks: dict[uuid.UUID, list[Block]],
                     rules: OutlineRules) -> Mutation:
    """A person removes a section and its subtree; each of its blocks gets a DELETE change event."""
    node = tree.get(node_id)
    _not_root(tree, node, "deleted")
    _frozen(tree, node_id, rules)
    _keeps_a_child(tree, node, "delete")
    gone = [n.id for n in tree.subtree(node_id)]
    if rules.scope_node_id is not None and rules.scope_node_id in gone:
        raise FailedPrecondition(f"run {rules.run_id} regenerates section {rules.scope_node_id}, which this delete "
                                 "would remove; cancel the run first", reason="SCOPE_OF_RUN",
                                 metadata={"node_id": str(rules.scope_node_id)})
    assert node.parent_id is not None
    nodes = {n.id: n for n in tree.preorder() if n.id not in set(gone)}
    _renumbered(nodes, [s for s in tree.children(node.parent_id) if s.id != node_id])
    doomed = [b for n in gone for b in blocks.get(n, ())]
    return _outline_mutation(tree, artifact, nodes, kind=OutlineEditKind.DELETE, subject=node_id, rules=rules,
                             touched=[node.parent_id], deleted=gone, block_deletes=doomed)


def plan_move_node(tree: Tree, artifact: Artifact, node_id: uuid.UUID, new_parent_id: uuid.UUID | None,
                   position: int | None, rules: OutlineRules) -> Mutation:
    """A person moves a section with its subtree under `new_parent_id` (None: the same parent) at
    `position` among the other children (the end when None)."""
    node = tree.get(node_id)
    _not_root(tree, node, "moved")
    assert node.parent_id is not None
    old_parent_id = node.parent_id
    target_id = old_parent_id if new_parent_id is None else new_parent_id
    parent = tree.get(target_id)
    moved = tree.subtree(node_id)
    if target_id in {n.id for n in moved}:
        raise InvalidArgument(f"section {parent.title!r} is {node.title!r} itself or under it: a section cannot move "
                              "into its own subtree", reason="MOVE_CYCLE", metadata={"field": "parent_id"})
    _frozen(tree, node_id, rules)
    if target_id != old_parent_id:
        _parent_ok(parent)
        _keeps_a_child(tree, node, "move")
    shift = parent.depth + 1 - node.depth
    deepest = max(n.depth for n in moved) + shift
    if deepest > rules.max_depth:
        raise InvalidArgument(f"under {parent.title!r} the subtree of {node.title!r} would reach depth {deepest}, "
                              f"below the maximum depth {rules.max_depth}", reason="DEPTH_EXCEEDED",
                              metadata={"max_depth": str(rules.max_depth)})
    others = [c for c in tree.children(target_id) if c.id != node_id]
    at = _position(position, len(others))
    if target_id != old_parent_id:
        _unique_title(node.title, others, node_id)
    nodes = {n.id: n for n in tree.preorder()}
    for n in moved:
        nodes[n.id] = replace(n, depth=n.depth + shift)
    nodes[node_id] = replace(nodes[node_id], parent_id=target_id)
    others.insert(at, nodes[node_id])
    _renumbered(nodes, others)
    if target_id != old_parent_id:
        _renumbered(nodes, [c for c in tree.children(old_parent_id) if c.id != node_id])
    return _outline_mutation(tree, artifact, nodes, kind=OutlineEditKind.MOVE, subject=node_id, rules=rules,
                             touched=[old_parent_id, target_id])
