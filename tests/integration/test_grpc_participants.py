"""gRPC participants on a real cluster: a saga step and a 2PC participant
reached through the Participant service of the project's proto."""

import pytest

from coordinator.chaos.orders import order_saga, participants
from coordinator.client import Coordinator
from coordinator.client.participant import BusinessFailure, MemoryStore, ParticipantServicer, serve_participant

pytestmark = pytest.mark.integration


class Warehouse(ParticipantServicer):
    def __init__(self):
        super().__init__(MemoryStore())
        self.calls = []

    async def execute(self, path, body):
        self.calls.append(("execute", path, body))
        if body.get("qty", 0) > 10:
            raise BusinessFailure("not enough stock")
        return {"pick_id": f"pick-{len(self.calls)}"}

    async def compensate(self, path, body):
        self.calls.append(("compensate", path, body))
        return {"undone": True}

    def prepare(self, tx_id, body):
        self.calls.append(("prepare", tx_id, body))
        return body.get("qty", 0) <= 10

    def commit(self, tx_id):
        self.calls.append(("commit", tx_id))

    def abort(self, tx_id):
        self.calls.append(("abort", tx_id))


async def test_a_grpc_participant_runs_saga_steps_and_2pc_phases(cluster):
    warehouse = Warehouse()
    server, port = await serve_participant(warehouse)
    try:
        async with participants(cluster) as services, Coordinator([cluster.url(i) for i in cluster.ids]) as c:
            service = await c.put_service("warehouse", grpc=f"127.0.0.1:{port}")
            assert service.grpc == f"127.0.0.1:{port}" and service.url is None
            saga = order_saga("grpc-1")
            saga["steps"].insert(
                1,
                {
                    "name": "pick",
                    "service": "warehouse",
                    "action": {
                        "method": "POST",
                        "path": "/picks",
                        "body": {"qty": 3, "order": "${steps.create-order.output.id}"},
                    },
                    "compensation": {
                        "method": "POST",
                        "path": "/picks/cancel",
                        "body": {"pick": "${steps.pick.output.pick_id}"},
                    },
                },
            )
            await c.submit_saga(saga)
            done = await c.wait_saga("grpc-1", timeout=20)
            assert done.state == "completed" and done.step("pick")["output"] == {"pick_id": "pick-1"}

            failing = order_saga("grpc-2")
            failing["steps"].insert(
                2,
                {
                    "name": "pick",
                    "service": "warehouse",
                    "action": {"method": "POST", "path": "/picks", "body": {"qty": 50}},
                },
            )
            await c.submit_saga(failing)
            done = await c.wait_saga("grpc-2", timeout=20)
            assert done.state == "compensated" and done.step("pick")["state"] == "failed"
            assert "not enough stock" in done.step("pick")["error"]

            tx = {
                "id": "grpc-tx",
                "participants": [
                    {
                        "service": "warehouse",
                        "prepare": {"path": "/tx/prepare", "body": {"qty": 2}},
                        "commit": {"path": "/tx/commit"},
                        "abort": {"path": "/tx/abort"},
                    },
                    {
                        "service": "payments",
                        "prepare": {"path": "/prepare"},
                        "commit": {"path": "/commit"},
                        "abort": {"path": "/abort"},
                    },
                ],
            }
            await c.submit_transaction(tx)
            result = await c.wait_transaction("grpc-tx", timeout=20)
            assert (result.state, result.decision) == ("committed", "commit")
            assert ("prepare", "grpc-tx", {"qty": 2}) in warehouse.calls and ("commit", "grpc-tx") in warehouse.calls
            assert [k for k in services["payments"].service.effects if k.idempotency_key.startswith("grpc-tx/")]
    finally:
        await server.stop(None)
