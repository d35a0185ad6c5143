"""The transition worker: the data plane that makes participant calls leased to it by the leader."""
