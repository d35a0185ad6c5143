"""The gRPC code generated from `proto/coordinator.proto`.

Package `coordinator.v1`, made by `grpc_tools.protoc`. Do not edit the generated modules:
change the proto and run

    .venv/bin/python -m coordinator.client.grpc_gen.regen

then commit the result (tests/client/test_grpc_gen_current.py checks that
it is current).

- `coordinator_pb2`: the messages (`ParticipantCall`, `CallResult`, `Vote`
  of the `Participant` service; the requests, `ObjectReply`, `SubmitReply`
  and `WorkflowEvent` of the `Coordinator` service).
- `coordinator_pb2_grpc`: `ParticipantStub`, `ParticipantServicer`,
  `add_ParticipantServicer_to_server`; `CoordinatorStub`,
  `CoordinatorServicer`, `add_CoordinatorServicer_to_server`.
- `regen`: the generator (needs grpcio-tools, a test dependency).

Nothing is imported here, so `regen` runs even when the committed modules
are broken or out of date.
"""

__all__ = ["coordinator_pb2", "coordinator_pb2_grpc"]
