"""The `filter` (AIP-160) and `order_by` (AIP-132) of the List methods: a small subset, parsed to plain data.

Grammar: comparisons `field OP value` joined by `AND` and `OR` (OR binds tighter, as AIP-160
says), with parentheses and `NOT`. A timestamp is RFC 3339 with a zone, in double quotes; an enum is
its name, with or without the enum's prefix (`RUNNING`, `RUN_STATE_RUNNING`); an id is a UUID.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from lace_engine.errors import InvalidArgument


class FieldKind(enum.Enum):
    TIMESTAMP = "timestamp"
    ID = "id"
    ENUM = "enum"


_OPERATORS = {
    FieldKind.TIMESTAMP: ("=", "!=", "<", "<=", ">", ">="),
    FieldKind.ID: ("=", "!="),
    FieldKind.ENUM: ("=", "!="),
}


@dataclass(frozen=True, slots=True)
class Field:
    kind: FieldKind
    # ENUM: the accepted names (upper case, without prefix) and the domain value each stands for.
    values: Mapping[str, str] | None = None
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Comparison:
    field: str
    op: str
    value: datetime | uuid.UUID | str


@dataclass(frozen=True, slots=True)
class AllOf:
    """Every term holds (AND)."""

    terms: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one term holds (OR)."""

    terms: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Expr


Expr = Comparison | AllOf | AnyOf | Not


@dataclass(frozen=True, slots=True)
class Ordering:
    field: str
    descending: bool


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a List method was asked for: the filter (None: everything) and the order."""

    where: Expr | None
    order: Ordering

    def key(self, text_filter: str) -> list[str]:
        """What a page token is bound to: the filter as given and the order as understood."""
        return [text_filter.strip(), self.order.field, "desc" if self.order.descending else "asc"]


_TOKEN = re.compile(r'\s*(?:(?P<paren>[()])|(?P<op><=|>=|!=|=|<|>)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()<>=!"]+))')
MAX_FILTER_CHARS = 2000


def _filter_error(message: str) -> InvalidArgument:
    return InvalidArgument(f"filter: {message}", reason="INVALID_FILTER", metadata={"field": "filter"})


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            raise _filter_error(f"cannot read {text[at:].strip()[:20]!r} (at character {at + 1})")
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value))
        at = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], fields: Mapping[str, Field]):
        self.tokens = tokens
        self.at = 0
        self.fields = fields

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise _filter_error("ends too early: a comparison is missing")
        self.at += 1
        return token

    def expression(self) -> Expr:
        terms = [self.disjunction()]
        while self.peek() == ("word", "AND"):
            self.at += 1
            terms.append(self.disjunction())
        return terms[0] if len(terms) == 1 else AllOf(tuple(terms))

    def disjunction(self) -> Expr:
        terms = [self.unary()]
        while self.peek() == ("word", "OR"):
            self.at += 1
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else AnyOf(tuple(terms))

    def unary(self) -> Expr:
        if self.peek() == ("word", "NOT"):
            self.at += 1
            return Not(self.unary())
        if self.peek() == ("paren", "("):
            self.at += 1
            inner = self.expression()
            if self.peek() != ("paren", ")"):
                raise _filter_error("a '(' is not closed")
            self.at += 1
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        kind, name = self.take()
        if kind != "word" or name in ("AND", "OR", "NOT"):
            raise _filter_error(f"expected a field name, got {name!r}")
        field = self.fields.get(name)
        if field is None:
            raise _filter_error(f"{name!r} is not a field this method filters on; use one of {sorted(self.fields)}")
        op_kind, op = self.take()
        if op_kind != "op" or op not in _OPERATORS[field.kind]:
            raise _filter_error(f"{name} takes the operators {' '.join(_OPERATORS[field.kind])}, not {op!r}")
        value_kind, raw = self.take()
        if value_kind not in ("word", "str"):
            raise _filter_error(f"{name} {op} needs a value")
        return Comparison(name, op, _value(name, field, raw))


def _value(name: str, field: Field, raw: str) -> datetime | uuid.UUID | str:
    if field.kind is FieldKind.TIMESTAMP:
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError:
            stamp = None
        if stamp is None or stamp.tzinfo is None:
            raise _filter_error(f'{name} compares with an RFC 3339 timestamp with a zone, such as '
                                f'"2026-12-01T00:00:00Z", not {raw!r}')
        return stamp
    if field.kind is FieldKind.ID:
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise _filter_error(f"{name} compares with an id (a UUID), not {raw!r}") from None
    assert field.values is not None
    short = raw.removeprefix(field.prefix)
    if short not in field.values:
        raise _filter_error(f"{name} is one of {', '.join(sorted(field.values))}, not {raw!r}")
    return field.values[short]


def parse_filter(text: str, fields: Mapping[str, Field]) -> Expr | None:
    """The filter as a tree (None when empty), or InvalidArgument (INVALID_FILTER) saying what is wrong."""
    if len(text) > MAX_FILTER_CHARS:
        raise _filter_error(f"longer than {MAX_FILTER_CHARS} characters")
    tokens = _tokens(text)
    if not tokens:
        return None
    parser = _Parser(tokens, fields)
    expr = parser.expression()
    if parser.peek() is not None:
        raise _filter_error(f"unexpected {parser.peek()[1]!r}; join comparisons with AND or OR")  # type: ignore[index]
    return expr


def parse_order_by(text: str, fields: tuple[str, ...], default: Ordering) -> Ordering:
    """One field and an optional `desc` (AIP-132); the default order when empty."""
    words = text.split()
    if not words:
        return default
    if len(words) > 2 or words[0] not in fields or (len(words) == 2 and words[1] not in ("asc", "desc")):
        raise InvalidArgument(f"order_by: expected one of {', '.join(fields)}, optionally followed by 'desc', "
                              f"got {text!r}", reason="INVALID_ORDER_BY", metadata={"field": "order_by"})
    return Ordering(words[0], descending=len(words) == 2 and words[1] == "desc")


def parse(text_filter: str, order_by: str, fields: Mapping[str, Field], order_fields: tuple[str, ...],
          default: Ordering) -> ListQuery:
    return ListQuery(parse_filter(text_filter, fields), parse_order_by(order_by, order_fields, default))
