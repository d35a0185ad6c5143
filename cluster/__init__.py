"""The cluster: the node core and stores, the executor, the API, the launcher, ``coordinator bench``, the demo and the CLI."""
