"""`${steps.NAME.output.PATH}`: checked when the definition is parsed,
resolved when the step is dispatched."""

from __future__ import annotations

import copy

import pytest

from coordinator.saga import DefinitionError, SubstitutionError, parse_definition, substitute

OUTPUTS = {
    "orders": {
        "order_id": "o-7",
        "total": 42.5,
        "lines": [{"sku": "W-1"}, {"sku": "W-2"}],
        "paid": False,
        "note": None,
        "0": "zero",
    },
    "approval": ["bob", "amy"],
    "a.b": {"c": 1},
}


@pytest.mark.parametrize(
    "reference, value",
    [
        ("${steps.orders.output}", OUTPUTS["orders"]),
        ("${steps.orders.output.order_id}", "o-7"),
        ("${steps.orders.output.total}", 42.5),
        ("${steps.orders.output.lines}", [{"sku": "W-1"}, {"sku": "W-2"}]),
        ("${steps.orders.output.lines.1.sku}", "W-2"),
        ("${steps.orders.output.paid}", False),
        ("${steps.orders.output.note}", None),
        ("${steps.orders.output.0}", "zero"),  # digits on an object are a key
        ("${steps.approval.output.0}", "bob"),
        ("${steps.a.b.output.c}", 1),  # step names may contain dots
    ],
)
def test_a_reference_becomes_the_value_itself_not_a_string(reference, value):
    assert substitute({"x": reference}, OUTPUTS) == {"x": value}


def test_references_are_found_anywhere_in_the_body_and_the_body_is_not_changed():
    body = {
        "order": "${steps.orders.output.order_id}",
        "items": [{"sku": "${steps.orders.output.lines.0.sku}"}, 3, True],
        "who": "${steps.approval.output}",
    }
    before = copy.deepcopy(body)
    assert substitute(body, OUTPUTS) == {"order": "o-7", "items": [{"sku": "W-1"}, 3, True], "who": ["bob", "amy"]}
    assert body == before
    assert substitute("${steps.orders.output.total}", OUTPUTS) == 42.5


@pytest.mark.parametrize(
    "text",
    [
        "order ${steps.orders.output.order_id}",
        "${steps.orders.output.order_id} ",
        "$steps.orders.output",
        "{steps.orders.output}",
        "steps.orders.output",
    ],
)
def test_other_strings_are_left_alone(text):
    assert substitute({"x": text}, OUTPUTS) == {"x": text}


@pytest.mark.parametrize(
    "reference, message",
    [
        ("${steps.orders.output.missing}", "has no field 'missing'"),
        ("${steps.orders.output.lines.5}", "has no element 'lines.5'"),
        ("${steps.orders.output.lines.first}", "has no element 'lines.first'"),
        ("${steps.orders.output.total.cents}", "not an object or array"),
        ("${steps.shipping.output}", "which is not a step"),
    ],
)
def test_a_reference_that_does_not_resolve_raises(reference, message):
    with pytest.raises(SubstitutionError) as caught:
        substitute({"x": reference}, OUTPUTS)
    assert message in str(caught.value)


def test_a_step_without_output_cannot_be_referenced():
    with pytest.raises(SubstitutionError, match="has no output"):
        substitute("${steps.orders.output}", {}, step_names=("orders",))


# -- checked at parse time ----------------------------------------------------------


def two_steps(action_body: object = None, compensation_body: object = None) -> dict:
    first = {"name": "orders", "service": "orders", "action": {"method": "POST", "path": "/o"}}
    second: dict = {
        "name": "payments",
        "service": "payments",
        "action": {"method": "POST", "path": "/p"},
        "compensation": {"method": "POST", "path": "/p/undo"},
    }
    if action_body is not None:
        first["action"]["body"] = action_body
    if compensation_body is not None:
        second["compensation"]["body"] = compensation_body
    return {"steps": [first, second]}


def test_an_action_may_name_earlier_steps_only():
    raw = two_steps(action_body={"order": "${steps.payments.output.id}"})
    with pytest.raises(DefinitionError) as caught:
        parse_definition(raw)
    assert str(caught.value) == ("steps[0].action.body.order: references step 'payments' which is not an earlier step")


def test_an_action_may_not_name_its_own_step():
    raw = two_steps(action_body={"order": "${steps.orders.output}"})
    with pytest.raises(DefinitionError, match="'orders' which is not an earlier step"):
        parse_definition(raw)


def test_an_unknown_step_is_named_with_the_field_inside_lists():
    raw = two_steps(action_body={"items": [1, {"id": "${steps.ghost.output.id}"}]})
    with pytest.raises(DefinitionError) as caught:
        parse_definition(raw)
    assert caught.value.field == "steps[0].action.body.items[1].id"
    assert "'ghost'" in caught.value.message


def test_a_compensation_may_name_its_own_step_and_earlier_ones():
    body = {"payment": "${steps.payments.output.id}", "order": "${steps.orders.output.id}"}
    parse_definition(two_steps(compensation_body=body))


def test_a_compensation_may_not_name_a_later_step():
    raw = two_steps()
    raw["steps"][0]["compensation"] = {"method": "POST", "path": "/o/undo", "body": {"p": "${steps.payments.output}"}}
    with pytest.raises(DefinitionError) as caught:
        parse_definition(raw)
    assert caught.value.field == "steps[0].compensation.body.p"
    assert "not this step or an earlier one" in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        "${steps.orders.outputs.id}",
        "${steps.orders}",
        "${steps.orders.output.}",
        "${steps.orders.output..id}",
        "${steps..output}",
        "${steps.orders.output}${steps.orders.output}",
    ],
)
def test_a_malformed_reference_is_an_error(text):
    raw = two_steps(compensation_body={"x": text})
    with pytest.raises(DefinitionError) as caught:
        parse_definition(raw)
    assert caught.value.field == "steps[1].compensation.body.x"
    assert "malformed reference" in caught.value.message
