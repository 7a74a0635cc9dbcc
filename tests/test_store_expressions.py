"""Conditions sent without needless parentheses mean what pynamodb wrote
(``chalicelib.store_expressions``). Their meaning on the real store is checked in
``test_store_wire`` (random conditions, both forms, same answers)."""

from __future__ import annotations

import pytest

from chalicelib.models import Execution, Site
from chalicelib.store_expressions import plain


def serialized(condition) -> str:
    return condition.serialize({}, {})


def test_the_presence_condition_loses_its_nested_groups():
    session, rank = Site.presence_session, Site.presence_rank
    condition = session.does_not_exist() | (session < 5) | ((session == 5) & (rank < 2))
    assert serialized(condition) == \
        "((attribute_not_exists (#0) OR #0 < :0) OR (#0 = :1 AND #1 < :2))"
    assert plain(serialized(condition)) == \
        "attribute_not_exists (#0) OR #0 < :0 OR (#0 = :1 AND #1 < :2)"


def test_a_progress_condition_keeps_the_or_inside_its_and():
    condition = (Execution.execution_id == "x") & \
        (Execution.last_seq.does_not_exist() | (Execution.last_seq < 3)) & \
        Execution.state.is_in("sent", "running")
    assert plain(serialized(condition)) == \
        "#0 = :0 AND (attribute_not_exists (#1) OR #1 < :1) AND #2 IN (:2, :3)"


@pytest.mark.parametrize(("written", "plain_form"), [
    ("#0 = :0", "#0 = :0"),
    ("(((#0 = :0)))", "#0 = :0"),
    ("((#0 BETWEEN :0 AND :1) AND #2 = :2)", "#0 BETWEEN :0 AND :1 AND #2 = :2"),
    ("((#0 = :0 OR #1 = :1) AND (#2 = :2 OR #3 = :3))",
     "(#0 = :0 OR #1 = :1) AND (#2 = :2 OR #3 = :3)"),
    ("((#0 = :0 AND #1 = :1) OR #2 = :2)", "(#0 = :0 AND #1 = :1) OR #2 = :2"),
    ("(NOT (#0 = :0 AND #1 = :1))", "NOT (#0 = :0 AND #1 = :1)"),
    ("(NOT (NOT (#0 = :0)))", "NOT (NOT (#0 = :0))"),
    ("((#0.a[1] = :0 OR size (#1) > :1) AND begins_with (#2, :2))",
     "(#0.a[1] = :0 OR size (#1) > :1) AND begins_with (#2, :2)"),
    ("(contains (#0, :0) AND #1 IN (:1, :2))", "contains (#0, :0) AND #1 IN (:1, :2)"),
])
def test_only_parentheses_that_change_nothing_are_left_out(written, plain_form):
    assert plain(written) == plain_form


@pytest.mark.parametrize("unrecognized", [
    "((#a) = :b)",  # an operand in parentheses
    "((#0 = :0)",  # unbalanced
    "(#0 BETWEEN :0)",  # a BETWEEN without its AND
    "(#0 = :0 AND)",
    "(#0 = :0 ; DROP)",
])
def test_what_it_does_not_recognize_is_sent_as_written(unrecognized):
    assert plain(unrecognized) == unrecognized
