"""The node core: its config, replicated state, limits and the policy of what it may call."""
