"""Starting nodes: the local cluster of real processes, the supervisor and the event loop."""
