#!/usr/bin/env bash
# Side-by-side benchmark: ringmux vs nginx vs HAProxy, each one worker pinned
# to CPU 1, in front of one origin on CPU 0 (default nginx: one worker, `/` =
# `return 200` with a 20-byte body, /large.bin = 1 MiB file, /slow and /delay5
# via the echo module; --origin ringmux: ringmux-origin ?size= ?delay=). wrk
# and this harness are on CPU 0. In small, pipeline and large a fourth column
# is the relay floor: RELAY_FLOOR_SRC (default ../shared/tools/relay-floor
# next to the repo), built once per run in a temporary copy; skipped, and
# said so, when missing or when it does not build.
#
# usage: bench/run.sh [--origin nginx|ringmux] [--rounds N] [--duration SECS]
#                     [--warmup SECS] [--out DIR | --no-save] [--no-floor]
#                     [--baseline BIN] [scenario...]
#   scenarios: small many pipeline large slow-origin mixed idle   (default: these seven)
#              observability   (opt-in: runs only when named; ~2 min at the defaults)
#              skewed          (opt-in: runs only when named; ~3 min at the defaults)
#              scale           (opt-in: runs only when named; ~1.7 min at the defaults)
#              hosts           (opt-in: runs only when named; ~3 min at the defaults)
#              tls             (opt-in: runs only when named; ~8 min at the defaults)
#              h2              (opt-in: runs only when named; ~3 min at the defaults)
#   defaults:  --origin nginx --rounds 3 --duration 10 (warm-up 2 s, 1 s when duration < 5)
#   pipeline: 64 connections x 8 pipelined; mixed: 64 connections on / and
#   16 on the 200 ms URL at the same time (two wrk), fast-URL p50/p99/max.
#   observability: ringmux alone at small's load, plain vs --admin (GET /metrics
#   and /status once a second) vs --access-log combined: CPU/req ratios to plain.
#   skewed: 64 connections, two equal-weight upstreams answering after 1 and 10 ms
#   (nginx echo_sleep, else two ringmux-origin --delay) behind ringmux --balance wrr
#   and least-conn, HAProxy leastconn, nginx least_conn: req/s, p50/p99, CPU/req
#   and the share of requests the fast upstream answered (counted at the origins).
#   scale: one ringmux --workers 1..N (N = CPUs, at least 2; every CPU allowed,
#   --no-pin) with short scale timers; wrk 16, then 256, then 16 connections on
#   a 1 ms URL, --duration each; /metrics read every 250 ms: req/s, p50/p99,
#   CPU/req and workers at start/end per step, scale-ups/downs, and a chart of
#   workers over time (latest-scale.svg and <stamp>-scale.svg).
#   hosts: small's load with a Host among 1 and among 10,000 host routes through
#   each proxy (ringmux [[route]] host, nginx server_name, HAProxy use_backend
#   with a map file): CPU/req at 10,000 over the same proxy's at 1.
#   tls: each proxy terminating TLS 1.3 with one ECDSA P-256 certificate made
#   for the run: keep-alive wrk over HTTPS (64 connections) CPU/req and req/s;
#   full handshakes (openssl s_time -new) and reconnects (wrk
#   -H "Connection: close", 16 connections: wrk resumes sessions) per CPU-second;
#   memory per idle TLS connection at 10,000 (RSS before and after).
#   h2: HTTP/2 from clients over h2c (prior knowledge) and TLS (ALPN h2):
#   h2load -c 64 -m 10 on `/` (CPU/req, req/s, mean latency) and 2,000 idle
#   HTTP/2 connections (RSS each adds), ringmux beside nginx and HAProxy.
# Results: bench/results/<stamp>.{json,md,svg}; latest.{json,md,svg} only
# when every default scenario ran (scale, warmup: + latest-<name>.svg);
# --out DIR elsewhere, --no-save none.
# RINGMUX_BENCH_NO_BUILD=1 skips the cargo build of ringmux and uses
# target/release/ as it is.
# quick check: bench/run.sh --duration 3 --rounds 1 --no-save small
#
# The orchestration (starting processes, wrk, /proc sampling, the idle client,
# JSON/Markdown/SVG output) is bench/harness.py; this wrapper installs what is
# missing, builds ringmux in release mode and raises the fd limit.
set -euo pipefail
cd "$(dirname "$0")/.."

for a in "$@"; do
  if [[ $a == -h || $a == --help ]]; then sed -n '2,54p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
done

need=()
for tool in wrk nginx haproxy; do
  command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || need+=("$tool")
done
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The nginx origin's delayed URLs (/slow for mixed, /delay5 for slow-origin)
# need the echo module (echo_sleep); without it the harness skips mixed (with
# --origin nginx) and serves slow-origin from ringmux-origin ?delay=.
[[ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ]] || need+=(libnginx-mod-http-echo)
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  sudo_=""; [[ $(id -u) -ne 0 ]] && sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# The packaged nginx/haproxy services are not wanted while measuring (apt
# starts them on install); they would only sit idle, so just say so.
for svc in nginx haproxy; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    echo "note: the system $svc service is running (idle); consider 'systemctl stop $svc'" >&2
  fi
done

if [[ ${RINGMUX_BENCH_NO_BUILD:-} == 1 ]]; then
  echo "RINGMUX_BENCH_NO_BUILD=1: using target/release/ as it is" >&2
else
  echo "building ringmux (release)..." >&2
  cargo build --release -q --bins
fi

# File descriptors: 2,000 connections through a proxy (twice that in fds) and
# 10,000 idle ones. Ask for 65536; fall back to the hard limit if that is all
# we may have (containers often cap it), and tell the harness.
want=65536
if ! ulimit -n "$want" 2>/dev/null; then
  ulimit -Hn "$want" 2>/dev/null || true
  ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
got=$(ulimit -n)
if [[ $got != unlimited && $got -lt $want ]]; then
  echo "warning: open-file limit is $got (hard limit), not $want; the idle scenario needs ~10,100 per process" >&2
fi

# The harness stays on CPU 0 with wrk and the origin (it also builds the
# relay floor there, before measuring); it kills everything it started on
# exit (normal end, error, Ctrl-C, SIGTERM).
exec taskset -c 0 python3 bench/harness.py "$@"
