"""The node's API: operations, HTTP, gRPC, OpenAPI, metrics and the error tree."""
