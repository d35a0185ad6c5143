"""The node's last minutes (cluster/core/recent.py): windows between samples,
rates, and the commit p99 read from histogram buckets."""

import math

from coordinator.cluster.core.recent import RecentStats, Sample, quantile_bound

BOUNDS = (0.001, 0.01, 0.1)


def sample(at_s, commands=0, finished=0, counts=(0, 0, 0), total=None, calls=0):
    cumulative, running = [], 0
    for bound, n in zip(BOUNDS, counts, strict=True):
        running += n
        cumulative.append((bound, running))
    return Sample(at_s, commands, finished, tuple(cumulative), running if total is None else total, calls)


def test_the_p99_is_the_bound_of_the_bucket_holding_it_within_the_window_only():
    before = sample(0, counts=(1000, 0, 0))  # earlier commits are not this window's
    after = sample(5, counts=(1000 + 97, 1, 2))
    assert quantile_bound(0.99, before, after) == 0.1  # 99 % of 100 reach only in the last bucket
    assert quantile_bound(0.5, before, after) == 0.001
    assert quantile_bound(0.99, before, sample(5, counts=(1000, 0, 0))) is None  # no commit in the window
    assert quantile_bound(0.99, before, sample(5, counts=(1000, 0, 0), total=1001)) == math.inf  # above the last bound


def test_windows_are_rates_between_samples_and_only_the_last_ones_are_kept():
    recent = RecentStats(size=2, interval_s=5)
    recent.add(sample(100.0, commands=10, finished=1))
    assert recent.view() == []  # one sample: no window yet
    recent.add(sample(105.0, commands=60, finished=11, counts=(5, 0, 0), calls=3))
    (window,) = recent.view()
    assert window["seconds"] == 5 and window["commands_per_s"] == 10 and window["workflows_finished_per_s"] == 2
    assert window["commit_p99_ms"] == 1.0 and window["commits"] == 5 and window["calls_in_flight"] == 3
    assert window["at"].endswith("Z")
    recent.add(sample(110.0, commands=60, finished=11, counts=(5, 0, 0)))
    recent.add(sample(115.0, commands=70, finished=11, counts=(5, 0, 0)))
    assert [w["commands_per_s"] for w in recent.view()] == [0, 2]  # the oldest window went
    assert recent.view()[0]["commit_p99_ms"] is None
    recent.add(sample(115.0))  # a clock that did not move: no window
    assert len(recent.view()) == 2
