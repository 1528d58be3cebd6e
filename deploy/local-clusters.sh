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
# The first start writes the installation's admin token; every call below uses it.
export FERRY_TOKEN_FILE="$dir/controller/admin.token"
for _ in $(seq 1 50); do "$bin/ferry" --controller $url cluster list >/dev/null 2>&1 && break; sleep 0.2; done
for c in dc-a dc-b; do
  # One join token per cluster; the workers may touch volumes under $dir/volumes only.
  "$bin/ferry" --controller $url token create join-$c --worker --cluster $c -o json \
    | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' >"$dir/join-$c.token"
  mkdir -p "$dir/volumes"
  for n in 1 2; do
    "$bin/ferry-worker" --controller $url --cluster $c --node $c-host-$n --work-dir "$dir/work-$c-$n" \
      --token-file "$dir/join-$c.token" --allow-path "$dir/volumes" \
      >"$dir/worker-$c-$n.log" 2>&1 &
  done
  "$bin/ferry" --controller $url storage add $c-disk --local "$dir/storage-$c" --cluster $c
done
sleep 1
"$bin/ferry" --controller $url worker list
echo "controller at $url, logs in $dir; export FERRY_TOKEN_FILE=$FERRY_TOKEN_FILE; Ctrl-C to stop"
wait
