"""A parsed List filter and order (lace_engine.list_query) as SQLAlchemy Core clauses."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lace_engine.list_query import AllOf, AnyOf, Comparison, Expr, ListQuery, Not

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def where(expr: Expr, columns: Mapping[str, sa.ColumnElement[Any]]) -> sa.ColumnElement[bool]:
    """The filter as one boolean clause over `columns` (by the filter's field names)."""
    if isinstance(expr, Comparison):
        return _OPS[expr.op](columns[expr.field], expr.value)  # type: ignore[no-any-return]
    if isinstance(expr, AllOf):
        return sa.and_(*(where(t, columns) for t in expr.terms))
    if isinstance(expr, AnyOf):
        return sa.or_(*(where(t, columns) for t in expr.terms))
    assert isinstance(expr, Not)
    return sa.not_(where(expr.term, columns))


def apply(stmt: sa.Select[Any], query: ListQuery, columns: Mapping[str, sa.ColumnElement[Any]],
          id_column: sa.ColumnElement[Any], after: tuple[str, str] | None, limit: int) -> sa.Select[Any]:
    """`stmt` filtered, ordered by the query's field then id, after the page position `after` (field, id)."""
    if query.where is not None:
        stmt = stmt.where(where(query.where, columns))
    key = columns[query.order.field]
    if after is not None:
        position = sa.tuple_(sa.cast(datetime.fromisoformat(after[0]), key.type), sa.cast(after[1], id_column.type))
        past = sa.tuple_(key, id_column)
        stmt = stmt.where(past < position if query.order.descending else past > position)
    if query.order.descending:
        return stmt.order_by(key.desc(), id_column.desc()).limit(limit)
    return stmt.order_by(key.asc(), id_column.asc()).limit(limit)
