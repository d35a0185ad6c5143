"""Chaos: fault injection, workloads and checkers (not built yet)."""
__all__: list[str] = []
