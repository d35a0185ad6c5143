"""The leader's executor: reconcilers, the saga and 2PC drivers, participant callers and breakers."""
