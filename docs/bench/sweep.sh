#!/usr/bin/env bash
# The sweep quoted in BENCHMARKS.md, one run after the other, into docs/bench/.
# Run from the repository root in the venv, on a machine doing nothing else.
set -euo pipefail
out=${1:-docs/bench}
bench() { coordinator bench --duration 15 --warmup 3 "$@"; }
for c in 1 4 16 64; do bench --workload saga2 --concurrency $c --baseline pysyncobj --json "$out/saga2-c$c.json"; done
for c in 1 16 64; do bench --workload twopc3 --concurrency $c --json "$out/twopc3-c$c.json"; done
bench --workload saga4 --concurrency 16 --json "$out/saga4-c16.json"
for c in 16 64 200; do bench --workload registry --concurrency $c --baseline etcd --json "$out/registry-c$c.json"; done
coordinator bench --workload failover --runs 20 --json "$out/failover-r20.json"
bench --workload saga2 --concurrency 32 --profile "$out/profile-saga2-c32.folded" --json "$out/saga2-c32-profile.json"
# Memory: past 100,000 completed sagas (about 330/s sustained here).
coordinator bench --workload saga2 --concurrency 64 --duration 400 --warmup 3 --json "$out/saga2-c64-memory.json"
python -m coordinator.cluster.bench.chart "$out"/saga2-c{1,4,16,64}.json "$out"/twopc3-c*.json \
    "$out"/registry-c*.json "$out"/saga4-c16.json -o docs/bench.png
