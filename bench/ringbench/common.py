"""Paths, the binaries under test, the constants every module shares, log().

RINGMUX, ORIGIN and RELAY are rebound by cli.main() (run copies of the
binaries, the relay floor once built): read them as common.RINGMUX at the
time of use, never import the names themselves.
"""
import os
import sys

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
ROOT = os.path.dirname(BENCH)
RINGMUX = os.path.join(ROOT, "target/release/ringmux")
ORIGIN = os.path.join(ROOT, "target/release/ringmux-origin")
RESULTS = os.path.join(BENCH, "results")
LUA_REPORT = os.path.join(BENCH, "wrk/report.lua")
LUA_PIPE = os.path.join(BENCH, "wrk/pipeline.lua")
RELAY = None  # the relay floor's binary, once built (proxies.build_relay)
BASELINE = None  # --baseline: another ringmux binary, run as "ringmux+base"
PROXIES = ["ringmux", "nginx", "haproxy"]
FLOOR = "relay"  # the fourth column, in the scenarios with floor=True
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BODY20 = "abcdefghijklmnopqrst"  # ringmux-origin --size 20: PATTERN[:20] (src/origin.rs)
PATTERN = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
LARGE = 1 << 20
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"


def log(*a):
    print(*a, file=sys.stderr, flush=True)
