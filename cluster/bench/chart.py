"""Chart ``coordinator bench --json`` results: throughput and p99 latency
against concurrency, one line per workload (and one per baseline measured
in those runs).

    python -m coordinator.cluster.bench.chart results/*.json -o docs/bench.png

Needs matplotlib (``pip install -e '.[bench]'``). Failover results are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

__all__ = ["main", "series"]

RESULTS_MAX = 10_000


def series(results: list[dict]) -> dict[str, list[tuple[int, float, float]]]:
    """{label: [(concurrency, throughput/s, p99 ms), ...] by concurrency}: a
    label per workload, one per baseline (``baseline pysyncobj writes``) and,
    beside the PySyncObj baseline, our committed commands/s (``saga2 commands``,
    or ``saga2 raft entries`` when the nodes export no command counter). Several results
    at one concurrency (a baseline measured beside several workloads) are averaged."""
    points: dict[str, dict[int, list[tuple[float, float]]]] = {}

    def add(label: str, concurrency: int, throughput: float, p99_ms: float) -> None:
        points.setdefault(label, {}).setdefault(concurrency, []).append((throughput, p99_ms))

    for result in results:
        if result.get("workload") == "failover" or "throughput_per_s" not in result:
            continue
        concurrency = int(result["concurrency"])
        add(result["workload"], concurrency, result["throughput_per_s"], result["latency_ms"]["p99"])
        baseline = result.get("baseline")
        if baseline:
            add(
                f"baseline {baseline['name']} {baseline.get('unit', 'ops')}",
                concurrency,
                baseline["throughput_per_s"],
                baseline["latency_ms"]["p99"],
            )
        commands_per_s, what = result.get("commands_per_s"), "commands"
        if commands_per_s is None:
            commands_per_s, what = result.get("log_entries_per_s"), "raft entries"
        if commands_per_s is not None and baseline and baseline["name"] == "pysyncobj":
            add(f"{result['workload']} {what}", concurrency, commands_per_s, float("nan"))

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 1)

    return {
        label: [(c, mean([t for t, _ in by_c[c]]), mean([p for _, p in by_c[c]])) for c in sorted(by_c)]
        for label, by_c in sorted(points.items())
    }


def plot(lines: dict[str, list[tuple[int, float, float]]], output: Path, title: str) -> None:
    # Imported here, not at the top: matplotlib is optional (the bench extra;
    # main() says how to install it), and pyplot must load after the Agg
    # backend is chosen, so that no display is needed.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput_axis, latency_axis) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (label, points) in enumerate(lines.items()):
        concurrency = [p[0] for p in points]
        rate_only = label.endswith((" commands", " raft entries"))
        style = ":" if rate_only else "--" if label.startswith("baseline") else "-"
        color = colors[number % len(colors)]
        throughput_axis.plot(concurrency, [p[1] for p in points], style, marker="o", label=label, color=color)
        if not rate_only:
            latency_axis.plot(concurrency, [p[2] for p in points], style, marker="o", label=label, color=color)
    for axis, ylabel in ((throughput_axis, "throughput per second"), (latency_axis, "p99 latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency (closed-loop clients)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    latency_axis.set_yscale("log")
    throughput_axis.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coordinator.cluster.bench.chart", description=__doc__.splitlines()[0]
    )
    parser.add_argument("results", nargs="+", help="JSON files written by coordinator bench --json")
    parser.add_argument("-o", "--output", default="docs/bench.png")
    parser.add_argument("--title", default="coordinator bench: three nodes on one 2-core machine")
    args = parser.parse_args(argv)
    if len(args.results) > RESULTS_MAX:
        print(f"chart: at most {RESULTS_MAX} result files", file=sys.stderr)
        return 2
    if importlib.util.find_spec("matplotlib") is None:
        print(
            "chart: matplotlib is not installed: .venv/bin/pip install matplotlib (or pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return 1
    results = []
    for name in args.results:
        try:
            results.append(json.loads(Path(name).read_text()))
        except (OSError, ValueError) as exc:
            print(f"chart: {name}: {exc}", file=sys.stderr)
            return 1
    lines = series(results)
    if not lines:
        print("chart: no throughput results to chart", file=sys.stderr)
        return 1
    plot(lines, Path(args.output), args.title)
    print(f"wrote {args.output} ({', '.join(lines)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
