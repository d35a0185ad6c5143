#!/bin/bash
# Interleaved runs of the commit before (PYTHONPATH=$BEFORE) and this one; every JSON kept.
out=${OUT:-docs/bench/cost-2026-12-04}; out=$(cd "$out" && pwd)
COORDINATOR=$(cd "$(dirname "$0")/../../.." && pwd)/.venv/bin/coordinator
run() { # label pythonpath args...
  local label=$1 pp=$2; shift 2
  if [ -n "$pp" ]; then PYTHONPATH=$pp "$COORDINATOR" bench "$@" --json $out/$label.json > /dev/null 2>&1
  else "$COORDINATOR" bench "$@" --json $out/$label.json > /dev/null 2>&1; fi
  echo "$label rc=$?"
}
cd /tmp  # not the checkout: its coordinator/ folder would shadow $BEFORE
B=${BEFORE:?a directory holding coordinator/, the package of the commit to compare with (BENCHMARKS.md)}
for i in 1 2 3; do
  run saga2-c64-before-$i $B --workload saga2 --concurrency 64 --duration 15
  run saga2-c64-after-$i "" --workload saga2 --concurrency 64 --duration 15
done
for c in 16 64; do for i in 1 2; do
  run twopc3-c$c-before-$i $B --workload twopc3 --concurrency $c --duration 15
  run twopc3-c$c-after-$i "" --workload twopc3 --concurrency $c --duration 15
done; done
for c in 1 16; do
  run saga2-c$c-before $B --workload saga2 --concurrency $c --duration 12
  run saga2-c$c-after "" --workload saga2 --concurrency $c --duration 12
done
for c in 64 200; do for i in 1 2; do
  run registry-c$c-after-$i "" --workload registry --concurrency $c --duration 15 --baseline etcd
done; done
run registry-c64-before $B --workload registry --concurrency 64 --duration 15 --baseline etcd
echo done
