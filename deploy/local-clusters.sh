#!/usr/bin/env bash
# Two clusters on one machine: a controller without embedded worker, and two workers each for
# dc-a and dc-b, with a local storage location per cluster. Ctrl-C stops everything.
# Usage: deploy/local-clusters.sh [DIR]   (binaries from target/debug unless FERRY_BIN is set)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRY_BIN:-$here/target/debug}
dir=${1:-$(mktemp -d -t ferry-clusters-XXXX)}
port=${FERRY_PORT:-7420}
url=http://127.0.0.1:$port
mkdir -p "$dir"
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
"$bin/ferry-controller" --listen 127.0.0.1:$port --data-dir "$dir/controller" --no-embedded-worker \
  >"$dir/controller.log" 2>&1 &
for _ in $(seq 1 50); do "$bin/ferry" --controller $url cluster list >/dev/null 2>&1 && break; sleep 0.2; done
for c in dc-a dc-b; do
  for n in 1 2; do
    "$bin/ferry-worker" --controller $url --cluster $c --node $c-host-$n --work-dir "$dir/work-$c-$n" \
      >"$dir/worker-$c-$n.log" 2>&1 &
  done
  "$bin/ferry" --controller $url storage add $c-disk --local "$dir/storage-$c" --cluster $c
done
sleep 1
"$bin/ferry" --controller $url worker list
echo "controller at $url, logs in $dir; Ctrl-C to stop"
wait
