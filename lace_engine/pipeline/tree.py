"""An immutable, indexed view over the nodes of one artifact."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from uuid import UUID

from lace_engine.domain import Node


def _order_key(node: Node) -> tuple[int, int]:
    # Ordinals should be unique among siblings; the id breaks ties so that order is total
    # and identical inputs always give identical documents.
    return (node.ordinal, node.id.int)


class Tree:
    """The nodes of one artifact indexed by id and by parent; never mutated after construction."""

    __slots__ = ("_by_id", "_children", "_root")

    # Keyed by UUID.int: hashing a UUID runs Python code, hashing an int does not, and
    # context building looks nodes up hundreds of times per call.
    _by_id: dict[int, Node]
    _children: dict[int, tuple[Node, ...]]
    _root: Node | None

    def __init__(self, nodes: Iterable[Node]) -> None:
        by_id: dict[int, Node] = {}
        for node in nodes:
            by_id[node.id.int] = node
        root: Node | None = None
        artifact = _artifact_of(by_id.values())
        for node in by_id.values():
            root = _checked(node, root, artifact)
        grouped: dict[int, list[Node]] = {}
        for node in by_id.values():
            if node.parent_id is not None:
                grouped.setdefault(node.parent_id.int, []).append(node)
        self._by_id = by_id
        self._children = {pid: tuple(sorted(kids, key=_order_key)) for pid, kids in grouped.items()}
        self._root = root

    @property
    def root(self) -> Node:
        """The node without a parent; ValueError for a tree that has none."""
        if self._root is None:
            raise ValueError("tree has no root node")
        return self._root

    def get(self, node_id: UUID) -> Node:
        """The node with this id; KeyError when it is not in the tree."""
        try:
            return self._by_id[node_id.int]
        except KeyError:
            raise KeyError(node_id) from None

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, UUID) and node_id.int in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        root = self._root.id if self._root is not None else None
        return f"Tree(root={root}, nodes={len(self._by_id)})"

    def children(self, node_id: UUID) -> tuple[Node, ...]:
        """Direct children in ordinal order (empty for a leaf)."""
        kids = self._children.get(node_id.int)
        if kids is None:
            if node_id.int not in self._by_id:
                raise KeyError(node_id)
            return ()
        return kids

    def parent(self, node_id: UUID) -> Node | None:
        """The parent node, or None for the root (and for a node whose parent is absent)."""
        parent_id = self.get(node_id).parent_id
        return None if parent_id is None else self._by_id.get(parent_id.int)

    def ancestors(self, node_id: UUID) -> tuple[Node, ...]:
        """Ancestors from the root down to the parent, excluding the node itself."""
        chain: list[Node] = []
        parent_id = self.get(node_id).parent_id
        by_id = self._by_id
        # A parent cycle would otherwise loop forever; a real chain is never longer than the tree.
        limit = len(by_id)
        while parent_id is not None:
            parent = by_id.get(parent_id.int)
            if parent is None:
                break
            chain.append(parent)
            if len(chain) > limit:
                raise ValueError(f"parent cycle above node {node_id}")
            parent_id = parent.parent_id
        chain.reverse()
        return tuple(chain)

    def siblings(self, node_id: UUID) -> tuple[Node, ...]:
        """The children of the node's parent in order, including the node; (root,) for the root."""
        node = self.get(node_id)
        if node.parent_id is None:
            return (node,)
        return self._children.get(node.parent_id.int, (node,))

    def preorder(self, start: UUID | None = None) -> Iterator[Node]:
        """Nodes in document order from `start` (default: the root), `start` first."""
        first = self.root if start is None else self.get(start)
        stack = [first]
        children = self._children
        while stack:
            node = stack.pop()
            yield node
            kids = children.get(node.id.int)
            if kids:
                stack.extend(reversed(kids))

    def subtree(self, node_id: UUID) -> tuple[Node, ...]:
        """The node and all its descendants in document order."""
        return tuple(self.preorder(node_id))

    def leaves(self, under: UUID | None = None) -> tuple[Node, ...]:
        """Nodes without children in document order, within `under`'s subtree when given."""
        children = self._children
        return tuple(n for n in self.preorder(under) if n.id.int not in children)

    def with_nodes(self, nodes: Iterable[Node]) -> Tree:
        """A new tree with these nodes inserted or replaced by id; this tree is unchanged."""
        changed = {n.id.int: n for n in nodes}
        if not changed:
            return self
        by_id = dict(self._by_id)
        root = self._root
        artifact = _artifact_of(by_id.values()) or _artifact_of(changed.values())
        # Only the changed nodes are checked and only the child lists of parents that gain,
        # lose or reorder a child are rebuilt, so a small update never re-sorts the whole tree.
        dirty: set[int] = set()
        for key, node in changed.items():
            old = by_id.get(key)
            if old is not None:
                if old.parent_id is not None:
                    dirty.add(old.parent_id.int)
                elif root is old:
                    root = None
            root = _checked(node, root, artifact)
            if node.parent_id is not None:
                dirty.add(node.parent_id.int)
            by_id[key] = node
        children = dict(self._children)
        for pid in dirty:
            kids = [by_id[k.id.int] for k in self._children.get(pid, ())]
            kids = [k for k in kids if k.parent_id is not None and k.parent_id.int == pid]
            present = {k.id.int for k in kids}
            kids.extend(
                n
                for key, n in changed.items()
                if n.parent_id is not None and n.parent_id.int == pid and key not in present
            )
            if kids:
                children[pid] = tuple(sorted(kids, key=_order_key))
            else:
                children.pop(pid, None)
        tree = Tree.__new__(Tree)
        tree._by_id = by_id
        tree._children = children
        tree._root = root
        return tree


def _artifact_of(nodes: Iterable[Node]) -> UUID | None:
    return next((n.artifact_id for n in nodes), None)


def _checked(node: Node, root: Node | None, artifact: UUID | None) -> Node | None:
    """The root after adding `node`; ValueError when it breaks the one-artifact, one-root rules."""
    if artifact is not None and node.artifact_id.int != artifact.int:
        raise ValueError(f"node {node.id} belongs to artifact {node.artifact_id}, not {artifact}")
    if node.parent_id is None:
        if root is not None and root.id.int != node.id.int:
            raise ValueError(f"two root nodes: {root.id} and {node.id}")
        return node
    return root
