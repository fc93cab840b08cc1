"""Tree: indexing, ordering and copy-on-write updates."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lace_engine.domain import Node, NodeState
from lace_engine.pipeline.tree import Tree

ARTIFACT = uuid.UUID(int=0xA)


def _node(n: int, parent: Node | None, ordinal: int, title: str = "") -> Node:
    return Node(
        id=uuid.UUID(int=n),
        artifact_id=ARTIFACT,
        parent_id=parent.id if parent else None,
        ordinal=ordinal,
        depth=parent.depth + 1 if parent else 0,
        title=title or f"n{n}",
        intent="",
        target_words=100,
        state=NodeState.PLANNED,
    )


def _sample() -> tuple[Tree, dict[str, Node]]:
    #        root
    #     a        b
    #   a1 a2      b1
    #      a2x
    root = _node(1, None, 0, "root")
    a = _node(2, root, 0, "a")
    b = _node(3, root, 1, "b")
    a1 = _node(4, a, 0, "a1")
    a2 = _node(5, a, 1, "a2")
    b1 = _node(6, b, 0, "b1")
    a2x = _node(7, a2, 0, "a2x")
    nodes = [b1, a2x, b, root, a2, a1, a]  # deliberately out of order
    return Tree(nodes), {n.title: n for n in nodes}


def _titles(nodes: object) -> list[str]:
    return [n.title for n in nodes]  # type: ignore[attr-defined]


def test_lookup_and_size() -> None:
    tree, n = _sample()
    assert tree.root == n["root"]
    assert len(tree) == 7
    assert n["a2"].id in tree
    assert uuid.UUID(int=99) not in tree
    assert "not a uuid" not in tree
    assert tree.get(n["b1"].id) == n["b1"]
    with pytest.raises(KeyError):
        tree.get(uuid.UUID(int=99))
    with pytest.raises(KeyError):
        tree.children(uuid.UUID(int=99))


def test_navigation() -> None:
    tree, n = _sample()
    assert _titles(tree.children(n["root"].id)) == ["a", "b"]
    assert _titles(tree.children(n["a"].id)) == ["a1", "a2"]
    assert tree.children(n["a1"].id) == ()
    assert _titles(tree.ancestors(n["a2x"].id)) == ["root", "a", "a2"]
    assert tree.ancestors(n["root"].id) == ()
    assert _titles(tree.siblings(n["a2"].id)) == ["a1", "a2"]
    assert _titles(tree.siblings(n["root"].id)) == ["root"]
    assert tree.parent(n["a1"].id) == n["a"]
    assert tree.parent(n["root"].id) is None


def test_orders() -> None:
    tree, n = _sample()
    assert _titles(tree.preorder()) == ["root", "a", "a1", "a2", "a2x", "b", "b1"]
    assert _titles(tree.preorder(n["a"].id)) == ["a", "a1", "a2", "a2x"]
    assert _titles(tree.subtree(n["a2"].id)) == ["a2", "a2x"]
    assert _titles(tree.leaves()) == ["a1", "a2x", "b1"]
    assert _titles(tree.leaves(n["b"].id)) == ["b1"]
    assert _titles(tree.leaves(n["a1"].id)) == ["a1"]


def test_invalid_trees() -> None:
    root = _node(1, None, 0)
    with pytest.raises(ValueError, match="two root"):
        Tree([root, _node(2, None, 0)])
    with pytest.raises(ValueError, match="artifact"):
        Tree([root, dataclasses.replace(_node(2, root, 0), artifact_id=uuid.UUID(int=0xB))])
    with pytest.raises(ValueError, match="no root"):
        _ = Tree([]).root
    tree = Tree([root, _node(2, root, 0)])
    with pytest.raises(ValueError, match="two root"):
        tree.with_nodes([_node(3, None, 0)])
    with pytest.raises(ValueError, match="artifact"):
        tree.with_nodes([dataclasses.replace(_node(3, root, 1), artifact_id=uuid.UUID(int=0xB))])
    assert tree.with_nodes([dataclasses.replace(root, title="renamed")]).root.title == "renamed"


def test_with_nodes_inserts_replaces_and_moves() -> None:
    tree, n = _sample()
    c = _node(8, n["root"], 2, "c")
    renamed = dataclasses.replace(n["a1"], title="A1", ordinal=5)  # now after a2
    moved = dataclasses.replace(n["b1"], parent_id=n["a"].id, ordinal=9, depth=2)
    new = tree.with_nodes([c, renamed, moved])

    assert _titles(new.preorder()) == ["root", "a", "a2", "a2x", "A1", "b1", "b", "c"]
    assert new.children(n["b"].id) == ()
    assert _titles(new.leaves()) == ["a2x", "A1", "b1", "b", "c"]
    # The original is untouched.
    assert _titles(tree.preorder()) == ["root", "a", "a1", "a2", "a2x", "b", "b1"]
    assert tree.with_nodes([]) is tree


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=60), st.randoms(use_true_random=False))
def test_with_nodes_equals_rebuilding(size: int, rnd: random.Random) -> None:
    nodes = [_node(1, None, 0)]
    for i in range(2, size + 1):
        parent = rnd.choice(nodes)
        nodes.append(_node(i, parent, rnd.randrange(10)))
    tree = Tree(nodes)
    updates = []
    for node in rnd.sample(nodes[1:], k=min(len(nodes) - 1, rnd.randrange(4))):
        updates.append(dataclasses.replace(node, ordinal=rnd.randrange(10), title=node.title + "'"))
    updates.append(_node(size + 1, rnd.choice(nodes), rnd.randrange(10)))
    incremental = tree.with_nodes(updates)
    rebuilt = Tree([*nodes, *updates])
    assert list(incremental.preorder()) == list(rebuilt.preorder())
    for node in rebuilt.preorder():
        assert incremental.children(node.id) == rebuilt.children(node.id)


def test_large_tree_is_cheap() -> None:
    nodes = [_node(1, None, 0)]
    for i in range(2, 5001):
        nodes.append(_node(i, nodes[(i - 2) // 8], (i - 2) % 8))
    start = time.perf_counter()
    tree = Tree(nodes)
    assert len(list(tree.preorder())) == 5000
    tree.with_nodes([dataclasses.replace(nodes[100], title="x")])
    for node in nodes[::50]:
        tree.ancestors(node.id)
        tree.siblings(node.id)
    assert time.perf_counter() - start < 1.0
