#!/usr/bin/env bash
# Quick single-proxy measurement: ringmux (1 worker, pinned to CPU 1) in
# front of ringmux-origin (CPU 0), loaded by wrk (CPU 0). Prints requests/s,
# latency, and the proxy's CPU time per request from /proc.
#
# usage: bench/core.sh [seconds] [connections] [path]   (path: ringmux-origin's
#        ?size=N / ?delay=MS, e.g. '/?size=1048576')
# The side-by-side comparison with nginx and HAProxy is bench/run.sh; its
# default origin is nginx (bench/run.sh --origin ringmux matches this script).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
path=${3:-/}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
tick=$(getconf CLK_TCK)

cleanup() { kill "${opid:-}" "${ppid_:-}" 2>/dev/null || true; }
trap cleanup EXIT

coproc ORIGIN { exec taskset -c 0 target/release/ringmux-origin --listen 127.0.0.1:0; }
opid=$ORIGIN_PID
read -r _ _ oaddr <&"${ORIGIN[0]}"
coproc PROXY { exec taskset -c 1 target/release/ringmux --listen 127.0.0.1:0 --workers 1 --upstream "$oaddr" 2>/dev/null; }
ppid_=$PROXY_PID
read -r _ _ paddr <&"${PROXY[0]}"

# Warm the upstream pool, then measure.
taskset -c 0 wrk -t1 -c"$conns" -d1s "http://$paddr$path" >/dev/null
cpu0=$(awk '{print $14+$15}' /proc/$ppid_/stat)
out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "http://$paddr$path")
cpu1=$(awk '{print $14+$15}' /proc/$ppid_/stat)
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
echo "$out"
awk -v c0="$cpu0" -v c1="$cpu1" -v t="$tick" -v r="$reqs" 'BEGIN {
  cpu = (c1 - c0) / t;
  printf "proxy CPU: %.2f s for %d requests = %.2f us/request\n", cpu, r, cpu * 1e6 / r }'
echo "proxy RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$ppid_/status)"
