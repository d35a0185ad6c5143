import pytest

from coordinator import saga, twopc
from coordinator.client import InvalidRequest
from coordinator.client.builder import Retry, SagaBuilder, TransactionBuilder, output


def test_saga_builder_gives_the_contract_shape():
    built = (
        SagaBuilder("order-42", timeout_s=600)
        .step(
            "create-order",
            "orders",
            action=("POST", "/orders", {"sku": "W-1", "qty": 3}),
            compensation=("POST", "/orders/cancel", {"order": output("create-order", "order_id")}),
            timeout_s=5,
            retry=Retry(5, 0.1, 5),
        )
        .await_signal("approval", "approved", timeout_s=300)
        .build()
    )
    assert built == {
        "id": "order-42",
        "timeout_s": 600,
        "steps": [
            {
                "name": "create-order",
                "service": "orders",
                "action": {"method": "POST", "path": "/orders", "body": {"sku": "W-1", "qty": 3}},
                "compensation": {
                    "method": "POST",
                    "path": "/orders/cancel",
                    "body": {"order": "${steps.create-order.output.order_id}"},
                },
                "timeout_s": 5,
                "retry": {"max_attempts": 5, "backoff_s": 0.1, "max_backoff_s": 5},
            },
            {"name": "approval", "await": "approved", "timeout_s": 300},
        ],
    }
    assert saga.parse_definition(built).id == "order-42"


def test_builders_refuse_what_the_cluster_would_refuse_naming_the_field():
    with pytest.raises(InvalidRequest) as info:
        SagaBuilder().step("a", "s", action=("POST", "/x")).step("a", "s", action=("POST", "/y")).build()
    assert info.value.field == "steps[1].name"
    with pytest.raises(InvalidRequest) as info:
        SagaBuilder().step("a", "s", action=("POST", "/x", {"v": output("later")})).step(
            "later", "s", action=("POST", "/y")
        ).build()
    assert info.value.field.startswith("steps[0].action.body")


def test_transaction_builder():
    built = (
        TransactionBuilder("tx-1", timeout_s=10)
        .participant("bank-a", prepare=("/p", {"d": -1}), commit="/c", abort="/a")
        .participant("bank-b", prepare="/p", commit="/c", abort="/a")
        .build()
    )
    assert twopc.parse_definition(built).services == ("bank-a", "bank-b")
    assert built["participants"][1]["prepare"] == {"path": "/p"}
    with pytest.raises(InvalidRequest):
        TransactionBuilder().build()


def test_both_builders_may_name_a_release():
    built = SagaBuilder("order-43", release="2.4.1").step("a", "s", action=("POST", "/x")).build()
    assert built["release"] == "2.4.1"
    assert saga.parse_definition(built).release == "2.4.1"
    built = (
        TransactionBuilder("tx-2", timeout_s=10, release="v3.0.0-rc.1+b7")
        .participant("bank-a", prepare="/p", commit="/c", abort="/a")
        .build()
    )
    assert built["release"] == "v3.0.0-rc.1+b7"
    assert twopc.parse_definition(built).release == "v3.0.0-rc.1+b7"


def test_without_a_release_the_builders_send_none():
    assert "release" not in SagaBuilder().step("a", "s", action=("POST", "/x")).build()
    assert "release" not in TransactionBuilder().participant("b", prepare="/p", commit="/c", abort="/a").build()


@pytest.mark.parametrize("release", ["", "a b", "-x", "x" * 65])
def test_builders_refuse_a_bad_release_naming_the_field(release):
    with pytest.raises(InvalidRequest) as info:
        SagaBuilder(release=release).step("a", "s", action=("POST", "/x")).build()
    assert info.value.field == "release"
    with pytest.raises(InvalidRequest) as info:
        TransactionBuilder(release=release).participant("b", prepare="/p", commit="/c", abort="/a").build()
    assert info.value.field == "release"
