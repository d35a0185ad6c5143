"""The stores of the replicated state: the service registry, sagas and 2PC transactions."""
