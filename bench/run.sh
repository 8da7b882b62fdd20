#!/usr/bin/env bash
# Side-by-side benchmark: ringmux vs nginx vs HAProxy, each one worker pinned
# to CPU 1, in front of ringmux-origin; wrk, the origin and this harness on
# CPU 0. Results go to bench/results/ (latest.json, latest.md, latest.svg and
# timestamped copies).
#
# usage: bench/run.sh [--rounds N] [--duration SECS] [--warmup SECS] [scenario...]
#   scenarios: small many pipeline large slow-origin idle   (default: all)
#   defaults:  --rounds 3 --duration 10 (warm-up 2 s, 1 s when duration < 5)
# quick check: bench/run.sh --duration 3 --rounds 1 small
#
# The orchestration (starting processes, wrk, /proc sampling, the idle client,
# JSON/Markdown/SVG output) is bench/harness.py; this wrapper installs what is
# missing, builds ringmux in release mode and raises the fd limit.
set -euo pipefail
cd "$(dirname "$0")/.."

for a in "$@"; do
  if [[ $a == -h || $a == --help ]]; then sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
done

need=()
for tool in wrk nginx haproxy; do
  command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || need+=("$tool")
done
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The slow-origin scenario's origin is nginx with the echo module
# (echo_sleep); without it the harness falls back to ringmux-origin ?delay=.
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

echo "building ringmux (release)..." >&2
cargo build --release -q --bins

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

# The harness stays on CPU 0 with wrk and the origin; it kills everything it
# started on exit (normal end, error, Ctrl-C, SIGTERM).
exec taskset -c 0 python3 bench/harness.py "$@"
