"""``coordinator bench``: workloads, baselines, statistics, profiles and charts."""
