"""The List methods' filter and order_by parser: plain data in, plain data out, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from lace_engine.errors import InvalidArgument
from lace_engine.list_query import AllOf, AnyOf, Comparison, Not, Ordering, parse_filter, parse_order_by
from lace_engine.service import NEWEST_FIRST, RUN_FILTER_FIELDS, RUN_ORDER_FIELDS

F = RUN_FILTER_FIELDS


def test_an_empty_filter_is_everything_and_an_empty_order_the_default() -> None:
    assert parse_filter("  ", F) is None
    assert parse_order_by("", RUN_ORDER_FIELDS, NEWEST_FIRST) == NEWEST_FIRST


def test_comparisons_take_typed_values() -> None:
    artifact = uuid.uuid4()
    assert parse_filter(f"artifact_id = {artifact}", F) == Comparison("artifact_id", "=", artifact)
    assert parse_filter('create_time >= "2026-12-01T00:00:00Z"', F) == \
        Comparison("create_time", ">=", datetime(2026, 12, 1, tzinfo=UTC))
    # An enum by its name, with or without its prefix, as the domain's value.
    assert parse_filter("state = RUNNING", F) == parse_filter("state=RUN_STATE_RUNNING", F) == \
        Comparison("state", "=", "running")


def test_or_binds_tighter_than_and_and_parentheses_and_not_nest() -> None:
    running, paused = Comparison("state", "=", "running"), Comparison("state", "=", "paused")
    after = Comparison("create_time", ">", datetime(2026, 12, 1, tzinfo=UTC))
    assert parse_filter('state = RUNNING OR state = PAUSED AND create_time > "2026-12-01T00:00:00+00:00"', F) == \
        AllOf((AnyOf((running, paused)), after))
    assert parse_filter('NOT (state = RUNNING AND create_time > "2026-12-01T00:00:00Z") OR state = PAUSED', F) == \
        AnyOf((Not(AllOf((running, after))), paused))


@pytest.mark.parametrize(("text", "says"), [
    ("title = x", "'title' is not a field"),
    ("state < RUNNING", "state takes the operators = !="),
    ("state = SLEEPING", "state is one of"),
    ("artifact_id = 12", "a UUID"),
    ('create_time > "2026-12-01"', "with a zone"),
    ("create_time > yesterday", "RFC 3339"),
    ("state = RUNNING state = PAUSED", "join comparisons with AND or OR"),
    ("(state = RUNNING", "not closed"),
    ("state =", "ends too early"),
    ("state = RUNNING AND", "ends too early"),
    ('state = "RUNNING', "cannot read"),
    ("x" * 2001, "longer than 2000"),
])
def test_a_bad_filter_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_filter(text, F)
    assert raised.value.reason == "INVALID_FILTER" and raised.value.metadata == {"field": "filter"}
    assert says in raised.value.message


def test_order_by_is_one_field_and_a_direction() -> None:
    fields = ("create_time", "update_time")
    assert parse_order_by("update_time", fields, NEWEST_FIRST) == Ordering("update_time", descending=False)
    assert parse_order_by(" create_time  desc ", fields, NEWEST_FIRST) == Ordering("create_time", descending=True)
    for bad in ("title", "create_time up", "create_time desc, id"):
        with pytest.raises(InvalidArgument) as raised:
            parse_order_by(bad, fields, NEWEST_FIRST)
        assert raised.value.reason == "INVALID_ORDER_BY"
