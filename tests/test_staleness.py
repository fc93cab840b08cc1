"""The stale-section decision (pipeline/staleness.py), pure: no database, no server."""

from __future__ import annotations

import uuid
from dataclasses import replace

from lace_engine.domain import EventType, Node, NodeState, Origin
from lace_engine.pipeline.apply import Mutation, NodePatch, Provenance
from lace_engine.pipeline.context_builder import ManifestEntry, content_hash, contribution_hash
from lace_engine.pipeline.staleness import (
    Reference,
    dependencies,
    outline_changes,
    own_check,
    referenced_ids,
    rewritten,
    stale_marks,
    text_edited,
    with_marks,
)
from lace_engine.pipeline.tree import Tree

ART = uuid.uuid4()
ROOT = uuid.uuid4()
A, B, C = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def node(node_id: uuid.UUID, title: str, ordinal: int, parent: uuid.UUID | None = ROOT, *,
         state: NodeState = NodeState.WRITTEN, summary: str = "", stale: str = "") -> Node:
    return Node(id=node_id, artifact_id=ART, parent_id=parent, ordinal=ordinal, depth=0 if parent is None else 1,
                title=title, intent=f"about {title}", target_words=300, state=state,
                summary=summary or f"{title} in short.", stale_reason=stale)


def tree(*extra: Node) -> Tree:
    nodes = {n.id: n for n in (node(ROOT, "Doc", 0, None, state=NodeState.SPLIT),
                               node(A, "Alpha", 0), node(B, "Beta", 1), node(C, "Gamma", 2))}
    nodes.update({n.id: n for n in extra})
    return Tree(nodes.values())


def ref(dependant: uuid.UUID, on: Node, kind: str, stale: str = "") -> Reference:
    """A reference as the context builder would have recorded it for `on` as it is."""
    digest = contribution_hash(kind, on) or content_hash(f"{kind}:{on.title}")
    return Reference(dependant, on.id, kind, digest, stale)


def test_a_persons_edit_marks_the_sections_that_used_its_summary_and_only_those() -> None:
    t = tree()
    a = t.get(A)
    refs = [ref(B, a, "summary"), ref(C, a, "summary"), ref(B, a, "sibling"), ref(C, a, "covered_heading"),
            ref(A, a, "node")]
    # C's covered_heading and B's sibling entry show A's title only: a text edit does not touch them.
    marks = stale_marks(refs, {A: text_edited(a)}, exclude={A})
    assert set(marks) == {B, C}
    assert marks[B] == "section 'Alpha' was edited by a person; this section's prompt used its summary"


def test_a_section_already_stale_keeps_its_first_reason() -> None:
    a = tree().get(A)
    marks = stale_marks([ref(B, a, "summary", stale="earlier reason")], {A: text_edited(a)})
    assert marks == {}


def test_a_rewrite_marks_only_when_the_summary_it_contributes_changed() -> None:
    t = tree()
    a = t.get(A)
    refs = [ref(B, a, "summary"), ref(C, a, "summary")]
    same = rewritten(a, replace(a, summary=a.summary), uuid.uuid4())
    assert stale_marks(refs, {A: same}, exclude={A}) == {}
    run_id = uuid.uuid4()
    changed = rewritten(a, replace(a, summary="Something else entirely."), run_id)
    marks = stale_marks(refs, {A: changed}, exclude={A})
    assert set(marks) == {B, C} and f"was rewritten by run {run_id}" in marks[B]
    # A section whose prompt held an older summary than the one replaced is stale too (hash, not fields).
    old = Reference(B, A, "summary", content_hash("- Alpha: an older summary"))
    assert set(stale_marks([old], {A: same}, exclude={A})) == {B}


def test_outline_edits_mark_by_what_each_kind_of_piece_shows() -> None:
    before = tree()
    a = before.get(A)
    refs = [ref(B, a, "sibling"), ref(C, a, "covered_heading"), ref(A, a, "node")]
    # Retitled: the outline entry, the covered heading and the section itself.
    after = tree(replace(a, title="Alpha, revised"))
    changes, arrivals = outline_changes(before, after)
    marks = stale_marks(refs, changes, arrivals)
    assert set(marks) == {A, B, C}
    assert marks[A].startswith("section 'Alpha' was retitled 'Alpha, revised'")
    assert marks[A].endswith("after this section was written from the old outline")
    # A budget: only the section itself (every budget edit moves its parent's and the root's).
    after = tree(replace(a, target_words=500))
    changes, arrivals = outline_changes(before, after)
    assert set(stale_marks(refs, changes, arrivals)) == {A}
    # A new intent: the outline entry and the section, not the covered heading (its title only).
    after = tree(replace(a, intent="a new aim"))
    changes, arrivals = outline_changes(before, after)
    assert set(stale_marks(refs, changes, arrivals)) == {A, B}


def test_a_delete_marks_every_reference_and_never_the_deleted() -> None:
    before = tree()
    a, b = before.get(A), before.get(B)
    after = Tree(n for n in before.preorder() if n.id != A)
    changes, arrivals = outline_changes(before, after)
    refs = [ref(C, a, "covered_heading"), ref(A, b, "summary"), ref(B, a, "summary")]
    marks = stale_marks(refs, changes, arrivals)
    assert set(marks) == {B, C}
    assert marks[C].startswith("section 'Alpha' was deleted")


def test_a_new_sibling_marks_the_written_sections_whose_outline_lacked_it() -> None:
    before = tree()
    new = node(uuid.uuid4(), "Delta", 3, state=NodeState.PLANNED)
    after = tree(new)
    changes, arrivals = outline_changes(before, after)
    assert changes == {} and [x.node.id for x in arrivals] == [new.id]
    assert set(referenced_ids(changes, arrivals)) == {A, B, C}
    # A and B had the sibling outline in their prompts; C (say, over budget) did not.
    refs = [ref(A, before.get(B), "sibling"), ref(B, before.get(A), "sibling"), ref(C, before.get(C), "node")]
    marks = stale_marks(refs, changes, arrivals)
    assert set(marks) == {A, B}
    assert marks[A] == ("section 'Delta' was placed beside it; this section's prompt listed its siblings "
                        "without it")


def test_marks_merge_into_the_mutation_and_are_an_event_only_in_a_run() -> None:
    mutation = Mutation(artifact_id=ART, provenance=Provenance(origin=Origin.HUMAN),
                        node_patches=(NodePatch(B, NodeState.WRITTEN, ordinal=0),))
    marked = with_marks(mutation, {B: "why B", C: "why C"}, in_run=False)
    patches = {p.node_id: p for p in marked.node_patches}
    assert patches[B] == NodePatch(B, NodeState.WRITTEN, ordinal=0, stale_reason="why B")
    assert patches[C] == NodePatch(C, NodeState.WRITTEN, stale_reason="why C")
    assert marked.events == ()
    in_run = with_marks(mutation, {B: "why B"}, in_run=True)
    assert [e.type for e in in_run.events] == [EventType.NODES_MARKED_STALE]
    assert in_run.events[0].payload == {"nodes": [{"node_id": str(B), "reason": "why B"}]}
    assert with_marks(mutation, {}, in_run=True) is mutation


def test_own_check_sees_a_summary_that_changed_while_the_section_was_written() -> None:
    t = tree()
    a = t.get(A)
    manifest = [ManifestEntry("summary", A, contribution_hash("summary", a) or ""),
                ManifestEntry("brief", None, "x")]
    assert own_check(manifest, t) == ""
    moved_on = t.with_nodes([replace(a, summary="A newer summary.")])
    assert "section 'Alpha' changed while this section was being written" in own_check(manifest, moved_on)


def test_dependencies_name_each_node_once_per_kind() -> None:
    manifest = [ManifestEntry("node", B, "h1"), ManifestEntry("sibling", A, "h2"), ManifestEntry("sibling", B, "h3"),
                ManifestEntry("summary", A, "h4"), ManifestEntry("passage", None, "h5", uuid.uuid4()),
                ManifestEntry("summary", A, "h6")]
    assert dependencies(manifest) == [(B, "node", "h1"), (A, "sibling", "h2"), (B, "sibling", "h3"),
                                      (A, "summary", "h4")]
