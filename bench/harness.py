#!/usr/bin/env python3
"""Side-by-side benchmark harness for ringmux, nginx and HAProxy.

Started by bench/run.sh (which installs tools, builds ringmux, raises the fd
limit and pins this process to CPU 0). Standard library only.

Layout of a run:
  * one origin pinned to CPU 0, shared by all runs: --origin nginx (default:
    one nginx worker; `/` = `return 200` with the 20-byte body, /large.bin =
    a 1 MiB static file, /slow, /delay5 and /delay1 = echo_sleep 0.2 s / 5 ms
    / 1 ms with the echo module) or --origin ringmux (ringmux-origin --size
    20; ?size= and ?delay= select the body size and the delay). Scenario
    paths depend on it;
  * the relay floor (RELAY_FLOOR_SRC, default <repo>/../shared/tools/relay-floor:
    a 1:1 io_uring byte relay, no HTTP) is built once per run in a temporary
    copy and measured as a fourth column in small, pipeline and large;
  * for every (scenario, round, proxy) a FRESH proxy process tree pinned to
    CPU 1 (one worker / thread), a warm-up, then the measured wrk run(s) on
    CPU 0; the proxy is stopped afterwards (so its VmHWM is the peak of that
    run); `mixed` runs two wrk processes at once (fast URL and 200 ms URL);
  * rounds are interleaved: ringmux nginx haproxy [relay] ringmux nginx ...;
  * medians over rounds, ratios ringmux/nginx, ringmux/haproxy, ringmux/floor;
  * `observability` (opt-in: run only when named) is ringmux against itself
    at small's load: plain, ringmux+admin (the admin address scraped once a
    second, /metrics and /status, during the run) and ringmux+log (combined
    access log to a file; its lines are counted against wrk's requests);
    ratios variant/plain CPU per request against targets;
  * `skewed` (opt-in) has two origins of its own on CPU 0 (SkewedOrigin: one
    nginx with the echo module, two server blocks answering after 1 ms and
    10 ms, or else two ringmux-origin --delay 1 / --delay 10), at equal
    weight behind ringmux --balance wrr, ringmux --balance least-conn,
    HAProxy `balance leastconn` and nginx `least_conn`; the origins count
    the requests each answered (access-log lines, or GET /stats), which
    gives the share that went to the fast one. Markdown and JSON only;
  * `scale` (opt-in) is one ringmux with elastic workers (--workers 1..N,
    N = the machine's CPUs, at least 2; allowed every CPU, --no-pin; short
    scale timers), wrk at 16, 256, then 16 connections on the origin's 1 ms
    URL as three consecutive runs, while a thread reads GET /metrics every
    250 ms (WorkerSampler); per step req/s, latency, CPU/req, workers at its
    start and end, scale-ups/downs; its chart of workers over time is
    <stamp>-scale.svg and latest-scale.svg (svg_scale);
  * bench/results/<stamp>.{json,md,svg}, and latest.{json,md,svg} when
    every default scenario ran (--out DIR writes them elsewhere, --no-save
    only prints the Markdown).
"""
import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RINGMUX = os.path.join(ROOT, "target/release/ringmux")
ORIGIN = os.path.join(ROOT, "target/release/ringmux-origin")
RESULTS = os.path.join(BENCH, "results")
LUA_REPORT = os.path.join(BENCH, "wrk/report.lua")
LUA_PIPE = os.path.join(BENCH, "wrk/pipeline.lua")
RELAY = None  # the relay floor's binary, once built (build_relay)
PROXIES = ["ringmux", "nginx", "haproxy"]
FLOOR = "relay"  # the fourth column, in the scenarios with floor=True
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BODY20 = "abcdefghijklmnopqrst"  # ringmux-origin --size 20: PATTERN[:20] (src/origin.rs)
PATTERN = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
LARGE = 1 << 20

# A path is either one string (the same on both origins) or a dict keyed by
# the origin kind: "nginx" (start_nginx_origin) or "ringmux" (ringmux-origin).
SCENARIOS = {
    "small": dict(conns=64, path="/", depth=1, floor=True,
                  desc="64 keep-alive connections, 20-byte bodies"),
    "many": dict(conns=2000, path="/", depth=1,
                 desc="2,000 keep-alive connections, 20-byte bodies"),
    "pipeline": dict(conns=64, path="/", depth=8, floor=True,
                     desc="64 connections, 8 pipelined requests each"),
    "large": dict(conns=16, path={"nginx": "/large.bin", "ringmux": "/?size=1048576"},
                  depth=1, floor=True, desc="16 connections, 1 MiB bodies"),
    # Served by nginx with the echo module where it is installed (the main
    # origin with --origin nginx, a second one on CPU 0 with --origin
    # ringmux); otherwise by ringmux-origin with ?delay=5.
    "slow-origin": dict(conns=64, path={"nginx": "/delay5", "ringmux": "/?delay=5"}, depth=8,
                        delay_ms=5, echo_origin=True,
                        desc="origin +5 ms per response, 64 connections x 8 pipelined"),
    # Two wrk processes at once through the same proxy: `conns` on the fast
    # `path` and `slow_conns` on `slow_path` (the origin answers after
    # slow_ms). A proxy that queues fast requests behind slow ones shows a
    # fast-URL p99 near slow_ms; a good one stays near small's p99. With the
    # nginx origin this needs the echo module (skipped without it).
    "mixed": dict(conns=64, path="/", depth=1, slow_conns=16,
                  slow_path={"nginx": "/slow", "ringmux": "/?delay=200"}, slow_ms=200, mixed=True,
                  desc="64 connections on a fast URL while 16 others wait 200 ms each on a slow one"),
    "idle": dict(conns=10000, idle=True,
                 desc="10,000 idle keep-alive connections (one request each): RSS growth"),
}
# ringmux against itself, not against nginx/HAProxy: the CPU per request
# that the status module (scraped as Prometheus would, plus /status as a
# dashboard would) and the access log add, at small's load. Opt-in: three
# variants x rounds x (duration + warm-up) is about 2 min at the defaults,
# more than a default run should grow by for a figure about ringmux alone.
SCENARIOS["observability"] = dict(
    {k: SCENARIOS["small"][k] for k in ("conns", "path", "depth")},
    variants=["ringmux", "ringmux+admin", "ringmux+log"],
    targets={"ringmux+admin": 1.03, "ringmux+log": 1.10},  # CPU/req ÷ plain ringmux
    opt_in=True,
    desc="small's load through ringmux alone: plain, --admin scraped once a second, "
         "--access-log combined")
# Two upstreams of equal weight, one 10x slower than the other (SkewedOrigin:
# nginx + echo_sleep on two ports, or two ringmux-origin --delay), behind
# ringmux --balance wrr, ringmux --balance least-conn, HAProxy `balance
# leastconn` and nginx `least_conn`. The origins count the requests each
# answered, so the share that went to the fast one is measured where it
# lands. wrr should give 50%; a least-connections policy that keeps the
# in-flight counts equal gives slow/(fast+slow) = 10/11 of the requests to the
# fast upstream, and about 3x wrr's req/s. Opt-in: four columns x rounds x
# (duration + warm-up + settling) is about 3 min at the defaults.
SCENARIOS["skewed"] = dict(
    conns=64, path="/", depth=1, skewed=True, delays_ms=(1, 10),
    proxies=["ringmux+wrr", "ringmux+least-conn", "haproxy", "nginx"],
    peer_balance="least-conn",  # nginx `least_conn`, HAProxy `balance leastconn`
    opt_in=True,
    desc="64 connections, two equal-weight upstreams answering after 1 ms and 10 ms: "
         "share sent to the fast one")
# ringmux's elastic workers (--workers 1..N, N = the machine's CPUs, at
# least 2): one ringmux process, three consecutive wrk runs of `duration`
# each at 16, 256 and 16 connections, while a thread of the harness reads
# GET /metrics on the admin address every 250 ms (running workers, each
# worker's busy fraction, the scale-up/down counters). The process may use
# every CPU (taskset -c 0-(N-1)); see ELASTIC_PIN for --no-pin.
# The path answers after 1 ms (nginx echo_sleep, or ringmux-origin
# ?delay=1) so that the offered load follows the connections: 16 ask for
# at most 16k req/s, 256 for more than one worker serves. On `/` one worker
# is saturated at 16 connections already and shows the same busy fraction
# at 16 and at 256 (0.44 at both with CPU 1 shared, 0.86 at both with CPU 1
# to itself: busy is CPU time over wall time, and wrk and the origin hold
# CPU 0), so no mark separates the steps there. Measured on the 2-CPU
# machine (one worker, /delay1): 0.06-0.08 busy at 16 connections; at 256,
# 0.34 when it shared a CPU (pinned to CPU 0 with wrk and the origin, or
# unpinned with another build on CPU 1) and 0.66-0.80 with CPU 1 free. So
# high 0.25: one worker at 256 stays above it in every case, at 16 far
# below; low 0.12: at 16 each of two workers stays below it (0.06-0.08),
# at 256 the busiest is far above (a new worker only gets connections
# opened after it started: wrk's 256 stay on worker 0). The timers are short
# (1 s up, 3 s down) so that a run is quick. Opt-in: 3 x duration + warm-up
# per round, and a figure about ringmux alone.
SCENARIOS["scale"] = dict(
    steps=(16, 256, 16), path={"nginx": "/delay1", "ringmux": "/?delay=1"}, depth=1,
    echo_origin=True, scale=True, delay_ms=1,
    scale_high=0.25, scale_low=0.12, scale_up_after_ms=1000, scale_down_after_ms=3000,
    sample_ms=250, proxies=["ringmux+elastic"], opt_in=True,
    desc="ringmux --workers 1..N: 16, then 256, then 16 connections on a 1 ms URL; "
         "workers over time")
# An upstream added under load, against HAProxy's slowstart on the same
# origins (WarmupOrigins: two ringmux-origin --delay 1 on CPU 0, started
# afresh for every run). The proxy starts with upstream A only; wrk runs
# four consecutive phases of 64 connections through the same proxy process
# (one histogram each, so latency over time): `before`; `cold`, during
# which B is started with --ready-after (it accepts at once, /ready answers
# 503 for ready_after_ms) and 0.1 s into which B is added: ringmux rewrites
# its --config file (B with warmup_check, warm_conns, slow_start) and gets
# SIGHUP; HAProxy has B declared disabled and gets its address and an
# enable on its stats socket (see Proxy._add_haproxy); `ramp`, from B's readiness to the end of its slow
# start (+1 s: the first passing check, both poll every check_ms, and the
# gaps between wrk runs); `after`. before/after last --duration / 3 each
# (at least 2 s), cold and ramp are set by ready_after_ms and slow_start_s
# (see warmup_phases). The origins' GET /stats at each phase boundary give
# the requests each answered in each phase (including the proxies'
# readiness checks, every check_ms on B, and HAProxy's on A). The origin
# delay (1 ms) makes the offered load follow the connections, as in scale.
# Opt-in: each run is about 2 x --duration / 3 + 8 s plus the warm-up.
SCENARIOS["warmup"] = dict(
    conns=64, path="/", depth=1, warmup=True, delay_ms=1, ready_after_ms=2000,
    ready_path="/ready", slow_start_s=5, warm_conns=4, check_ms=200, reload_after_s=0.1,
    proxies=["ringmux+reload", "haproxy+slowstart"], opt_in=True,
    desc="64 connections; upstream B added under load (readiness check, 5 s slow start): "
         "p50/p99/max before, while B is cold, during its ramp, after")
# Light and moderate load, where a worker often runs out of work and
# sleeps: one and eight connections on small's URL, ringmux with and
# without --busy-poll 20 beside nginx and HAProxy. Each sleep costs a
# wake-up when the next packet comes (on loopback and in a VM, tens of
# microseconds), so latency here is mostly wake-ups. Opt-in: four columns
# x two scenarios x rounds x (duration + warm-up).
for _name, _conns in (("light", 1), ("moderate", 8)):
    SCENARIOS[_name] = dict(
        conns=_conns, path="/", depth=1, opt_in=True,
        proxies=["ringmux", "ringmux+poll", "nginx", "haproxy"],
        desc=f"{_conns} connection(s) on a fast URL: ringmux sleeping and with --busy-poll 20")
ORDER = list(SCENARIOS)
DEFAULT = [s for s in ORDER if not SCENARIOS[s].get("opt_in")]
ELASTIC_CPUS = max(2, os.cpu_count() or 1)  # N: --workers 1..N
# Whether the elastic ringmux pins its workers itself (worker i to the i-th
# CPU it may use) or runs them unpinned (--no-pin: the kernel places them).
# Pinned, the one worker that runs most of the time is on CPU 0 with wrk and
# the origin (CPU 1 only ever gets worker 1): at 256 connections it showed
# 0.34 busy and 64k req/s, where unpinned the kernel moves it to the free
# CPU 1: 0.75 busy and 88k req/s (4 s smokes, /delay1). Unpinned measures
# what the scaler sees on a proxy that has a CPU to itself.
ELASTIC_PIN = False
RINGMUX_POLICIES = ("wrr", "least-conn", "url-hash", "random2")  # --balance


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

STARTED = []  # Popen objects, each the leader of its own process group


def spawn(cmd, out, err):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                         start_new_session=True, close_fds=True)
    STARTED.append(p)
    return p


def stop(p, grace=3.0):
    """Stop a process we started, and its process group (nginx's worker)."""
    if p is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # nginx's worker can outlive the master by a moment: reap the group.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        stop(p, grace=1.0)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"


def resolve(path, kind):
    """A scenario path for an origin kind ("nginx" or "ringmux")."""
    return path[kind] if isinstance(path, dict) else path


def start_nginx_origin(tmp, fd_limit, echo):
    """The nginx origin on CPU 0: one worker, no access log, keep-alive
    without practical limits (a proxy's pooled upstream connections must
    never be closed by the origin during a run).
      /          return 200 with the 20-byte body (a static file would cost an
                 open-file-cache lookup and a sendfile per response; `return`
                 writes the body from memory with the headers)
      /large.bin a 1 MiB static file (sendfile, cached open), the same bytes
                 as ringmux-origin ?size=1048576
      /slow      echo_sleep 0.2, then the 20-byte body (echo module)
      /delay5    echo_sleep 0.005, then the 20-byte body (echo module)
      /delay1    echo_sleep 0.001, then the 20-byte body (echo module; scale)
    A delayed response costs nginx's event loop a timer, where ringmux-origin
    spends a thread wake-up and a sleep (with 512 delayed requests in flight
    ringmux-origin and wrk saturate CPU 0 at about 40k responses/s). The echo
    module answers chunked; `return` and the file carry Content-Length.
    Returns (process, address, None) or (None, None, reason)."""
    d = tempfile.mkdtemp(prefix="origin-nginx-", dir=tmp)
    os.chmod(d, 0o755)
    www = os.path.join(d, "www")
    os.makedirs(www)
    os.chmod(www, 0o755)  # the worker may run as nobody
    large = (PATTERN * (LARGE // len(PATTERN) + 1))[:LARGE]
    with open(os.path.join(www, "large.bin"), "wb") as f:
        f.write(large)
    os.chmod(os.path.join(www, "large.bin"), 0o644)
    for sub in ("cb", "px", "fc", "uw", "sc"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(os.path.join(d, sub), 0o777)
    port = free_port()
    nofile = min(65536, fd_limit)
    slow = f"""
        location = /slow {{
            echo_sleep 0.200;
            echo -n "{BODY20}";
        }}
        location = /delay5 {{
            echo_sleep 0.005;
            echo -n "{BODY20}";
        }}
        location = /delay1 {{
            echo_sleep 0.001;
            echo -n "{BODY20}";
        }}""" if echo else ""
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""{"load_module " + ECHO_MODULE + ";" if echo else ""}
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log crit;
worker_rlimit_nofile {nofile};
events {{ worker_connections {max(1024, nofile - 64)}; }}
http {{
    access_log off;
    server_tokens off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=3600s;
    open_file_cache_valid 3600s;
    keepalive_timeout 3600s;
    keepalive_requests 1000000000;
    client_body_temp_path {d}/cb;
    proxy_temp_path {d}/px;
    fastcgi_temp_path {d}/fc;
    uwsgi_temp_path {d}/uw;
    scgi_temp_path {d}/sc;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location = / {{
            return 200 "{BODY20}";
        }}
        location = /large.bin {{
        }}{slow}
        location / {{
            return 200 "{BODY20}";
        }}
    }}
}}
""")
    with open(os.path.join(d, "out"), "w") as out, open(os.path.join(d, "err"), "w") as err:
        p = spawn(["taskset", "-c", "0", "nginx", "-c", conf, "-p", d + "/",
                   "-e", f"{d}/error.log"], out, err)
    addr = f"127.0.0.1:{port}"
    why = None
    if not wait_port(port, p):
        why = "nginx origin did not start"
    else:
        small = BODY20.encode()
        checks = [("/", small), ("/large.bin", large)]
        if echo:
            checks += [("/delay5", small), ("/delay1", small), ("/slow", small)]
        for path, want in checks:
            try:
                status, body = http_get(addr, path)
                if status != 200 or body != want:
                    why = (f"nginx origin: GET {path} answered {status} with {len(body)} bytes "
                           f"{body[:40]!r}, not {len(want)} bytes")
            except (OSError, ValueError) as e:
                why = f"nginx origin: GET {path} failed: {e!r}"
            if why:
                break
    if why:
        logs = []
        for name in ("err", "error.log"):
            try:
                with open(os.path.join(d, name)) as f:
                    logs.append(f.read().strip()[-300:])
            except OSError:
                pass
        stop(p)
        return None, None, why + ("; " + " | ".join(t for t in logs if t) if any(logs) else "")
    p.logdir = d
    return p, addr, None


def start_ringmux_origin(tmp):
    path = os.path.join(tmp, "origin.out")
    with open(path, "w") as out, open(os.path.join(tmp, "origin.err"), "w") as err:
        p = spawn(["taskset", "-c", "0", ORIGIN, "--listen", "127.0.0.1:0",
                   "--size", str(len(BODY20))], out, err)
    addr = wait_line(path, "listening on", p)
    if not addr:
        stop(p)
        return None, None, "ringmux-origin did not start"
    return p, addr, None


class Origins:
    """The origins on CPU 0 ("nginx", "ringmux"), each started on first use
    and restarted when it has died. The echo module (for /slow and /delay5)
    is used when installed and nginx loads it."""

    def __init__(self, tmp, fd_limit):
        self.tmp, self.fd_limit = tmp, fd_limit
        self.procs = {}  # kind -> (Popen, addr)
        self.restarts = 0
        self.echo_reason = None if os.path.exists(ECHO_MODULE) else \
            f"{ECHO_MODULE} missing (Debian: libnginx-mod-http-echo)"
        self.echo = self.echo_reason is None

    def _start(self, kind):
        if kind == "ringmux":
            if not os.access(ORIGIN, os.X_OK):
                sys.exit(f"missing {ORIGIN}: run bench/run.sh (it builds with cargo build --release)")
            p, addr, why = start_ringmux_origin(self.tmp)
        else:
            p, addr, why = start_nginx_origin(self.tmp, self.fd_limit, self.echo)
            if p is None and self.echo:
                log(f"nginx origin with the echo module failed ({why}); trying without it")
                self.echo, self.echo_reason = False, f"nginx with the echo module failed: {why}"
                p, addr, why = start_nginx_origin(self.tmp, self.fd_limit, False)
        if p is None:
            sys.exit(why)
        self.procs[kind] = (p, addr)
        log(f"origin {kind} on {addr}" + (" (echo module)" if kind == "nginx" and self.echo else ""))
        return addr

    def get(self, kind):
        """The origin's address, (re)starting it when needed."""
        if kind in self.procs:
            p, addr = self.procs[kind]
            if p.poll() is None:
                return addr
            log(f"origin {kind} died (exit {p.returncode}; {self.logs(kind)!r}); restarting it")
            self.restarts += 1
            stop(p)
            del self.procs[kind]
        return self._start(kind)

    def alive(self, kind):
        return kind in self.procs and self.procs[kind][0].poll() is None

    def skewed(self, delays_ms):
        """skewed's pair of origins (a SkewedOrigin, started on first use and
        restarted when one of its processes died): nginx + echo module
        where it works, else two ringmux-origin processes."""
        sk = getattr(self, "_skewed", None)
        if sk is not None:
            if sk.alive():
                return sk
            log(f"skewed origin died ({sk.logs()!r}); restarting it")
            self.restarts += 1
            sk.stop()
        echo = self.has_echo()
        sk = SkewedOrigin(self.tmp, self.fd_limit, delays_ms, echo)
        why = sk.start()
        if why and echo:
            log(f"skewed: nginx origin with the echo module failed ({why}); "
                "using two ringmux-origin --delay")
            sk = SkewedOrigin(self.tmp, self.fd_limit, delays_ms, False)
            why = sk.start()
        if why:
            sys.exit(why)
        self._skewed = sk
        log(f"skewed origins: fast {sk.addrs[0]}, slow {sk.addrs[1]} ({sk.kind}; "
            "GET took " + " / ".join(f"{x:.2f}" for x in sk.check_ms) + " ms)")
        return sk

    def stop_skewed(self):
        sk = getattr(self, "_skewed", None)
        if sk is not None:
            sk.stop()
            self._skewed = None

    def has_echo(self):
        """Whether the nginx origin serves /slow and /delay5 (starts it to
        find out: the module may be present and still fail to load)."""
        if self.echo:
            self.get("nginx")
        return self.echo

    def logs(self, kind):
        p = self.procs.get(kind, (None, None))[0]
        path = (os.path.join(self.tmp, "origin.err") if kind == "ringmux"
                else os.path.join(getattr(p, "logdir", self.tmp), "error.log"))
        try:
            with open(path) as f:
                return f.read()[-300:].strip()
        except OSError:
            return ""

    def describe(self, kind, paths=()):
        if kind == "ringmux":
            what = f"ringmux-origin --size {len(BODY20)} (thread per connection)"
        else:
            what = ("nginx, one worker: / = return 200 (20 bytes), /large.bin = 1 MiB static "
                    "file (sendfile)" + (", /slow, /delay5 and /delay1 = echo_sleep 0.2 s / 5 ms "
                                         "/ 1 ms (echo module)" if self.echo else ""))
        if paths:
            what += "; paths " + ", ".join(paths)
        return what


class SkewedOrigin:
    """skewed's two upstreams on CPU 0, "fast" and "slow" (delays_ms), each
    counting the requests it answered:
      * nginx + echo module (when Origins.has_echo()): one nginx, one worker,
        two server blocks on two ports, every path = echo_sleep, then the
        20-byte body; each server block writes a 2-byte line per request to
        its own access log (buffer=64k flush=100ms: a write per 64 KiB, and
        nothing held longer than 0.1 s), and the lines are counted;
      * otherwise two ringmux-origin processes, --name fast/slow --delay MS,
        counted through GET /stats?delay=0 (which counts itself: the calls
        made so far are subtracted).
    Started by Origins.skewed() on first use, restarted when it died."""

    NAMES = ("fast", "slow")

    def __init__(self, tmp, fd_limit, delays_ms, echo):
        self.tmp, self.fd_limit, self.delays_ms = tmp, fd_limit, tuple(delays_ms)
        self.kind = "nginx" if echo else "ringmux"
        self.procs, self.addrs, self.counters = [], [], []
        self.stats_calls = [0, 0]
        self.check_ms = None  # mean time of a fresh-connection GET to each, at start

    def start(self):
        """None when both answer, else the reason (everything stopped)."""
        why = self._start_nginx() if self.kind == "nginx" else self._start_ringmux()
        if why is None:
            why = self._check()
        if why:
            self.stop()
        return why

    def _start_nginx(self):
        d = tempfile.mkdtemp(prefix="origin-skewed-", dir=self.tmp)
        os.chmod(d, 0o755)
        for sub in ("cb", "px", "fc", "uw", "sc"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
            os.chmod(os.path.join(d, sub), 0o777)
        ports = [free_port() for _ in self.NAMES]
        while ports[1] == ports[0]:
            ports[1] = free_port()
        logs = [os.path.join(d, f"{n}.log") for n in self.NAMES]
        nofile = min(65536, self.fd_limit)
        servers = "".join(f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log {lg} count buffer=64k flush=100ms;
        location / {{
            echo_sleep {ms / 1000:.3f};
            echo -n "{BODY20}";
        }}
    }}""" for port, lg, ms in zip(ports, logs, self.delays_ms))
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""load_module {ECHO_MODULE};
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log crit;
worker_rlimit_nofile {nofile};
events {{ worker_connections {max(1024, min(8192, nofile - 64))}; }}
http {{
    log_format count ".";
    server_tokens off;
    default_type text/plain;
    keepalive_timeout 3600s;
    keepalive_requests 1000000000;
    client_body_temp_path {d}/cb;
    proxy_temp_path {d}/px;
    fastcgi_temp_path {d}/fc;
    uwsgi_temp_path {d}/uw;
    scgi_temp_path {d}/sc;{servers}
}}
""")
        with open(os.path.join(d, "out"), "w") as out, open(os.path.join(d, "err"), "w") as err:
            p = spawn(["taskset", "-c", "0", "nginx", "-c", conf, "-p", d + "/",
                       "-e", f"{d}/error.log"], out, err)
        p.logdir = d
        self.procs = [p]
        self.addrs = [f"127.0.0.1:{port}" for port in ports]
        self.counters = [LineCounter(lg) for lg in logs]
        for port in ports:
            if not wait_port(port, p):
                return "skewed nginx origin did not start; " + self.logs()
        return None

    def _start_ringmux(self):
        if not os.access(ORIGIN, os.X_OK):
            return f"missing {ORIGIN} (the skewed origins without the echo module)"
        for name, ms in zip(self.NAMES, self.delays_ms):
            path = os.path.join(self.tmp, f"origin-{name}.out")
            with open(path, "w") as out, \
                    open(os.path.join(self.tmp, f"origin-{name}.err"), "w") as err:
                p = spawn(["taskset", "-c", "0", ORIGIN, "--listen", "127.0.0.1:0",
                           "--name", name, "--size", str(len(BODY20)), "--delay", str(ms)],
                          out, err)
            self.procs.append(p)
            addr = wait_line(path, "listening on", p)
            if not addr:
                return f"ringmux-origin --name {name} did not start; " + self.logs()
            self.addrs.append(addr)
        self.stats_calls = [0, 0]
        return None

    def _check(self):
        """Each answers the 20-byte body; the mean of 5 GETs (fresh
        connections) is kept for the report, to show the delays as served."""
        self.check_ms = []
        for name, addr in zip(self.NAMES, self.addrs):
            took = []
            for _ in range(5):
                t = time.time()
                try:
                    status, body = http_get(addr, "/")
                except (OSError, ValueError) as e:
                    return f"skewed origin {name} ({addr}): GET / failed: {e!r}; " + self.logs()
                took.append((time.time() - t) * 1000)
                if status != 200 or body != BODY20.encode():
                    return (f"skewed origin {name} ({addr}): GET / answered {status} with "
                            f"{body[:40]!r}")
            self.check_ms.append(statistics.mean(took))
        return None

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self):
        for p in self.procs:
            stop(p)
        self.procs = []

    def counts(self):
        """Requests answered so far by (fast, slow)."""
        if self.kind == "nginx":
            return tuple(c.count() for c in self.counters)
        out = []
        for i, addr in enumerate(self.addrs):
            self.stats_calls[i] += 1
            status, body = http_get(addr, "/stats?delay=0")
            fields = dict(kv.split("=", 1) for kv in body.decode().split())
            if status != 200 or "requests" not in fields:
                raise ValueError(f"{addr} /stats answered {status}: {body[:80]!r}")
            out.append(int(fields["requests"]) - self.stats_calls[i])
        return tuple(out)

    def settled_counts(self, timeout=5.0):
        """counts() once the requests in flight have been answered and
        logged: two reads 0.2 s apart that agree (after 0.3 s, which covers
        the slow delay and nginx's 100 ms log flush), or the last read."""
        time.sleep(0.3)
        deadline, last = time.time() + timeout, self.counts()
        while time.time() < deadline:
            time.sleep(0.2)
            now = self.counts()
            if now == last:
                break
            last = now
        return last

    def logs(self):
        text = []
        if self.kind == "nginx" and self.procs:
            names = [os.path.join(self.procs[0].logdir, n) for n in ("err", "error.log")]
        else:
            names = [os.path.join(self.tmp, f"origin-{n}.err") for n in self.NAMES]
        for path in names:
            try:
                with open(path) as f:
                    t = f.read().strip()[-300:]
                if t:
                    text.append(f"{os.path.basename(path)}: {t}")
            except OSError:
                pass
        return " | ".join(text) or "no output"

    def describe(self):
        fast, slow = self.delays_ms
        how = (f"nginx + echo module, one worker, two server blocks: every path = echo_sleep "
               f"{fast} ms (fast) / {slow} ms (slow), then the 20-byte body; requests counted "
               "from each server block's access log" if self.kind == "nginx" else
               f"two ringmux-origin --size 20, --delay {fast} (fast) and --delay {slow} (slow); "
               "requests counted with GET /stats")
        if self.check_ms:
            how += (" (a GET on a fresh connection took " +
                    " / ".join(f"{x:.2f}" for x in self.check_ms) + " ms at start)")
        return how


class WarmupOrigins:
    """warmup's two upstreams on CPU 0, ringmux-origin --name A / B --size 20
    --delay delay_ms, fresh for every run (B's readiness clock starts with
    its process): A before the proxy, B at the start of the cold phase with
    --ready-after ready_after_ms (it accepts and answers at once; only
    /ready says 503 until then). Requests counted with GET /stats?delay=0,
    which counts itself (the calls made so far are subtracted)."""

    NAMES = ("A", "B")

    def __init__(self, tmp, sc):
        self.dir = tempfile.mkdtemp(prefix="origins-warmup-", dir=tmp)
        self.sc = sc
        self.procs, self.addrs, self.stats_calls = {}, {}, {}
        self.conns = {}  # connections accepted so far (at the last counts())
        self.ready_at = None  # B's /ready turns 200 then (time.time(), +- its start-up)

    def start(self, name):
        """None when it listens, else the reason."""
        if not os.access(ORIGIN, os.X_OK):
            return f"missing {ORIGIN} (the warmup origins)"
        ready = self.sc["ready_after_ms"] if name == "B" else 0
        out_path = os.path.join(self.dir, f"origin-{name}.out")
        with open(out_path, "w") as out, \
                open(os.path.join(self.dir, f"origin-{name}.err"), "w") as err:
            t = time.time()
            p = spawn(["taskset", "-c", "0", ORIGIN, "--listen", "127.0.0.1:0", "--name", name,
                       "--size", str(len(BODY20)), "--delay", str(self.sc["delay_ms"]),
                       "--ready-after", str(ready)], out, err)
        self.procs[name] = p
        addr = wait_line(out_path, "listening on", p)
        if not addr:
            return f"ringmux-origin --name {name} did not start; " + self.logs()
        # Its clock starts between the spawn and the line: the midpoint.
        self.ready_at = (t + time.time()) / 2 + ready / 1000 if name == "B" else self.ready_at
        self.addrs[name] = addr
        self.stats_calls[name] = 0
        return None

    def counts(self):
        """Requests answered so far, by origin name (those started)."""
        out = {}
        for name, addr in self.addrs.items():
            self.stats_calls[name] += 1
            status, body = http_get(addr, "/stats?delay=0")
            fields = dict(kv.split("=", 1) for kv in body.decode().split())
            if status != 200 or "requests" not in fields:
                raise ValueError(f"{name} ({addr}) /stats answered {status}: {body[:80]!r}")
            out[name] = int(fields["requests"]) - self.stats_calls[name]
            # Each /stats GET is a connection of its own too.
            self.conns[name] = int(fields.get("connections", 0)) - self.stats_calls[name]
        return out

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def stop(self):
        for p in self.procs.values():
            stop(p)
        self.procs = {}

    def logs(self):
        text = []
        for name in self.NAMES:
            try:
                with open(os.path.join(self.dir, f"origin-{name}.err")) as f:
                    t = f.read().strip()[-300:]
                if t:
                    text.append(f"origin-{name}.err: {t}")
            except OSError:
                pass
        return " | ".join(text) or "no output"


def warmup_phases(sc, secs):
    """warmup's wrk phases: (name, seconds). wrk takes whole seconds."""
    edge = max(2, round(secs / 3))
    return [("before", edge), ("cold", -(-sc["ready_after_ms"] // 1000)),
            ("ramp", sc["slow_start_s"] + 1), ("after", edge)]


def build_relay(tmp):
    """Build the relay floor from a temporary copy of its source (once per
    run; the source tree may be read-only and is never written to).
    Returns (binary, source directory) or (None, reason)."""
    src = os.path.normpath(os.environ.get("RELAY_FLOOR_SRC")
                           or os.path.join(ROOT, "..", "shared", "tools", "relay-floor"))
    if not os.path.isfile(os.path.join(src, "Cargo.toml")):
        return None, f"no relay-floor source at {src} (set RELAY_FLOOR_SRC)"
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    if not os.access(cargo, os.X_OK):
        return None, "cargo not found (needed to build the relay floor)"
    dst = os.path.join(tmp, "relay-floor")
    try:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("target", ".git"))
        for dirpath, dirnames, filenames in os.walk(dst):
            os.chmod(dirpath, 0o755)
            for fn in filenames:
                os.chmod(os.path.join(dirpath, fn), 0o644)
    except OSError as e:
        return None, f"copying {src}: {e}"
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(dst, "target"))
    log(f"building the relay floor from {src} ...")
    with open(os.path.join(dst, "build.log"), "w") as out:
        p = subprocess.Popen([cargo, "build", "--release", "-q"], cwd=dst, env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True)
        STARTED.append(p)
        try:
            p.wait(900)
        except subprocess.TimeoutExpired:
            stop(p)
            return None, "cargo build of the relay floor took over 15 min (killed)"
        if p in STARTED:
            STARTED.remove(p)
    exe = os.path.join(dst, "target", "release", "relay")
    if p.returncode != 0 or not os.access(exe, os.X_OK):
        try:
            with open(os.path.join(dst, "build.log")) as f:
                tail = f.read().strip()[-400:]
        except OSError:
            tail = ""
        return None, f"cargo build --release failed (exit {p.returncode}): {' '.join(tail.split())}"
    return exe, src


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(path, prefix, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(prefix):
                        return line.split()[-1]
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def http_get(addr, path="/", timeout=5.0):
    """One GET over a fresh connection; returns (status, body) or raises."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode())
        return read_response(s)


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, chunked = 0, False
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
        elif k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:  # the echo module's responses
        return status, read_chunked(s, body)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status, body


def read_chunked(s, buf):
    """The decoded body of a chunked response whose body starts with buf."""
    out = b""
    while True:
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed in a chunk size")
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):  # trailers
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed in the trailers")
                buf += chunk
            return out
        while len(buf) < size + 2:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed in a chunk")
            buf += chunk
        out += buf[:size]
        buf = buf[size + 2:]


# ------------------------------------------------------------ /proc readers

def descendants(pid):
    """pid and all its descendants (scan of /proc/*/stat ppid)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    """utime+stime (fields 14+15) summed over pids, in clock ticks."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14, 15
        except OSError:
            pass
    return total


def status_kb(pids, key):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ----------------------------------------------------------------- proxies

class Proxy:
    """One proxy process tree on CPU 1. origin: one address, or a list of
    them at equal weight (skewed); balance: the policy of nginx/HAProxy with
    several ("least-conn": nginx `least_conn`, HAProxy `balance leastconn`;
    None: their default round robin). ringmux's policy is in its kind:
    "ringmux+wrr", "ringmux+least-conn", ... (--balance)."""

    def __init__(self, kind, origin, tmp, fd_limit, balance=None):
        self.kind, self.fd_limit, self.balance = kind, fd_limit, balance
        self.upstreams = list(origin) if isinstance(origin, (list, tuple)) else [origin]
        self.origin = self.upstreams[0]
        self.dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp)
        os.chmod(self.dir, 0o755)
        self.proc, self.addr, self.error = None, None, None
        self.admin, self.access_log = None, None  # the observability variants

    def start(self):
        out = open(os.path.join(self.dir, "stdout.log"), "w")
        err = open(os.path.join(self.dir, "stderr.log"), "w")
        try:
            # "ringmux+admin", "ringmux+log", "ringmux+wrr", ... are ringmux
            # with extra flags.
            getattr(self, "_start_" + self.kind.split("+")[0])(out, err)
        finally:
            out.close()
            err.close()
        if self.addr:
            try:
                status, _ = http_get(self.addr)
                if status != 200:
                    self.error = f"test GET answered {status}"
            except OSError as e:
                self.error = f"test GET failed: {e}"
        if self.error:
            self.error += "; " + self.logs()
            self.stop()
            return False
        return True

    def logs(self):
        text = []
        for name in ("stderr.log", "stdout.log", "error.log"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    t = f.read().strip()
                if t:
                    text.append(f"{name}: {t[-400:]}")
            except OSError:
                pass
        return " | ".join(text) or "no output"

    def _start_ringmux(self, out, err):
        if self.kind == "ringmux+elastic":
            # scale: every CPU allowed (the harness itself is on CPU 0 only,
            # and a child inherits that), workers 1..N, the admin address.
            cpus, workers = f"0-{os.cpu_count() - 1}", self._elastic_flags()
        else:
            cpus, workers = "1", ["--workers", "1", "--no-pin"]
        if self.kind == "ringmux+reload":
            # warmup: the upstreams come from the config file only (an
            # --upstream on the command line would replace the file's list,
            # at start and at every reload); SIGHUP reads the file again.
            self.config = os.path.join(self.dir, "ringmux.toml")
            self._write_ringmux_config()
            ups = ["--config", self.config]
            self.flags = ["--listen", "127.0.0.1:0"] + workers + ups
        else:
            ups = [a for u in self.upstreams for a in ("--upstream", u)]
        self.proc = spawn(["taskset", "-c", cpus, RINGMUX, "--listen", "127.0.0.1:0"] + workers
                          + ups + self._ringmux_variant_flags(), out, err)
        self.addr = wait_line(out.name, "listening on", self.proc)
        if not self.addr:
            self.error = "ringmux did not print 'listening on'"
        elif self.kind in ("ringmux+admin", "ringmux+elastic"):
            # Printed after the listening lines, in the same flush.
            self.admin = wait_line(out.name, "admin listening on", self.proc)
            if not self.admin:
                self.error = "ringmux did not print 'admin listening on'"

    def _elastic_flags(self):
        """scale's ringmux: --workers 1..N, the scale marks and timers of
        SCENARIOS["scale"], --no-pin unless ELASTIC_PIN, --admin."""
        sc = SCENARIOS["scale"]
        self.flags = (["--workers", f"1..{ELASTIC_CPUS}",
                       "--scale-high", str(sc["scale_high"]), "--scale-low", str(sc["scale_low"]),
                       "--scale-up-after", str(sc["scale_up_after_ms"]),
                       "--scale-down-after", str(sc["scale_down_after_ms"])]
                      + ([] if ELASTIC_PIN else ["--no-pin"]) + ["--admin", "127.0.0.1:0"])
        return self.flags

    def _ringmux_variant_flags(self):
        """The extra flags of the observability variants (the access log is
        in this run's own directory: a fresh, empty file per run) and of the
        balancing ones ("ringmux+POLICY": --balance POLICY)."""
        policy = self.kind.partition("+")[2]
        if policy in RINGMUX_POLICIES:
            return ["--balance", policy]
        if self.kind == "ringmux+poll":
            return ["--busy-poll", "20"]
        if self.kind == "ringmux+admin":
            return ["--admin", "127.0.0.1:0"]
        if self.kind == "ringmux+log":
            self.access_log = os.path.join(self.dir, "access.log")
            return ["--access-log", self.access_log, "--access-log-format", "combined"]
        return []

    def _write_ringmux_config(self, added=None):
        """warmup's ringmux.toml: upstream A, and B (`added`) with the
        readiness check, warm connections and slow start of
        SCENARIOS["warmup"]. Replaced in one rename, so a reload never
        reads half a file."""
        sc = SCENARIOS["warmup"]
        text = f'[[upstream]]\naddr = "{self.origin}"\n'
        if added:
            text += (f'\n[[upstream]]\naddr = "{added}"\nwarmup_check = "{sc["ready_path"]}"\n'
                     f'warm_conns = {sc["warm_conns"]}\nslow_start = "{sc["slow_start_s"]}s"\n')
        tmp = self.config + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)
        return text

    def add_upstream(self, addr, timeout=5.0):
        """warmup: put `addr` (B) in rotation, the proxy's own way. Returns
        a dict for the run's JSON: how, took_ms (until the proxy said it was
        done), what it said; "error" when it refused or did not answer."""
        t = time.time()
        info = (self._add_ringmux(addr, timeout) if self.kind == "ringmux+reload"
                else self._add_haproxy(addr, timeout))
        info["took_ms"] = (time.time() - t) * 1000
        return info

    def _add_ringmux(self, addr, timeout):
        """Rewrite the config file with B, SIGHUP, wait for ringmux's
        `configuration reloaded` (or `reload refused`) line on stderr."""
        path = os.path.join(self.dir, "stderr.log")

        def lines():
            try:
                with open(path) as f:
                    return f.read().splitlines()
            except OSError:
                return []
        seen = len(lines())
        text = self._write_ringmux_config(added=addr)
        info = {"how": "config file rewritten with B, SIGHUP", "config": text}
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.time() + timeout
        while time.time() < deadline:
            new = [ln for ln in lines()[seen:] if "reload" in ln]
            if new:
                info["said"] = new[0]
                if "configuration reloaded" not in new[0]:
                    info["error"] = f"reload: {new[0]}"
                return info
            time.sleep(0.002)
        info["error"] = f"no 'configuration reloaded' line within {timeout:.0f} s; " + self.logs()
        return info

    def _add_haproxy(self, addr, timeout):
        """HAProxy 2.6's runtime API on the stats socket (level admin). B is
        a static server declared `disabled` with a placeholder address (see
        _start_haproxy): a server added with `add server` kept no idle
        connections here (one connection per request to B: 37,134 for
        37,134 requests in a 6 s ramp, CPU/req 25 -> 31 µs), which is not
        how HAProxy is run. So:
          set server be/B addr IP port PORT
          enable server be/B; set server be/B health down
            (one line, so nothing runs in between: leaving maintenance,
            2.6 marks the server UP at once whatever its checks said;
            marked down, it waits for its check on /ready, then enters on
            the slowstart ramp)."""
        host, port = addr.rsplit(":", 1)
        cmds = [f"set server be/B addr {host} port {port}",
                "enable server be/B; set server be/B health down"]
        info = {"how": "stats socket: " + " | ".join(cmds), "said": []}
        for c in cmds:
            try:
                ans = haproxy_cli(self.cli, c, timeout).strip()
            except OSError as e:
                info["error"] = f"stats socket, {c!r}: {e!r}"
                return info
            info["said"].append(ans)
            ok = ("changed from" in ans) if c.startswith("set server") else not ans
            if not ok:
                info["error"] = f"HAProxy answered {c!r} with {ans[:200]!r}"
                return info
        return info

    def _start_nginx(self, out, err):
        port = free_port()
        d = self.dir
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
            os.chmod(os.path.join(d, sub), 0o777)  # the worker may run as nobody
        conf = os.path.join(d, "nginx.conf")
        nofile = min(65536, self.fd_limit)
        servers = "\n".join(f"        server {u};" for u in self.upstreams)
        # A balancing method must come before `keepalive` (nginx docs).
        nginx_balance = "\n        least_conn;" if self.balance == "least-conn" else ""
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
worker_rlimit_nofile {nofile};
error_log {d}/error.log crit;
events {{
    worker_connections 20000;
}}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream origin {{{nginx_balance}
{servers}
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
        self.proc = spawn(["taskset", "-c", "1", "nginx", "-c", conf, "-p", d + "/",
                           "-e", f"{d}/error.log"], out, err)
        if wait_port(port, self.proc):
            self.addr = f"127.0.0.1:{port}"
        else:
            self.error = "nginx did not start listening"

    def _start_haproxy(self, out, err):
        port = free_port()
        conf = os.path.join(self.dir, "haproxy.cfg")
        # HAProxy needs about 2 x maxconn + 14 fds and refuses to start when
        # it cannot raise its limit that far: cap maxconn below the fd limit.
        maxconn = min(50000, (self.fd_limit - 100) // 2)
        servers = ("    server origin " + self.origin if len(self.upstreams) == 1 else
                   "\n".join(f"    server u{i} {u}" for i, u in enumerate(self.upstreams)))
        haproxy_balance = "\n    balance leastconn" if self.balance == "least-conn" else ""
        sock = ""
        if self.kind == "haproxy+slowstart":
            # warmup: A checked on the readiness path as often as ringmux
            # polls B's; B declared disabled at a placeholder address, given
            # its address and enabled at run time (_add_haproxy) on the
            # stats socket.
            sc = SCENARIOS["warmup"]
            self.cli = os.path.join(self.dir, "admin.sock")
            sock = f"\n    stats socket {self.cli} level admin"
            servers = (f"    option httpchk GET {sc['ready_path']}\n"
                       f"    default-server inter {sc['check_ms']}ms rise 1 fall 3\n"
                       f"    server A {self.origin} check\n"
                       f"    server B 127.0.0.1:1 disabled check slowstart {sc['slow_start_s']}s")
        with open(conf, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn {maxconn}{sock}

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be{haproxy_balance}
{servers}
""")
        self.proc = spawn(["taskset", "-c", "1", "haproxy", "-db", "-f", conf], out, err)
        if wait_port(port, self.proc):
            self.addr = f"127.0.0.1:{port}"
        else:
            self.error = "haproxy did not start listening"

    def _start_relay(self, out, err):
        # The floor: accepts, connects one upstream connection per client
        # connection and copies bytes both ways (no HTTP). Prints nothing.
        port = free_port()
        self.proc = spawn(["taskset", "-c", "1", RELAY, f"127.0.0.1:{port}", self.origin],
                          out, err)
        if wait_port(port, self.proc):
            self.addr = f"127.0.0.1:{port}"
        else:
            self.error = "relay did not start listening"

    def pids(self):
        return descendants(self.proc.pid) if self.proc else []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        stop(self.proc)
        self.proc = None


def haproxy_cli(path, line, timeout=5.0):
    """One command line on HAProxy's stats socket; its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((line + "\n").encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode(errors="replace")


# ---------------------------------------------------------------- wrk runs

def parse_wrk(text):
    bench, hist = None, None
    for line in text.splitlines():
        if line.startswith("BENCH "):
            bench = json.loads(line[6:])
        elif line.startswith("HIST "):
            rest = line[5:].strip()
            if rest != "SKIPPED":
                hist = {}
                for item in rest.split():
                    v, c = item.split(":")
                    hist[int(v)] = hist.get(int(v), 0) + int(c)
    return bench, hist


def uncorrect(hist, duration_us, requests, conns):
    """Undo wrk 4's stats_correct(): for every bin n >= 2E it added data[n]
    synthetic samples at n-E, n-2E, ... (> E), E = runtime/(complete/conns)."""
    per_conn = requests // conns
    if per_conn <= 0:
        return dict(hist)
    e = duration_us // per_conn
    if e <= 0:
        return dict(hist)
    orig = {}
    above = {}  # residue class -> sum of orig over bins above the current one
    for m in sorted(hist, reverse=True):
        r = m % e
        if m > e:
            o = hist[m] - above.get(r, 0)
        else:
            o = hist[m]
        if o < 0:  # not the correction we expected: give up
            return None
        orig[m] = o
        above[r] = above.get(r, 0) + o
    return {k: v for k, v in orig.items() if v}


def hist_stats(h):
    n = sum(h.values())
    if not n:
        return None
    keys = sorted(h)
    out = {"samples": n, "mean_us": sum(k * v for k, v in h.items()) / n}
    want = [("p50_us", 50), ("p90_us", 90), ("p99_us", 99), ("p999_us", 99.9)]
    acc, i = 0, 0
    for k in keys:
        acc += h[k]
        while i < len(want) and acc >= want[i][1] / 100 * n:
            out[want[i][0]] = k
            i += 1
    for name, _ in want:
        out.setdefault(name, keys[-1])
    out["max_us"] = keys[-1]
    return out


def wrk_start(addr, sc, secs, timeout_s=10):
    cmd = ["taskset", "-c", "0", "wrk", "-t1", f"-c{sc['conns']}", f"-d{secs}s",
           "--latency", f"--timeout", f"{timeout_s}s"]
    url = f"http://{addr}"
    if sc["depth"] > 1:
        cmd += ["-s", LUA_PIPE, url, "--", str(sc["depth"]), sc["path"]]
    else:
        cmd += ["-s", LUA_REPORT, url + sc["path"]]
    return spawn(cmd, subprocess.PIPE, subprocess.PIPE)


def wrk_finish(p, deadline):
    try:
        out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        stop(p)
        return None, None, "wrk hung (killed)"
    if p in STARTED:
        STARTED.remove(p)
    text = out.decode(errors="replace")
    bench, hist = parse_wrk(text)
    if bench is None:
        return None, None, f"wrk failed: {err.decode(errors='replace')[-300:]}"
    nonok = 0
    for line in text.splitlines():
        if "Non-2xx or 3xx responses" in line:
            nonok = int(line.split(":")[1])
    bench["non2xx3xx"] = nonok
    return bench, hist, None


def wrk(addr, sc, secs, timeout_s=10):
    return wrk_finish(wrk_start(addr, sc, secs, timeout_s), time.time() + secs + 60)


def wrk_together(addr, scs, secs):
    """Several wrk processes started together, for the same duration; a list
    of (bench, hist, error), one per scenario dict. Never waits past the
    deadline; a failed start kills the ones already running."""
    procs = []
    try:
        for sc in scs:
            procs.append(wrk_start(addr, sc, secs))
    except OSError as e:
        for p in procs:
            stop(p)
        return [(None, None, f"wrk failed to start: {e}")] * len(scs)
    deadline = time.time() + secs + 60
    return [wrk_finish(p, deadline) for p in procs]


def load_stats(bench, hist, sc):
    """Throughput, errors and latency of one wrk run (sc: conns, depth)."""
    reqs = bench["requests"]
    secs_real = bench["duration_us"] / 1e6
    r = dict(
        requests=reqs, duration_s=secs_real, rps=reqs / secs_real,
        socket_errors=bench["err_connect"] + bench["err_read"] + bench["err_write"]
        + bench["err_timeout"],
        status_errors=bench["err_status"], non2xx3xx=bench["non2xx3xx"],
        wrk=bench,
    )
    r["errors"] = r["socket_errors"] + max(r["status_errors"], r["non2xx3xx"])
    raw = uncorrect(hist, bench["duration_us"], reqs, sc["conns"]) if hist else None
    st = hist_stats(raw) if raw else None
    if st:
        r["latency"] = st  # the samples wrk took (per batch when pipelining)
        r["latency_source"] = "wrk histogram, coordinated-omission correction undone"
        r["latency"]["wrk_max_us"] = bench["wrk_max_us"]
    else:
        if sc["depth"] > 1:
            # wrk's own percentiles are meaningless under pipelining (see
            # report.lua); keep only the Little's-law mean set below.
            r["latency"] = {"mean_us": sc["conns"] * sc["depth"] / r["rps"] * 1e6 if reqs else None,
                            "max_us": bench["wrk_max_us"]}
            r["latency_source"] = ("histogram too wide to dump (max %.0f ms): mean from "
                                   "Little's law, no percentiles" % (bench["wrk_max_us"] / 1000))
        else:
            r["latency"] = {"mean_us": bench["wrk_mean_us"], "p50_us": bench["wrk_p50_us"],
                            "p99_us": bench["wrk_p99_us"], "p999_us": bench["wrk_p999_us"],
                            "max_us": bench["wrk_max_us"]}
            r["latency_source"] = "wrk percentiles as printed (histogram too wide to dump)"
    depth = sc["depth"]
    if depth > 1 and reqs:
        # Closed loop: each connection always has exactly one batch in flight,
        # so (Little's law) mean batch time = connections x depth / rps.
        r["batch_mean_littles_law_us"] = sc["conns"] * depth / r["rps"] * 1e6
        if st:
            r["batch_samples_expected"] = reqs / depth
    return r


def proxy_sample(proxy, r, t0):
    """CPU since t0 (ticks) and memory of the proxy's processes into r."""
    pids = proxy.pids()  # nginx may have restarted a worker
    t1 = cpu_ticks(pids)
    r["peak_rss_kb"] = status_kb(pids, "VmHWM")
    r["rss_end_kb"] = status_kb(pids, "VmRSS")
    r["processes"] = len(pids)
    r["cpu_ticks"] = t1 - t0
    r["cpu_s"] = (t1 - t0) / TICK
    if not proxy.alive():
        r["error"] = "proxy died during the run; " + proxy.logs()


def measure_load(proxy, sc, secs, warm):
    r = {"proxy": proxy.kind}
    if warm > 0:
        _, _, err = wrk(proxy.addr, sc, warm)
        if err:
            r["error"] = "warm-up: " + err
            return r
    t0 = cpu_ticks(proxy.pids())
    bench, hist, err = wrk(proxy.addr, sc, secs)
    proxy_sample(proxy, r, t0)
    if err:
        r["error"] = err
        return r
    r.update(load_stats(bench, hist, sc))
    reqs = r["requests"]
    r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / reqs) if reqs else None
    return r


def mixed_parts(sc):
    fast = dict(conns=sc["conns"], path=sc["path"], depth=1)
    slow = dict(conns=sc["slow_conns"], path=sc["slow_path"], depth=1)
    return fast, slow


def measure_mixed(proxy, sc, secs, warm):
    """Fast and slow URL through one proxy at once (two wrk processes);
    CPU/req is over the responses of both."""
    r = {"proxy": proxy.kind}
    parts = mixed_parts(sc)
    if warm > 0:
        for (_, _, err), name in zip(wrk_together(proxy.addr, parts, warm), ("fast", "slow")):
            if err:
                r["error"] = f"warm-up ({name} URL): {err}"
                return r
    t0 = cpu_ticks(proxy.pids())
    res = wrk_together(proxy.addr, parts, secs)
    proxy_sample(proxy, r, t0)
    for (bench, hist, err), name, part in zip(res, ("fast", "slow"), parts):
        if err:
            r["error"] = f"{name} URL: {err}"
            return r
        r[name] = load_stats(bench, hist, part)
        r[name]["path"] = part["path"]
        r[name]["conns"] = part["conns"]
    reqs = r["fast"]["requests"] + r["slow"]["requests"]
    r.update(requests=reqs, rps=r["fast"]["rps"] + r["slow"]["rps"],
             errors=r["fast"]["errors"] + r["slow"]["errors"],
             cpu_us_per_req=(r["cpu_s"] * 1e6 / reqs) if reqs else None)
    return r


def measure_skewed(proxy, sc, secs, warm, sk):
    """measure_load through a proxy with skewed's two upstreams, plus the
    requests each origin answered during the measured run (counts taken
    once the requests in flight before and after it were answered: the
    origins' total may exceed wrk's by up to the connections, requests
    answered after wrk stopped counting)."""
    r = {"proxy": proxy.kind}
    if warm > 0:
        _, _, err = wrk(proxy.addr, sc, warm)
        if err:
            r["error"] = "warm-up: " + err
            return r
    try:
        c0 = sk.settled_counts()
    except (OSError, ValueError) as e:
        r["error"] = f"origin counts before the run: {e!r}"
        return r
    t0 = cpu_ticks(proxy.pids())
    bench, hist, err = wrk(proxy.addr, sc, secs)
    proxy_sample(proxy, r, t0)
    if err:
        r["error"] = err
        return r
    try:
        c1 = sk.settled_counts()
    except (OSError, ValueError) as e:
        r["error"] = f"origin counts after the run: {e!r}"
        return r
    r.update(load_stats(bench, hist, sc))
    reqs = r["requests"]
    r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / reqs) if reqs else None
    fast, slow = c1[0] - c0[0], c1[1] - c0[1]
    r["upstreams"] = {"fast": fast, "slow": slow,
                      "fast_share": fast / (fast + slow) if fast + slow else None,
                      "origin_requests": fast + slow, "wrk_requests": reqs,
                      "counted_by": "access-log lines" if sk.kind == "nginx" else "GET /stats"}
    return r


def measure_warmup(proxy, sc, secs, warm, wo):
    """warmup: a warm-up through A, then the phases of warmup_phases as
    consecutive wrk runs through the same proxy process. B is started just
    before the cold phase's wrk, and added (proxy.add_upstream)
    reload_after_s after that wrk started, so under load. Per phase: wrk's
    figures, the proxy's CPU per request, the requests each origin answered
    (GET /stats just after the phase's wrk ended), start and end in seconds
    from the reload. Each phase's histogram is its own (a wrk per phase):
    between phases there is a gap of a few ms without load, measured."""
    r = {"proxy": proxy.kind, "flags": getattr(proxy, "flags", None)}
    if warm > 0:
        _, _, err = wrk(proxy.addr, sc, warm)
        if err:
            r["error"] = "warm-up: " + err
            return r
    out, t_reload = [], None
    try:
        prev = wo.counts()
    except (OSError, ValueError) as e:
        r["error"] = f"origin counts before the run: {e!r}"
        return r
    prev_conns = dict(wo.conns)
    for name, n in warmup_phases(sc, secs):
        if name == "cold":
            why = wo.start("B")
            if why:
                r["error"] = why
                break
            try:
                prev = wo.counts()  # B answered nothing yet
                prev_conns = dict(wo.conns)
            except (OSError, ValueError) as e:
                r["error"] = f"origin counts before the cold phase: {e!r}"
                break
        c0 = cpu_ticks(proxy.pids())
        t_start = time.time()
        try:
            p = wrk_start(proxy.addr, sc, n)
        except OSError as e:
            r["error"] = f"phase {name}: wrk failed to start: {e}"
            break
        if name == "cold":
            time.sleep(sc["reload_after_s"])  # its connections are up: the change lands under load
            t_reload = time.time()
            r["reload"] = proxy.add_upstream(wo.addrs["B"])
            if "error" in r["reload"]:
                stop(p)
                r["error"] = f"adding B: {r['reload']['error']}"
                break
        bench, hist, err = wrk_finish(p, time.time() + n + 60)
        t_end = time.time()
        c1 = cpu_ticks(proxy.pids())
        if err:
            r["error"] = f"phase {name}: {err}"
            break
        time.sleep(0.01)  # the responses in flight when wrk stopped
        try:
            now = wo.counts()
        except (OSError, ValueError) as e:
            r["error"] = f"origin counts after the {name} phase: {e!r}"
            break
        st = load_stats(bench, hist, sc)
        got = {k: now[k] - prev.get(k, 0) for k in now}
        total = sum(got.values())
        st.update(phase=name, secs=n, t_start=t_start, t_end=t_end, cpu_s=(c1 - c0) / TICK,
                  cpu_us_per_req=((c1 - c0) / TICK * 1e6 / st["requests"])
                  if st["requests"] else None,
                  origin_requests={k: got.get(k, 0) for k in wo.NAMES},
                  origin_connections={k: wo.conns.get(k, 0) - prev_conns.get(k, 0)
                                      for k in wo.NAMES},
                  shares={k: (got.get(k, 0) / total) if total else None for k in wo.NAMES})
        out.append(st)
        prev, prev_conns = now, dict(wo.conns)
        if not proxy.alive():
            break
    if not proxy.alive():
        r["error"] = "proxy died during the run; " + proxy.logs()
    # Times in seconds from the moment B was added (from the first phase's
    # start when it never was).
    t0 = t_reload if t_reload is not None else (out[0]["t_start"] if out else time.time())
    for st in out:
        st["t_start"], st["t_end"] = round(st["t_start"] - t0, 3), round(st["t_end"] - t0, 3)
    r["phases"] = out
    r["gaps_ms"] = [round((b["t_start"] - a["t_end"]) * 1000, 1) for a, b in zip(out, out[1:])]
    if t_reload is not None and wo.ready_at is not None:
        r["b_ready_s"] = round(wo.ready_at - t_reload, 3)
    r["peak_rss_kb"] = status_kb(proxy.pids(), "VmHWM")
    if out:
        r["requests"] = sum(st["requests"] for st in out)
        r["errors"] = sum(st["errors"] for st in out)
    if "error" not in r and len(out) < 4:
        r["error"] = f"only {len(out)} of 4 phases ran"
    return r


# ----------------------------------------------------------- observability

class Scraper:
    """GET /metrics and GET /status on ringmux's admin address once a second
    for `secs` seconds, as Prometheus plus a dashboard would: at 0.5, 1.5,
    ... secs-0.5 s after start, so exactly `secs` scrapes per run and each
    while wrk's connections are open (/status lists every one of them). A
    thread of the harness, so on CPU 0 with wrk; the admin threads it wakes
    are ringmux's and their CPU is counted. Each GET is a fresh connection
    (the admin side answers with Connection: close). A slow scrape is not
    caught up on: the next waits for the next half second past a whole one."""

    PATHS = ("/metrics", "/status")

    def __init__(self, addr, secs):
        self.addr, self.secs = addr, secs
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.scrapes, self.gets, self.failures, self.first_error = 0, 0, 0, None
        self.bytes = {p: None for p in self.PATHS}  # size of the last answer
        self.get_ms = []

    def start(self):
        self.t0 = time.time()
        self.thread.start()
        return self

    def _run(self):
        k = 0
        while k < self.secs and not self.halt.wait(max(0.0, self.t0 + k + 0.5 - time.time())):
            self.scrapes += 1
            for path in self.PATHS:
                t = time.time()
                try:
                    status, body = http_get(self.addr, path)
                    if status != 200:
                        raise ValueError(f"GET {path} answered {status}")
                    self.gets += 1
                    self.bytes[path] = len(body)
                    self.get_ms.append((time.time() - t) * 1000)
                except (OSError, ValueError) as e:
                    self.failures += 1
                    self.first_error = self.first_error or f"GET {path}: {e!r}"
            k = max(k + 1, int(time.time() - self.t0 - 0.5) + 1)

    def stop(self):
        """Stop and return what was scraped (for the run's JSON)."""
        self.halt.set()
        self.thread.join(10)
        st = {"scrapes": self.scrapes, "gets": self.gets, "failures": self.failures,
              "bytes": {p.strip("/"): b for p, b in self.bytes.items()},
              "get_ms_mean": statistics.mean(self.get_ms) if self.get_ms else None,
              "get_ms_max": max(self.get_ms) if self.get_ms else None}
        if self.first_error:
            st["first_error"] = self.first_error
        return st


class LineCounter:
    """Newlines in a growing file, reading only what was appended since the
    last count (a 10 s run writes about 150 MB of log)."""

    def __init__(self, path):
        self.path, self.pos, self.lines = path, 0, 0

    def size(self):
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def count(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    self.lines += chunk.count(b"\n")
                    self.pos += len(chunk)
        except FileNotFoundError:
            pass
        return self.lines


SETTLE_S = 0.5  # five of ringmux's 100 ms ticks


def settle(counter=None, timeout=5.0):
    """Let the run just ended finish: workers hand their access-log lines to
    the logger on their 100 ms tick, so the last lines are written up to a
    tick (plus the write) after the last response. Waited on before each CPU
    sample, so the log work of the warm-up's last tick is not counted in the
    measured run and that of the measured run's last tick is. Every variant
    waits SETTLE_S, so all three are measured alike (an idle proxy costs
    next to nothing); the log variant also until its file stops growing.
    Returns the log's line count then (None without a log)."""
    time.sleep(SETTLE_S)
    if counter is None:
        return None
    deadline, size = time.time() + timeout, counter.size()
    while time.time() < deadline:
        time.sleep(0.2)
        now = counter.size()
        if now == size:
            break
        size = now
    return counter.count()


def measure_observed(proxy, sc, secs, warm):
    """measure_load for the observability variants: the same warm-up and
    measured wrk run; +admin is scraped during both (so the first scrape's
    one-off costs fall in the warm-up), +log has its lines of the measured
    run counted against wrk's requests (recorded, never an error: a proxy
    that drops lines when its logger is behind is what the count shows)."""
    r = {"proxy": proxy.kind}
    counter = LineCounter(proxy.access_log) if proxy.access_log else None
    if warm > 0:
        scraper = Scraper(proxy.admin, warm).start() if proxy.admin else None
        _, _, err = wrk(proxy.addr, sc, warm)
        if scraper:
            scraper.stop()
        if err:
            r["error"] = "warm-up: " + err
            return r
    lines0 = settle(counter)  # the test GET and the warm-up
    t0 = cpu_ticks(proxy.pids())
    scraper = Scraper(proxy.admin, secs).start() if proxy.admin else None
    bench, hist, err = wrk(proxy.addr, sc, secs)
    if scraper:
        r["admin_scrapes"] = scraper.stop()
    lines1 = settle(counter)
    proxy_sample(proxy, r, t0)
    if counter:
        try:  # ~150 MB per 10 s run: give the space back (freed when ringmux exits)
            os.unlink(proxy.access_log)
        except OSError:
            pass
    if err:
        r["error"] = err
        return r
    r.update(load_stats(bench, hist, sc))
    reqs = r["requests"]
    r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / reqs) if reqs else None
    if scraper and not r["admin_scrapes"]["gets"]:
        r["error"] = f"no admin scrape succeeded: {r['admin_scrapes'].get('first_error')}"
    if counter:
        r["access_log"] = log_check(lines1 - lines0, reqs, sc)
    return r


def log_check(lines, reqs, sc):
    """Access-log lines of the measured run vs the responses wrk counted.
    They differ by at most the requests in flight when wrk stopped (conns x
    depth: answered, or cut short, after wrk stopped counting) unless lines
    were dropped."""
    slack = sc["conns"] * sc["depth"]
    return {"lines": lines, "requests": reqs, "diff": lines - reqs,
            "close": abs(lines - reqs) <= slack, "slack": slack}


# ------------------------------------------------------- elastic workers

def parse_metrics(text):
    """What scale reads from GET /metrics: running workers, each worker's
    busy fraction (index -> fraction, every worker slot, stopped ones 0),
    the scale-up and scale-down counters."""
    out = {"workers": None, "busy": {}, "ups": None, "downs": None}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "ringmux_workers":
            out["workers"] = int(v)
        elif name == "ringmux_worker_scale_ups_total":
            out["ups"] = int(v)
        elif name == "ringmux_worker_scale_downs_total":
            out["downs"] = int(v)
        elif name.startswith('ringmux_worker_busy_ratio{worker="'):
            out["busy"][int(name.split('"')[1])] = v
    if out["workers"] is None or out["ups"] is None or out["downs"] is None:
        raise ValueError("no ringmux_workers / scale counters in /metrics")
    return out


class WorkerSampler:
    """GET /metrics on ringmux's admin address every `every` seconds (at
    t0 + k x every; a slow answer is not caught up on), from a thread of the
    harness (CPU 0), until stopped. samples: dicts with t (s since t0),
    workers, busy (list by worker index), ups, downs. sample_now() takes one
    more at once, from the caller's thread (the step boundaries)."""

    def __init__(self, addr, every):
        self.addr, self.every = addr, every
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.samples, self.failures, self.first_error = [], 0, None

    def start(self):
        self.t0 = time.time()
        self.thread.start()
        return self

    def sample_now(self):
        t = time.time()
        try:
            status, body = http_get(self.addr, "/metrics")
            if status != 200:
                raise ValueError(f"GET /metrics answered {status}")
            m = parse_metrics(body.decode(errors="replace"))
        except (OSError, ValueError) as e:
            with self.lock:
                self.failures += 1
                self.first_error = self.first_error or repr(e)
            return None
        busy = [m["busy"].get(i, 0.0) for i in range(max(m["busy"], default=-1) + 1)]
        x = {"t": round((t + time.time()) / 2 - self.t0, 3), "workers": m["workers"],
             "busy": busy, "ups": m["ups"], "downs": m["downs"]}
        with self.lock:
            self.samples.append(x)
        return x

    def _run(self):
        k = 1
        while not self.halt.wait(max(0.0, self.t0 + k * self.every - time.time())):
            self.sample_now()
            k = max(k + 1, int((time.time() - self.t0) / self.every) + 1)

    def stop(self):
        self.halt.set()
        self.thread.join(10)
        with self.lock:
            self.samples.sort(key=lambda x: x["t"])
        return self.samples


def measure_scale(proxy, sc, secs, warm):
    """scale: one elastic ringmux, a warm-up at the first step's connections,
    then the steps (connections each, `secs` each) as consecutive wrk runs,
    sampled by a WorkerSampler throughout. Per step: wrk's figures, the
    proxy's CPU per request, workers and the scale counters at the start and
    end (a /metrics read just before wrk starts and just after it ends), the
    mean busy fraction of the running workers over the step's samples."""
    r = {"proxy": proxy.kind, "flags": getattr(proxy, "flags", None)}
    try:
        with open(os.path.join(proxy.dir, "stderr.log")) as f:
            r["start_line"] = f.read().strip().splitlines()[0]
    except (OSError, IndexError):
        pass
    steps = sc["steps"]
    if warm > 0:
        _, _, err = wrk(proxy.addr, dict(sc, conns=steps[0]), warm)
        if err:
            r["error"] = "warm-up: " + err
            return r
    sampler = WorkerSampler(proxy.admin, sc["sample_ms"] / 1000).start()
    out = []
    try:
        for i, conns in enumerate(steps):
            part = dict(sc, conns=conns)
            first = sampler.sample_now()
            t_start = time.time() - sampler.t0
            c0 = cpu_ticks(proxy.pids())
            bench, hist, err = wrk(proxy.addr, part, secs)
            c1 = cpu_ticks(proxy.pids())
            t_end = time.time() - sampler.t0
            last = sampler.sample_now()
            if err:
                r["error"] = f"step {i + 1} ({conns} connections): {err}"
                break
            st = load_stats(bench, hist, part)
            st.update(step=i + 1, conns=conns, t_start=round(t_start, 3), t_end=round(t_end, 3),
                      cpu_s=(c1 - c0) / TICK,
                      cpu_us_per_req=((c1 - c0) / TICK * 1e6 / st["requests"])
                      if st["requests"] else None)
            for k, x in (("start", first), ("end", last)):
                st[f"workers_{k}"] = x and x["workers"]
                st[f"ups_{k}"] = x and x["ups"]
                st[f"downs_{k}"] = x and x["downs"]
            out.append(st)
            if not proxy.alive():
                break
    finally:
        samples = sampler.stop()
    if not proxy.alive():
        r["error"] = "proxy died during the run; " + proxy.logs()
    r["samples"] = samples
    r["sampler"] = {"every_ms": sc["sample_ms"], "samples": len(samples),
                    "failures": sampler.failures}
    if sampler.first_error:
        r["sampler"]["first_error"] = sampler.first_error
    for st in out:
        # Samples inside the step (not the boundary reads): the busy
        # fraction of each running worker, averaged over workers and samples.
        inside = [x for x in samples if st["t_start"] < x["t"] < st["t_end"]]
        fr = [b for x in inside for b in sorted(x["busy"], reverse=True)[:x["workers"]]]
        st["busy_mean"] = statistics.mean(fr) if fr else None
        one = [max(x["busy"]) for x in inside if x["workers"] == 1 and x["busy"]]
        st["busy_one_worker"] = statistics.mean(one) if one else None  # while one ran
        slots = max((len(x["busy"]) for x in inside), default=0)
        st["busy_by_worker"] = [statistics.mean(x["busy"][w] if w < len(x["busy"]) else 0.0
                                                for x in inside) for w in range(slots)]
        for k in ("ups", "downs"):
            a, b = st.get(f"{k}_start"), st.get(f"{k}_end")
            st[f"scale_{k}"] = (b - a) if a is not None and b is not None else None
    r["steps"] = out
    pids = proxy.pids()
    r["peak_rss_kb"] = status_kb(pids, "VmHWM")
    if out:
        r["requests"] = sum(st["requests"] for st in out)
        r["errors"] = sum(st["errors"] for st in out)
        f = [x for x in samples if x["ups"] is not None]
        r["scale_ups"] = f[-1]["ups"] - f[0]["ups"] if f else None
        r["scale_downs"] = f[-1]["downs"] - f[0]["downs"] if f else None
        r["max_workers"] = max((x["workers"] for x in samples), default=None)
    if "error" not in r and len(out) < len(steps):
        r["error"] = f"only {len(out)} of {len(steps)} steps ran"
    if "error" not in r and not samples:
        r["error"] = f"no /metrics sample succeeded: {sampler.first_error}"
    return r


# -------------------------------------------------------------- idle conns

def idle_client(addr, n, batch=100, batch_timeout=5.0, total_timeout=90.0):
    """Open n keep-alive connections, one GET each, keep them open.
    Never hangs: each batch has a deadline, the whole thing another; a proxy
    that stops answering is reported, not waited on."""
    host, port = addr.rsplit(":", 1)
    port = int(port)
    socks, failed, unanswered = [], 0, 0
    req = f"GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode()
    first_err = None
    t_end = time.time() + total_timeout
    aborted = None
    for start in range(0, n, batch):
        if time.time() > t_end:
            aborted = f"gave up after {total_timeout:.0f} s with {len(socks)} connections open"
            break
        group = []
        for _ in range(min(batch, n - start)):
            s = socket.socket()
            s.settimeout(batch_timeout)
            try:
                s.connect((host, port))
                s.sendall(req)
                group.append(s)
            except OSError as e:
                failed += 1
                first_err = first_err or repr(e)
                s.close()
        deadline = time.time() + batch_timeout
        ok_in_batch = 0
        for s in group:
            try:
                s.settimeout(max(0.001, deadline - time.time()))
                status, _ = read_response(s)
                if status != 200:
                    raise ConnectionError(f"status {status}")
                socks.append(s)
                ok_in_batch += 1
            except socket.timeout:
                unanswered += 1
                first_err = first_err or f"no response within {batch_timeout:.0f} s"
                s.close()
            except (OSError, ValueError) as e:
                failed += 1
                first_err = first_err or repr(e)
                s.close()
        if group and not ok_in_batch:
            aborted = (f"a whole batch of {len(group)} got no answer after "
                       f"{len(socks)} connections were open; stopped there")
            break
    return socks, failed, unanswered, first_err, aborted


def still_open(socks):
    closed = 0
    for s in socks:
        try:
            s.setblocking(False)
            if s.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return len(socks) - closed


def measure_idle(proxy, sc, warm):
    r = {"proxy": proxy.kind}
    if warm > 0:
        warm_sc = dict(conns=64, path="/", depth=1)
        _, _, err = wrk(proxy.addr, warm_sc, warm)
        if err:
            r["error"] = "warm-up: " + err
            return r
    time.sleep(0.5)
    pids = proxy.pids()
    before = status_kb(pids, "VmRSS")
    t0 = time.time()
    socks, failed, unanswered, first_err, aborted = idle_client(proxy.addr, sc["conns"])
    r["open_s"] = time.time() - t0
    log(f"  {proxy.kind}: {len(socks)} idle connections open in {r['open_s']:.1f} s")
    time.sleep(1.0)
    pids = proxy.pids()
    after = status_kb(pids, "VmRSS")
    r["open_after_1s"] = still_open(socks)
    for s in socks:
        s.close()
    n = len(socks)
    r.update(connections=n, failed=failed, unanswered=unanswered,
             rss_before_kb=before, rss_after_kb=after,
             peak_rss_kb=status_kb(pids, "VmHWM"),
             rss_growth_bytes_per_conn=((after - before) * 1024 / n) if n else None,
             errors=failed + unanswered + (n - r["open_after_1s"]))
    if first_err:
        r["first_error"] = first_err
    if aborted:
        r["error"] = f"idle client: {aborted} ({failed} failed, {unanswered} unanswered; first: {first_err})"
    elif n < sc["conns"] * 0.99:
        r["error"] = f"only {n} of {sc['conns']} connections served ({first_err})"
    if not proxy.alive():
        r["error"] = "proxy died; " + proxy.logs()
    return r


# ----------------------------------------------------------------- report

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def scenario_proxies(runs, scn):
    """The columns of a scenario: the three proxies, plus the floor when it
    ran (observability: its ringmux variants; skewed: its own list)."""
    if SCENARIOS[scn].get("variants") or SCENARIOS[scn].get("proxies"):
        return SCENARIOS[scn].get("variants") or SCENARIOS[scn]["proxies"]
    return PROXIES + ([FLOOR] if any(r["scenario"] == scn and r["proxy"] == FLOOR
                                     for r in runs) else [])


MIXED_KEYS = [(part, k) for part in ("fast", "slow")
              for k in ("rps", "p50_us", "p99_us", "p999_us", "max_us", "mean_us")]


def summarize(runs, scenarios):
    summary = {}
    for scn in scenarios:
        sc = SCENARIOS[scn]
        per = {}
        for px in scenario_proxies(runs, scn):
            rs = [r for r in runs if r["scenario"] == scn and r["proxy"] == px]
            ok = [r for r in rs if "error" not in r]
            s = {"runs": len(rs), "ok_runs": len(ok),
                 "failures": [r["error"] for r in rs if "error" in r]}
            if sc.get("idle"):
                s["rss_growth_bytes_per_conn"] = med(r.get("rss_growth_bytes_per_conn") for r in ok)
                s["rss_before_kb"] = med(r.get("rss_before_kb") for r in ok)
                s["rss_after_kb"] = med(r.get("rss_after_kb") for r in ok)
                s["connections"] = med(r.get("connections") for r in ok)
                s["errors"] = sum(r.get("errors", 0) for r in rs)
                s["all_growth"] = [r.get("rss_growth_bytes_per_conn") for r in ok]
            elif sc.get("mixed"):
                for key in ("rps", "cpu_us_per_req", "peak_rss_kb"):
                    s[key] = med(r.get(key) for r in ok)
                for part, k in MIXED_KEYS:
                    src = (lambda r: r[part].get("rps")) if k == "rps" else \
                        (lambda r: r[part].get("latency", {}).get(k))
                    s[f"{part}_{k}"] = med(src(r) for r in ok)
                s["errors"] = sum(r.get("errors", 0) for r in rs)
                s["all_cpu_us_per_req"] = [r.get("cpu_us_per_req") for r in ok]
                s["all_fast_p99_us"] = [r["fast"].get("latency", {}).get("p99_us") for r in ok]
            elif sc.get("scale"):
                scale_summary(s, rs, ok, sc)
            elif sc.get("warmup"):
                warmup_summary(s, rs, ok)
            else:
                load_summary(s, rs, ok)
                if sc.get("skewed"):
                    ups = [r["upstreams"] for r in ok if "upstreams" in r]
                    for k in ("fast_share", "fast", "slow", "origin_requests", "wrk_requests"):
                        s[k] = med(u.get(k) for u in ups)
                    s["all_fast_share"] = [u.get("fast_share") for u in ups]
            per[px] = s
        if sc.get("variants"):
            summary[scn] = {"proxies": per, "ratios": variant_ratios(runs, scn, per)}
            continue
        if sc.get("scale"):
            summary[scn] = {"proxies": per, "ratios": {}}
            continue
        if sc.get("warmup"):
            # ringmux over HAProxy, phase by phase.
            ratios = {}
            rm, hp = per.get("ringmux+reload", {}), per.get("haproxy+slowstart", {})
            for a, b in zip(rm.get("phases", []), hp.get("phases", [])):
                for k in ("p99_us", "max_us", "rps", "cpu_us_per_req"):
                    x, y = a.get(k), b.get(k)
                    ratios[f"{k}_{a['phase']}_ringmux_over_haproxy"] = \
                        (x / y) if (x is not None and y) else None
            summary[scn] = {"proxies": per, "ratios": ratios}
            continue
        if sc.get("skewed"):
            # ringmux least-conn against the peers' least-connections and
            # against its own wrr (the gain that balancing by load buys).
            ratios = {}
            lc = per.get("ringmux+least-conn", {})
            for other in ("nginx", "haproxy", "ringmux+wrr"):
                for k in ("cpu_us_per_req", "rps", "p99_us"):
                    a, b = lc.get(k), per.get(other, {}).get(k)
                    ratios[f"{k}_ringmux+least-conn_over_{other}"] = \
                        (a / b) if (a is not None and b) else None
            summary[scn] = {"proxies": per, "ratios": ratios}
            continue
        ratios = {}
        if sc.get("idle"):
            keys = ["rss_growth_bytes_per_conn"]
        elif sc.get("mixed"):
            keys = ["cpu_us_per_req", "fast_rps", "fast_p99_us"]
        else:
            keys = ["cpu_us_per_req", "rps", "p99_us"]
        for other in ("nginx", "haproxy"):
            for k in keys:
                a, b = per["ringmux"].get(k), per[other].get(k)
                ratios[f"{k}_ringmux_over_{other}"] = (a / b) if (a is not None and b) else None
        if FLOOR in per:
            a, b = per["ringmux"].get("cpu_us_per_req"), per[FLOOR].get("cpu_us_per_req")
            ratios[f"cpu_us_per_req_ringmux_over_{FLOOR}"] = (a / b) if (a is not None and b) else None
        summary[scn] = {"proxies": per, "ratios": ratios}
    return summary


def load_summary(s, rs, ok):
    """Medians of a plain load scenario's runs of one proxy into s."""
    for key in ("rps", "cpu_us_per_req", "peak_rss_kb", "batch_mean_littles_law_us"):
        s[key] = med(r.get(key) for r in ok)
    for key in ("p50_us", "p99_us", "p999_us", "mean_us"):
        s[key] = med(r.get("latency", {}).get(key) for r in ok)
    s["errors"] = sum(r.get("errors", 0) for r in rs)
    s["all_cpu_us_per_req"] = [r.get("cpu_us_per_req") for r in ok]
    s["all_rps"] = [r.get("rps") for r in ok]
    logs = [r["access_log"] for r in ok if "access_log" in r]
    if logs:  # observability's ringmux+log
        s["access_log_lines"] = med(x["lines"] for x in logs)
        s["access_log_requests"] = med(x["requests"] for x in logs)
        s["access_log_close"] = all(x["close"] for x in logs)
        s["all_access_log"] = logs
    scrapes = [r["admin_scrapes"] for r in ok if "admin_scrapes" in r]
    if scrapes:  # observability's ringmux+admin
        s["admin_scrapes"] = sum(x["scrapes"] for x in scrapes)
        s["admin_gets"] = sum(x["gets"] for x in scrapes)
        s["admin_failures"] = sum(x["failures"] for x in scrapes)
        s["admin_bytes"] = scrapes[-1]["bytes"]


STEP_KEYS = ("rps", "cpu_us_per_req", "busy_mean", "busy_one_worker")
STEP_LAT = ("p50_us", "p99_us", "p999_us", "max_us")
STEP_COUNTS = ("workers_start", "workers_end", "scale_ups", "scale_downs")


def scale_summary(s, rs, ok, sc):
    """scale: per step, medians over the rounds (workers and scale counts
    too, with every round's value kept), errors summed; each round's
    timeline of samples for the chart."""
    s["errors"] = sum(r.get("errors", 0) for r in rs)
    s["flags"] = next((r["flags"] for r in rs if r.get("flags")), None)
    s["start_line"] = next((r["start_line"] for r in rs if r.get("start_line")), None)
    for k in ("scale_ups", "scale_downs", "max_workers", "peak_rss_kb"):
        s[k] = med(r.get(k) for r in ok)
        s[f"all_{k}"] = [r.get(k) for r in ok]
    s["sampler_failures"] = sum(r.get("sampler", {}).get("failures", 0) for r in rs)
    s["samples"] = sum(r.get("sampler", {}).get("samples", 0) for r in rs)
    steps = []
    for i, conns in enumerate(sc["steps"]):
        got = [r["steps"][i] for r in ok if len(r.get("steps", [])) > i]
        st = {"step": i + 1, "conns": conns, "rounds": len(got)}
        for k in STEP_KEYS:
            st[k] = med(x.get(k) for x in got)
        for k in STEP_LAT:
            st[k] = med(x.get("latency", {}).get(k) for x in got)
        for k in STEP_COUNTS:
            st[k] = med(x.get(k) for x in got)
            st[f"all_{k}"] = [x.get(k) for x in got]
        st["all_p99_us"] = [x.get("latency", {}).get("p99_us") for x in got]
        st["all_rps"] = [x.get("rps") for x in got]
        bw = [x.get("busy_by_worker") or [] for x in got]
        st["busy_by_worker"] = [med(b[w] if w < len(b) else None for b in bw)
                                for w in range(max(map(len, bw), default=0))]
        st["errors"] = sum(x.get("errors", 0) for x in got)
        steps.append(st)
    s["steps"] = steps
    s["timelines"] = [{"round": r.get("round"), "samples": r.get("samples", []),
                       "steps": [(x["t_start"], x["t_end"]) for x in r.get("steps", [])]}
                      for r in ok]


PHASE_KEYS = ("rps", "cpu_us_per_req", "t_start", "t_end")
PHASE_LAT = ("p50_us", "p99_us", "p999_us", "max_us", "mean_us")


def warmup_summary(s, rs, ok):
    """warmup: per phase, medians over the rounds (p99 and B's share with
    every round's value kept), errors summed; how B was added, how long the
    proxy took to say so, when B's /ready turned 200 (from the reload)."""
    s["errors"] = sum(r.get("errors", 0) for r in rs)
    s["flags"] = next((r["flags"] for r in rs if r.get("flags")), None)
    s["peak_rss_kb"] = med(r.get("peak_rss_kb") for r in ok)
    reloads = [r["reload"] for r in ok if r.get("reload")]
    s["reload_how"] = reloads[0]["how"] if reloads else None
    s["reload_said"] = reloads[0].get("said") if reloads else None
    s["reload_ms"] = med(x.get("took_ms") for x in reloads)
    s["all_reload_ms"] = [x.get("took_ms") for x in reloads]
    s["b_ready_s"] = med(r.get("b_ready_s") for r in ok)
    s["gaps_ms_max"] = max((g for r in ok for g in r.get("gaps_ms", [])), default=None)
    names = next((([x["phase"] for x in r["phases"]]) for r in ok if r.get("phases")), [])
    phases = []
    for i, name in enumerate(names):
        got = [r["phases"][i] for r in ok if len(r.get("phases", [])) > i]
        st = {"phase": name, "secs": got[0]["secs"], "rounds": len(got)}
        for k in PHASE_KEYS:
            st[k] = med(x.get(k) for x in got)
        for k in PHASE_LAT:
            st[k] = med(x.get("latency", {}).get(k) for x in got)
        for o in WarmupOrigins.NAMES:
            st[f"{o}_requests"] = med(x["origin_requests"].get(o) for x in got)
            st[f"{o}_share"] = med(x["shares"].get(o) for x in got)
            st[f"{o}_connections"] = med(x.get("origin_connections", {}).get(o) for x in got)
        st["all_B_share"] = [x["shares"].get("B") for x in got]
        st["all_p99_us"] = [x.get("latency", {}).get("p99_us") for x in got]
        st["all_max_us"] = [x.get("latency", {}).get("max_us") for x in got]
        st["errors"] = sum(x.get("errors", 0) for x in got)
        phases.append(st)
    s["phases"] = phases


def variant_ratios(runs, scn, per):
    """observability: each variant's CPU/req and req/s over plain ringmux's
    (ratio of the medians, the headline), and the CPU ratio of each round
    alone (the variants of a round ran back to back, so these are paired and
    show how much of a few % is noise)."""
    base = "ringmux"
    ratios = {}
    for px in per:
        if px == base:
            continue
        for k in ("cpu_us_per_req", "rps"):
            a, b = per[px].get(k), per[base].get(k)
            ratios[f"{k}_{px}_over_{base}"] = (a / b) if (a is not None and b) else None
        by_round = {}
        for r in runs:
            if r["scenario"] == scn and "error" not in r and r.get("cpu_us_per_req"):
                by_round.setdefault(r["round"], {})[r["proxy"]] = r["cpu_us_per_req"]
        ratios[f"all_cpu_us_per_req_{px}_over_{base}"] = [
            v[px] / v[base] for _, v in sorted(by_round.items()) if px in v and base in v]
    return ratios


def fmt(v, spec=".1f", none="–"):
    return none if v is None else format(v, spec)


def ms(us):
    return None if us is None else us / 1000


def md_failed(s, cols):
    return f"failed: {'; '.join(s['failures']).replace(chr(10), ' ')[:200]}" + " |" * cols


def markdown(meta, summary):
    L = []
    L.append(f"# ringmux vs nginx vs HAProxy — {meta['started']}")
    L.append("")
    L.append(f"{meta['rounds']} interleaved round(s), {meta['duration_s']} s per measured run "
             f"(+{meta['warmup_s']} s warm-up), medians over rounds. Each proxy: one "
             "worker/thread pinned to CPU 1, a fresh process per run; wrk, the origin "
             f"(**{meta['origin']}**: {meta['origin_desc']}) and the harness on CPU 0. "
             f"Kernel {meta['kernel']}, {meta['versions']['nginx']}, "
             f"{meta['versions']['haproxy']}, {meta['versions']['wrk']}; "
             f"ringmux {meta['git']}; open-file limit {meta['fd_limit']}.")
    L.append("")
    if meta.get("origins"):
        L.append("Origin and path(s) per scenario: " + "; ".join(
            f"{scn}: {o}" for scn, o in meta["origins"].items()) + ".")
        L.append("")
    rf = meta.get("relay_floor", {})
    if rf.get("binary"):
        L.append(f"Relay floor (`relay`, built from {rf['src']}): a 1:1 io_uring byte relay, no "
                 "HTTP, one connection to the origin per client connection, pinned to CPU 1 like "
                 f"the proxies; measured in {', '.join(rf['scenarios']) or 'none of this run’s scenarios'}.")
    elif rf:
        L.append(f"Relay floor: **skipped** ({rf.get('reason')}).")
    L.append("")
    for scn, why in meta.get("skipped", {}).items():
        L.append(f"**{scn}: skipped** ({why}).")
        L.append("")
    if meta.get("interrupted"):
        L.append(f"**Incomplete run: {meta['interrupted']}.**")
        L.append("")
    load = [s for s in summary if not SCENARIOS[s].get("idle") and not SCENARIOS[s].get("variants")
            and not SCENARIOS[s].get("skewed") and not SCENARIOS[s].get("scale")
            and not SCENARIOS[s].get("warmup")]
    plain = [s for s in load if not SCENARIOS[s].get("mixed")]
    if plain:
        L.append("| scenario | proxy | req/s | CPU µs/req | p50 ms | p99 ms | p99.9 ms | mean ms | peak RSS MiB | errors |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for scn in plain:
            for px, s in summary[scn]["proxies"].items():
                if not s["ok_runs"]:
                    L.append(f"| {scn} | {MD_NAMES[px]} | {md_failed(s, 7)}")
                    continue
                L.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    scn, MD_NAMES[px], fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"),
                    fmt(ms(s["p50_us"]), ".3f"), fmt(ms(s["p99_us"]), ".3f"),
                    fmt(ms(s["p999_us"]), ".3f"), fmt(ms(s["mean_us"]), ".3f"),
                    fmt(s["peak_rss_kb"] and s["peak_rss_kb"] / 1024, ".1f"),
                    s["errors"] + (len(s["failures"]) and 0)))
        L.append("")
    if load:
        L.append("Ratios (ringmux ÷ peer; below 1 is better for CPU and p99, above 1 is better for "
                 "req/s; ÷ floor: ringmux's CPU/req over the relay floor's, 1 would be a proxy "
                 "as cheap as copying the bytes; mixed: req/s and p99 of the fast URL):")
        L.append("")
        L.append("| scenario | CPU/req ÷ nginx | CPU/req ÷ HAProxy | CPU/req ÷ floor | req/s ÷ nginx | req/s ÷ HAProxy | p99 ÷ nginx | p99 ÷ HAProxy |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for scn in load:
            r = summary[scn]["ratios"]
            pre = "fast_" if SCENARIOS[scn].get("mixed") else ""
            L.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                scn, *(fmt(r.get(k), ".2f") + ("×" if r.get(k) is not None else "") for k in (
                    "cpu_us_per_req_ringmux_over_nginx", "cpu_us_per_req_ringmux_over_haproxy",
                    f"cpu_us_per_req_ringmux_over_{FLOOR}",
                    f"{pre}rps_ringmux_over_nginx", f"{pre}rps_ringmux_over_haproxy",
                    f"{pre}p99_us_ringmux_over_nginx", f"{pre}p99_us_ringmux_over_haproxy"))))
        L.append("")
    if "slow-origin" in summary:
        d = SCENARIOS["slow-origin"]["delay_ms"]
        served = meta.get("origins", {}).get("slow-origin", "?")
        L.append(f"slow-origin (origin delay {d} ms, served by {served}, 8 requests "
                 "pipelined per connection): mean batch latency = time from writing the 8 requests to reading the "
                 "last of their responses (an upper bound for each request of the batch).")
        L.append("")
        L.append("| proxy | mean batch latency ms | ÷ origin delay | Little's-law check ms |")
        L.append("|---|---:|---:|---:|")
        for px, s in summary["slow-origin"]["proxies"].items():
            m = ms(s.get("mean_us"))
            L.append("| {} | {} | {} | {} |".format(
                px, fmt(m, ".2f"), fmt(m and m / d, ".1f") + ("×" if m else ""),
                fmt(ms(s.get("batch_mean_littles_law_us")), ".2f")))
        L.append("")
    if "mixed" in summary:
        sc = SCENARIOS["mixed"]
        paths = meta.get("scenario_defs", {}).get("mixed", {})
        L.append(f"mixed: {sc['conns']} connections on the fast URL `{paths.get('path', sc['path'])}` "
                 f"and, at the same time through the same proxy, {sc['slow_conns']} on the slow URL "
                 f"`{paths.get('slow_path', '?')}` (origin answers after {sc['slow_ms']} ms): two wrk "
                 "processes on CPU 0 started together. A proxy that queues fast requests behind slow "
                 f"ones shows a fast-URL p99 near {sc['slow_ms']} ms; a good one stays near small's "
                 f"p99; the slow URL should give {sc['slow_conns']} × 1000 / {sc['slow_ms']} = "
                 f"{sc['slow_conns'] * 1000 / sc['slow_ms']:.0f} req/s at a p50 and p99 of "
                 f"{sc['slow_ms']} ms. CPU/req is over the responses of both URLs.")
        L.append("")
        small = summary.get("small", {}).get("proxies", {})
        L.append("| proxy | fast req/s | fast p50 ms | fast p99 ms | fast max ms | fast p99 ÷ small p99 "
                 "| slow req/s | slow p50 ms | slow p99 ms | CPU µs/req | peak RSS MiB | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for px, s in summary["mixed"]["proxies"].items():
            if not s["ok_runs"]:
                L.append(f"| {MD_NAMES[px]} | {md_failed(s, 10)}")
                continue
            sp = small.get(px, {}).get("p99_us")
            f99 = s.get("fast_p99_us")
            L.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                MD_NAMES[px], fmt(s["fast_rps"], ",.0f"), fmt(ms(s["fast_p50_us"]), ".3f"),
                fmt(ms(f99), ".3f"), fmt(ms(s["fast_max_us"]), ".3f"),
                fmt((f99 / sp) if (f99 is not None and sp) else None, ".1f")
                + ("×" if (f99 is not None and sp) else ""),
                fmt(s["slow_rps"], ",.1f"), fmt(ms(s["slow_p50_us"]), ".1f"),
                fmt(ms(s["slow_p99_us"]), ".1f"),
                fmt(s["cpu_us_per_req"], ".2f"),
                fmt(s["peak_rss_kb"] and s["peak_rss_kb"] / 1024, ".1f"), s["errors"]))
        L.append("")
    if "idle" in summary:
        L.append(f"idle: {SCENARIOS['idle']['conns']:,} keep-alive client connections, each "
                 "served one request, then held open; VmRSS of all the proxy's processes "
                 "1 s after the last one opened, minus VmRSS before (after a 1 s warm-up).")
        L.append("")
        L.append("| proxy | RSS before MiB | RSS after MiB | growth bytes/conn | growth KiB/conn | ÷ ringmux | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        rm = summary["idle"]["proxies"]["ringmux"].get("rss_growth_bytes_per_conn")
        for px, s in summary["idle"]["proxies"].items():
            if not s["ok_runs"]:
                L.append(f"| {px} | failed: {'; '.join(s['failures']).replace(chr(10), ' ')[:200]} | | | | | |")
                continue
            g = s["rss_growth_bytes_per_conn"]
            L.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                px, fmt(s["rss_before_kb"] and s["rss_before_kb"] / 1024, ".1f"),
                fmt(s["rss_after_kb"] and s["rss_after_kb"] / 1024, ".1f"),
                fmt(g, ".0f"), fmt(g and g / 1024, ".2f"),
                fmt((g / rm) if (g is not None and rm) else None, ".2f"), s["errors"]))
        L.append("")
    for scn in summary:
        if SCENARIOS[scn].get("variants"):
            L.extend(md_observability(scn, summary[scn]))
        elif SCENARIOS[scn].get("skewed"):
            L.extend(md_skewed(scn, summary[scn], meta))
        elif SCENARIOS[scn].get("scale"):
            L.extend(md_scale(scn, summary[scn], meta))
        elif SCENARIOS[scn].get("warmup"):
            L.extend(md_warmup(scn, summary[scn], meta))
    L.append("Notes:")
    L.append("- CPU µs/req: utime+stime of all the proxy's processes (nginx: master + worker) "
             "from /proc/PID/stat over the measured run, ÷ responses wrk completed.")
    L.append("- Latency: the samples wrk took, with wrk's coordinated-omission correction undone "
             "(see bench/wrk/report.lua). Under pipelining wrk takes one sample per batch "
             "(write of the batch → last response), so for `pipeline` and `slow-origin` the "
             "percentiles and the mean are per batch, not per request.")
    L.append("- errors: wrk socket errors (connect/read/write/timeout) + responses with status ≥ 400 "
             "(idle: connections that failed or were closed by the proxy).")
    L.append("- req/s is capped by CPU 0 (wrk + the origin), so CPU/req is "
             "the figure that compares the proxies; req/s and latency show whether they keep up.")
    return "\n".join(L) + "\n"


def md_observability(scn, summ):
    """The observability table: each variant against plain ringmux."""
    sc = SCENARIOS[scn]
    per, rn = summ["proxies"], summ["ratios"]
    L = [f"{scn}: ringmux alone at small's load ({sc['conns']} connections, `{sc['path']}`), "
         "variants interleaved in each round: plain; `--admin 127.0.0.1:0` with `GET /metrics` "
         "and `GET /status` once a second during the run (a fresh connection each, from CPU 0); "
         "`--access-log FILE --access-log-format combined`. CPU of the whole ringmux process, "
         "admin and logger threads included. ÷ ringmux: ratio of the medians (per round in "
         "brackets when there is more than one).", "",
         "| variant | req/s | CPU µs/req | ÷ ringmux | target | p99 ms | access-log lines / requests | errors |",
         "|---|---:|---:|---:|---|---:|---|---:|"]
    for px, s in per.items():
        if not s["ok_runs"]:
            L.append(f"| {px} | {md_failed(s, 6)}")
            continue
        ratio = rn.get(f"cpu_us_per_req_{px}_over_ringmux")
        rounds = rn.get(f"all_cpu_us_per_req_{px}_over_ringmux") or []
        cell = "1" if px == "ringmux" else fmt(ratio, ".3f") + ("×" if ratio is not None else "")
        if len(rounds) > 1:
            cell += " (" + ", ".join(f"{x:.3f}" for x in rounds) + ")"
        target = sc["targets"].get(px)
        tcell = "–" if target is None else f"≤ {target:.2f}" + (
            "" if ratio is None else ": met" if ratio <= target else ": **missed**")
        logcell = "–"
        if "access_log_lines" in s:
            n, q = s["access_log_lines"], s["access_log_requests"]
            logcell = f"{n:,.0f} / {q:,.0f} ({n - q:+,.0f}; " + (
                "close" if s["access_log_close"] else "**not close**") + ")"
        L.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            px, fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"), cell, tcell,
            fmt(ms(s["p99_us"]), ".3f"), logcell, s["errors"]))
    L.append("")
    adm = per.get("ringmux+admin", {})
    if adm.get("admin_scrapes") is not None:
        b = adm.get("admin_bytes") or {}
        L.append(f"ringmux+admin: {adm['admin_scrapes']} scrapes ({adm['admin_gets']} GETs answered, "
                 f"{adm['admin_failures']} failed) over its measured runs; last answers "
                 f"/metrics {fmt(b.get('metrics'), ',.0f')} B, /status {fmt(b.get('status'), ',.0f')} B.")
        L.append("")
    if "access_log_lines" in per.get("ringmux+log", {}):
        L.append("ringmux+log: lines the measured run added to the file (after the logger had "
                 "written the last tick's) vs the responses wrk counted; close = within "
                 f"{sc['conns'] * sc['depth']} (the requests in flight when wrk stopped); more "
                 "lines missing than that means lines were dropped (the logger was behind).")
        L.append("")
    return L


SKEWED_LABELS = {"ringmux+wrr": ("ringmux", "`--balance wrr`"),
                 "ringmux+least-conn": ("ringmux", "`--balance least-conn`"),
                 "haproxy": ("haproxy", "`balance leastconn`"),
                 "nginx": ("nginx", "`least_conn`")}


def md_skewed(scn, summ, meta):
    """The skewed table: per proxy and policy, throughput, latency, CPU and
    the share of the requests the fast upstream answered (origin side)."""
    sc = SCENARIOS[scn]
    per, rn = summ["proxies"], summ["ratios"]
    df, ds = sc["delays_ms"]
    c = sc["conns"]
    kind = meta.get("scenario_defs", {}).get(scn, {}).get("origin")
    served = ("nginx + echo_sleep, two server blocks" if kind == "nginx" else
              "two ringmux-origin --delay" if kind == "ringmux" else "?")
    L = [f"{scn}: {c} connections on `{sc['path']}` through a proxy with two upstreams of equal "
         f"weight, one answering after {df} ms and the other after {ds} ms ({served}; see the "
         "origin line above). "
         "fast share: requests the fast upstream answered over both, counted at the origins "
         "during the measured run (median over rounds, per round in brackets when there is "
         "more than one). For reference, with the origins' delays alone: alternating (wrr) gives "
         f"50% and at most {c} / {(df + ds) / 2:g} ms = {c / ((df + ds) / 2) * 1000:,.0f} req/s; "
         f"equal in-flight counts (what least-connections aims at) give {ds}/{df + ds} = "
         f"{100 * ds / (df + ds):.1f}% and at most {c // 2} / {df} ms + {c // 2} / {ds} ms = "
         f"{(c / 2) * (1 / df + 1 / ds) * 1000:,.0f} req/s. CPU µs/req as in the other "
         "scenarios (the proxy's processes ÷ the responses wrk counted).", "",
         "| proxy | balancing | req/s | CPU µs/req | p50 ms | p99 ms | fast share | "
         "fast / slow requests | origins − wrk | errors |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for px, s in per.items():
        name, how = SKEWED_LABELS.get(px, (px, "?"))
        if not s["ok_runs"]:
            L.append(f"| {name} | {how} | {md_failed(s, 8)}")
            continue
        fs = s.get("fast_share")
        cell = fmt(fs and 100 * fs, ".1f") + ("%" if fs is not None else "")
        rounds = [x for x in s.get("all_fast_share") or [] if x is not None]
        if len(rounds) > 1:
            cell += " (" + ", ".join(f"{100 * x:.1f}" for x in rounds) + ")"
        extra = (s["origin_requests"] - s["wrk_requests"]
                 if s.get("origin_requests") is not None and s.get("wrk_requests") is not None
                 else None)
        L.append("| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |".format(
            name, how, fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"),
            fmt(ms(s["p50_us"]), ".3f"), fmt(ms(s["p99_us"]), ".3f"), cell,
            fmt(s.get("fast"), ",.0f"), fmt(s.get("slow"), ",.0f"), fmt(extra, "+,.0f"),
            s["errors"]))
    L.append("")
    parts = []
    for other, label in (("ringmux+wrr", "its wrr"), ("nginx", "nginx"), ("haproxy", "HAProxy")):
        k = [rn.get(f"{m}_ringmux+least-conn_over_{other}") for m in ("rps", "p99_us", "cpu_us_per_req")]
        if any(v is not None for v in k):
            parts.append(f"÷ {label}: req/s {fmt(k[0], '.2f')}×, p99 {fmt(k[1], '.2f')}×, "
                         f"CPU/req {fmt(k[2], '.2f')}×")
    if parts:
        L.append("ringmux least-conn " + "; ".join(parts) + ".")
        L.append("")
    return L


def md_scale(scn, summ, meta):
    """The scale table: per load step, throughput, latency, CPU, workers
    at its start and end, what the scaler did, the busy fractions seen."""
    sc = SCENARIOS[scn]
    s = next(iter(summ["proxies"].values()), {})
    path = meta.get("scenario_defs", {}).get(scn, {}).get("path", "?")
    served = meta.get("origins", {}).get(scn, "?")
    L = [f"{scn}: one ringmux process with elastic workers, `{' '.join(s.get('flags') or ['?'])}`, "
         f"allowed every CPU (taskset -c 0-{os.cpu_count() - 1}; wrk, the origin and the harness stay "
         f"on CPU 0), in front of {served}. Load steps: wrk with "
         + ", then ".join(str(c) for c in sc["steps"]) + f" connections on `{path}` (the origin "
         f"answers after {sc['delay_ms']} ms, so the offered load follows the connections), "
         f"{meta['duration_s']} s each, back to back, after a {meta['warmup_s']} s warm-up at "
         f"{sc['steps'][0]}. A thread of the harness reads `GET /metrics` every {sc['sample_ms']} ms "
         "(`ringmux_workers`, `ringmux_worker_busy_ratio`, `ringmux_worker_scale_ups_total`, "
         "`ringmux_worker_scale_downs_total`). Workers at the start and end of a step: read just "
         "before wrk starts and just after it ends. busy: the running workers' busy fractions (a "
         "worker thread's CPU time over wall time, published every 100 ms) averaged over the step's "
         "samples; one worker: while only one ran; by worker: worker 0 / worker 1 / ... over all "
         "the step's samples, 0 while a worker is stopped (a worker serves the connections it "
         "accepted until they close: one started during a step gets only the connections opened "
         "after it started). Medians over rounds (each round in brackets when there is more than "
         "one).", ""]
    if s.get("start_line"):
        L += [f"ringmux said: `{s['start_line']}`", ""]
    L += ["| step | connections | req/s | p50 ms | p99 ms | CPU µs/req | workers start → end "
          "| scale-ups | scale-downs | busy: running (one worker) | busy by worker | errors |",
          "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|---:|"]
    if not s.get("ok_runs"):
        L.append(f"| – | – | {md_failed(s, 8)}")
    for st in s.get("steps", []):
        def cell(k, spec=".0f"):
            v, alls = st.get(k), [x for x in st.get(f"all_{k}", []) if x is not None]
            c = fmt(v, spec)
            if len(set(alls)) > 1:  # the rounds differ
                c += " (" + ", ".join(format(x, spec) for x in alls) + ")"
            return c
        p99 = fmt(ms(st["p99_us"]), ".2f")
        if len(st["all_p99_us"]) > 1:
            p99 += " (" + ", ".join(fmt(ms(x), ".2f") for x in st["all_p99_us"]) + ")"
        L.append("| {} | {} | {} | {} | {} | {} | {} → {} | {} | {} | {} ({}) | {} | {} |".format(
            st["step"], st["conns"], fmt(st["rps"], ",.0f"), fmt(ms(st["p50_us"]), ".2f"), p99,
            fmt(st["cpu_us_per_req"], ".2f"), cell("workers_start"), cell("workers_end"),
            cell("scale_ups"), cell("scale_downs"), fmt(st["busy_mean"], ".2f"),
            fmt(st["busy_one_worker"], ".2f"),
            " / ".join(fmt(b, ".2f") for b in st.get("busy_by_worker") or []) or "–",
            st["errors"]))
    L.append("")
    if s.get("ok_runs"):
        L.append(f"Over the run: {fmt(s.get('scale_ups'), '.0f')} scale-up(s), "
                 f"{fmt(s.get('scale_downs'), '.0f')} scale-down(s), at most "
                 f"{fmt(s.get('max_workers'), '.0f')} workers running, {s['errors']} errors; "
                 f"{s['samples']} samples of /metrics ({s['sampler_failures']} failed). Marks: "
                 f"--scale-high {sc['scale_high']} (every worker above it for "
                 f"{sc['scale_up_after_ms']} ms: one more) and --scale-low {sc['scale_low']} (the "
                 f"busiest below it for {sc['scale_down_after_ms']} ms: one fewer), chosen from "
                 "the busy fractions one worker shows here at 16 and 256 connections (see the "
                 "scale notes in bench/harness.py); the busy column shows them as this run saw "
                 "them. Workers over time: the -scale.svg chart next to this file.")
        L.append("")
    return L


WARMUP_LABELS = {"ringmux+reload": "ringmux", "haproxy+slowstart": "HAProxy"}
PHASE_WHAT = {"before": "A only",
              "cold": "B started, added 0.1 s in; not ready",
              "ramp": "B ready: slow start",
              "after": "A and B"}


def md_warmup(scn, summ, meta):
    """The warmup tables: one per proxy, a row per phase (latency, req/s,
    CPU, the requests each origin answered), and ringmux ÷ HAProxy."""
    sc = SCENARIOS[scn]
    per, rn = summ["proxies"], summ["ratios"]
    phases = dict(warmup_phases(sc, meta["duration_s"]))
    L = [f"{scn}: {sc['conns']} connections on `{sc['path']}` through a proxy (one worker on CPU 1) "
         f"that starts with one upstream, A; A and B are two ringmux-origin on CPU 0 (`--size 20 "
         f"--delay {sc['delay_ms']}`), started afresh for every run. wrk runs four phases back to "
         "back through the same proxy process, a histogram each: "
         f"**before** ({phases['before']} s); **cold** ({phases['cold']} s): B is started with "
         f"`--ready-after {sc['ready_after_ms']}` just before this phase's wrk (it accepts and "
         f"answers at once; only `{sc['ready_path']}` says 503 until then) and added "
         f"{sc['reload_after_s']} s into it, under load; **ramp** ({phases['ramp']} s): from B's "
         f"readiness through its {sc['slow_start_s']} s slow start (+1 s for the first passing "
         f"check); **after** ({phases['after']} s). ringmux: `--config FILE`, the file rewritten "
         f"with `[[upstream]] addr = B, warmup_check = \"{sc['ready_path']}\", warm_conns = "
         f"{sc['warm_conns']}, slow_start = \"{sc['slow_start_s']}s\"`, then SIGHUP (its readiness "
         f"check polls every 200 ms). HAProxy: `option httpchk GET {sc['ready_path']}`, A `check "
         f"inter {sc['check_ms']}ms rise 1 fall 3`; B declared `disabled check slowstart "
         f"{sc['slow_start_s']}s` at a placeholder address, then on the stats socket `set server "
         "be/B addr IP port PORT` and `enable server be/B; set server be/B health down` in one line "
         "(HAProxy 2.6 puts a server leaving maintenance UP at once, before any check: marked down, "
         "it waits for its check; a server added with `add server` instead kept no idle "
         "connections here, one connection per request, which is not how HAProxy is run). "
         "Requests per origin: `GET /stats` at each "
         "phase boundary; they include the readiness checks (about 5/s on B for both proxies, and "
         "HAProxy's on A), so B's few requests in the cold phase are those; connections likewise (the "
         "origins' count of accepted connections, each check one). From reload: the "
         "phase's wrk start and end, in seconds from the moment B was added. Medians over rounds "
         "(each round in brackets when there is more than one).", ""]
    for px, s in per.items():
        name = WARMUP_LABELS.get(px, px)
        if not s["ok_runs"]:
            L += [f"**{name}**: failed: {'; '.join(s['failures']).replace(chr(10), ' ')[:300]}", ""]
            continue
        said = s.get("reload_said")
        said = " / ".join(x for x in said if x) if isinstance(said, list) else said
        L.append(f"**{name}** (`{px}`): B added in {fmt(s.get('reload_ms'), '.1f')} ms"
                 + (f" (it said `{said}`)" if said else "")
                 + f"; B's {sc['ready_path']} turned 200 at {fmt(s.get('b_ready_s'), '+.2f')} s; "
                 f"gaps between phases at most {fmt(s.get('gaps_ms_max'), '.0f')} ms; "
                 f"peak RSS {fmt(s.get('peak_rss_kb') and s['peak_rss_kb'] / 1024, '.1f')} MiB.")
        L.append("")
        L.append("| phase | what | from reload s | req/s | p50 ms | p99 ms | max ms | CPU µs/req "
                 "| A / B requests | B share | A / B connections | errors |")
        L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for st in s.get("phases", []):
            p99 = fmt(ms(st["p99_us"]), ".2f")
            alls = [x for x in st.get("all_p99_us", []) if x is not None]
            if len(alls) > 1:
                p99 += " (" + ", ".join(fmt(ms(x), ".2f") for x in alls) + ")"
            bs = st.get("B_share")
            share = fmt(bs and 100 * bs, ".1f") + ("%" if bs is not None else "")
            allb = [x for x in st.get("all_B_share", []) if x is not None]
            if len(allb) > 1:
                share += " (" + ", ".join(f"{100 * x:.1f}" for x in allb) + ")"
            L.append("| {} | {} | {} … {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} |".format(
                st["phase"], PHASE_WHAT.get(st["phase"], ""), fmt(st["t_start"], "+.1f"),
                fmt(st["t_end"], "+.1f"), fmt(st["rps"], ",.0f"), fmt(ms(st["p50_us"]), ".2f"),
                p99, fmt(ms(st["max_us"]), ".2f"), fmt(st["cpu_us_per_req"], ".2f"),
                fmt(st["A_requests"], ",.0f"), fmt(st["B_requests"], ",.0f"), share,
                fmt(st.get("A_connections"), ",.0f"), fmt(st.get("B_connections"), ",.0f"),
                st["errors"]))
        L.append("")
    parts = []
    for ph in ("before", "cold", "ramp", "after"):
        a, b = rn.get(f"p99_us_{ph}_ringmux_over_haproxy"), rn.get(f"max_us_{ph}_ringmux_over_haproxy")
        if a is not None or b is not None:
            parts.append(f"{ph} p99 {fmt(a, '.2f')}×, max {fmt(b, '.2f')}×")
    if parts:
        L += ["ringmux ÷ HAProxy: " + "; ".join(parts) + ". Per-phase p99: the -warmup.svg chart "
              "next to this file.", ""]
    return L


COLORS = {"ringmux": "#d9534f", "ringmux+poll": "#f0ad4e", "nginx": "#2f8f4e",
          "haproxy": "#3465a4", FLOOR: "#9a9a9a"}
LABELS = {"ringmux": "ringmux", "ringmux+poll": "ringmux --busy-poll 20", "nginx": "nginx",
          "haproxy": "HAProxy", FLOOR: "relay floor"}
MD_NAMES = {"ringmux": "ringmux", "ringmux+poll": "ringmux --busy-poll 20", "nginx": "nginx",
            "haproxy": "haproxy", FLOOR: "relay floor"}


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_max(v):
    if v <= 0:
        return 1
    import math
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def svg_chart(meta, summary):
    """Grouped bars, one panel per scenario (own linear y axis from 0, since
    1 MiB bodies cost ~100x more per request than 20-byte ones). The panels
    show proxy CPU µs/request, except `mixed`: its fast URL's p99 in ms.
    observability (ringmux against itself) and skewed (its own columns)
    are in the Markdown only."""
    load = [s for s in summary if not SCENARIOS[s].get("idle") and not SCENARIOS[s].get("variants")
            and not SCENARIOS[s].get("skewed") and not SCENARIOS[s].get("scale")
            and not SCENARIOS[s].get("warmup")]
    pw, ph = 190, 260           # panel plot area
    left, top, gap = 70, 80, 40
    width = left + len(load) * (pw + gap) + 20 if load else 400
    height = top + ph + 124
    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">')
    o.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    o.append(f'<text x="{left}" y="26" font-size="17" font-weight="bold">Proxy CPU time per request '
             f'(µs, lower is better)</text>')
    o.append(f'<text x="{left}" y="46" fill="#555">one worker on CPU 1; origin {esc(meta.get("origin", "?"))}; '
             f'median of {meta["rounds"]} round(s) × {meta["duration_s"]} s; whiskers: min–max over rounds; '
             f'{esc(meta["started"])}</text>')
    # legend
    lx = left
    extra = [px for px in ("ringmux+poll", FLOOR) if any(px in summary[s]["proxies"] for s in load)]
    shown = PROXIES[:1] + [px for px in extra if px != FLOOR] + PROXIES[1:] + (
        [FLOOR] if FLOOR in extra else [])
    for px in shown:
        o.append(f'<rect x="{lx}" y="56" width="12" height="12" fill="{COLORS[px]}"/>')
        o.append(f'<text x="{lx + 17}" y="66">{LABELS[px]}</text>')
        lx += 17 + 7 * len(LABELS[px]) + 20
    if not load:
        o.append(f'<text x="{left}" y="{top + 40}">no load scenarios in this run</text>')
    for i, scn in enumerate(load):
        x0 = left + i * (pw + gap)
        per = summary[scn]["proxies"]
        cols = list(per)
        mixed = SCENARIOS[scn].get("mixed")
        if mixed:  # fast-URL p99, ms
            vals = [ms(per[p].get("fast_p99_us")) for p in cols]
            alls = [[ms(a) for a in per[p].get("all_fast_p99_us") or [] if a is not None] for p in cols]
            unit, what = "ms", "fast-URL p99"
        else:
            vals = [per[p].get("cpu_us_per_req") for p in cols]
            alls = [[a for a in per[p].get("all_cpu_us_per_req") or [] if a is not None] for p in cols]
            unit, what = "µs/request", "CPU"
        highs = [max(a or [0]) for a in alls]
        ymax = nice_max(max([v for v in vals + highs if v] or [1]))
        y = lambda v: top + ph - (v / ymax) * ph  # noqa: E731
        # grid + ticks
        for k in range(6):
            tv = ymax * k / 5
            ty = y(tv)
            o.append(f'<line x1="{x0}" y1="{ty:.1f}" x2="{x0 + pw}" y2="{ty:.1f}" stroke="#e5e5e5"/>')
            o.append(f'<text x="{x0 - 5}" y="{ty + 4:.1f}" text-anchor="end" font-size="10" fill="#555">'
                     f'{tv:.4g}</text>')
        o.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{top + ph}" stroke="#333"/>')
        o.append(f'<line x1="{x0}" y1="{top + ph}" x2="{x0 + pw}" y2="{top + ph}" stroke="#333"/>')
        if mixed:
            o.append(f'<text x="{x0 + 4}" y="{top - 6}" font-size="10" fill="#a00">'
                     f'fast-URL p99, ms (not CPU)</text>')
            slow_ms = SCENARIOS[scn]["slow_ms"]
            if slow_ms <= ymax:
                o.append(f'<line x1="{x0}" y1="{y(slow_ms):.1f}" x2="{x0 + pw}" y2="{y(slow_ms):.1f}" '
                         f'stroke="#a00" stroke-dasharray="4 3"/>')
                o.append(f'<text x="{x0 + pw - 2}" y="{y(slow_ms) - 3:.1f}" text-anchor="end" '
                         f'font-size="9" fill="#a00">slow URL: {slow_ms} ms</text>')
        bw = pw / (len(cols) + 1)
        for j, px in enumerate(cols):
            v = vals[j]
            bx = x0 + bw * 0.5 + j * bw
            if v is None:
                o.append(f'<text x="{bx + bw / 2:.1f}" y="{top + ph - 5}" text-anchor="middle" '
                         f'font-size="10" fill="#a00">n/a</text>')
                continue
            o.append(f'<rect x="{bx + 3:.1f}" y="{y(v):.1f}" width="{bw - 6:.1f}" '
                     f'height="{top + ph - y(v):.1f}" fill="{COLORS[px]}"><title>{scn} {LABELS[px]}: '
                     f'{what} {v:.2f} {unit}</title></rect>')
            allv = alls[j]
            if len(allv) > 1:
                cx = bx + bw / 2
                o.append(f'<line x1="{cx:.1f}" y1="{y(min(allv)):.1f}" x2="{cx:.1f}" '
                         f'y2="{y(max(allv)):.1f}" stroke="#222" stroke-width="1.2"/>')
                for a in (min(allv), max(allv)):
                    o.append(f'<line x1="{cx - 4:.1f}" y1="{y(a):.1f}" x2="{cx + 4:.1f}" '
                             f'y2="{y(a):.1f}" stroke="#222" stroke-width="1.2"/>')
            top_y = min(y(v), y(max(allv)) if allv else y(v))
            o.append(f'<text x="{bx + bw / 2:.1f}" y="{top_y - 4:.1f}" text-anchor="middle" '
                     f'font-size="10">{v:.3g}</text>')
        o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 20}" text-anchor="middle" '
                 f'font-weight="bold">{esc(scn)}</text>')
        desc = SCENARIOS[scn]["desc"]
        words, lines, cur = desc.split(), [], ""
        for w in words:
            if len(cur) + len(w) > 30:
                lines.append(cur)
                cur = w
            else:
                cur = (cur + " " + w).strip()
        lines.append(cur)
        for k, ln in enumerate(lines[:3]):
            o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 36 + 13 * k}" text-anchor="middle" '
                     f'font-size="10" fill="#555">{esc(ln)}</text>')
        rn = summary[scn]["ratios"]
        key = "fast_p99_us" if mixed else "cpu_us_per_req"
        a, b = rn.get(f"{key}_ringmux_over_nginx"), rn.get(f"{key}_ringmux_over_haproxy")
        o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 80}" text-anchor="middle" font-size="10">'
                 f'ringmux{" p99" if mixed else ""}: {fmt(a, ".2f")}× nginx, {fmt(b, ".2f")}× HAProxy</text>')
        if FLOOR in per:
            f = rn.get(f"cpu_us_per_req_ringmux_over_{FLOOR}")
            o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 94}" text-anchor="middle" font-size="10">'
                     f'{fmt(f, ".2f")}× the relay floor</text>')
    o.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
             f'proxy CPU µs per request (each panel its own scale)</text>')
    o.append('</svg>')
    return "\n".join(o) + "\n"


ROUND_COLORS = ["#d9534f", "#3465a4", "#2f8f4e", "#f0ad4e", "#75507b"]
WORKER_COLORS = ["#d9534f", "#3465a4", "#2f8f4e", "#f0ad4e", "#75507b", "#888a85"]


def svg_scale(meta, summary, scn="scale"):
    """scale's chart: running workers over time (a step line per round) with
    the load steps as bands, each annotated with its median p99 and req/s,
    scale-ups/downs marked; below it, each worker's busy fraction (first
    round) against the --scale-high/--scale-low marks."""
    sc = SCENARIOS[scn]
    s = next(iter(summary[scn]["proxies"].values()), {})
    lines = [t for t in s.get("timelines", []) if t["samples"]]
    W, left, right = 920, 64, 24
    pw = W - left - right
    top1, ph1 = 116, 210         # workers panel
    top2, ph2 = top1 + ph1 + 46, 120  # busy panel
    H = top2 + ph2 + 58
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{left}" y="26" font-size="17" font-weight="bold">ringmux elastic workers: '
         'running workers over time</text>',
         f'<text x="{left}" y="45" fill="#555">{esc(" ".join(s.get("flags") or []))}</text>',
         f'<text x="{left}" y="62" fill="#555">wrk '
         + " → ".join(str(c) for c in sc["steps"])
         + f' connections, {meta["duration_s"]} s each, on a URL the origin '
         f'({esc(meta.get("scenario_defs", {}).get(scn, {}).get("origin", "?"))}) answers after {sc["delay_ms"]} ms; /metrics every {sc["sample_ms"]} ms; '
         f'{len(lines)} round(s); {esc(meta["started"])}</text>']
    if not lines:
        o.append(f'<text x="{left}" y="{top1 + 40}">no samples (the run failed: '
                 f'{esc("; ".join(s.get("failures", []))[:120])})</text></svg>')
        return "\n".join(o) + "\n"
    t_max = max(max(x["t"] for x in t["samples"]) for t in lines)
    t_max = max([t_max] + [b for t in lines for _, b in t["steps"]])
    nmax = max(ELASTIC_CPUS, max((x["workers"] for t in lines for x in t["samples"]), default=1))
    X = lambda t: left + pw * t / t_max  # noqa: E731
    Y1 = lambda n: top1 + ph1 - ph1 * n / (nmax + 0.5)  # noqa: E731
    bmax = max([b for x in lines[0]["samples"] for b in x["busy"]] + [sc["scale_high"]])
    bmax = min(1.0, nice_max(bmax * 1.1))
    Y2 = lambda b: top2 + ph2 - ph2 * b / bmax  # noqa: E731
    # load steps: bands (the first round's times), labels, p99 per step
    steps = s.get("steps", [])
    bands = lines[0]["steps"]
    for i, (a, b) in enumerate(bands):
        shade = "#f3f3f3" if sc["steps"][i] == min(sc["steps"]) else "#fbe9e7"
        for top, ph in ((top1, ph1), (top2, ph2)):
            o.append(f'<rect x="{X(a):.1f}" y="{top}" width="{X(b) - X(a):.1f}" height="{ph}" '
                     f'fill="{shade}"/>')
        cx = (X(a) + X(b)) / 2
        o.append(f'<text x="{cx:.1f}" y="{top1 - 24}" text-anchor="middle" font-weight="bold">'
                 f'{sc["steps"][i]} connections</text>')
        st = steps[i] if i < len(steps) else {}
        o.append(f'<text x="{cx:.1f}" y="{top1 - 8}" text-anchor="middle" font-size="11">'
                 f'p99 {fmt(ms(st.get("p99_us")), ".2f")} ms · {fmt(st.get("rps"), ",.0f")} req/s</text>')
        o.append(f'<text x="{cx:.1f}" y="{top1 + 14}" text-anchor="middle" font-size="10" '
                 f'fill="#555">workers {fmt(st.get("workers_start"), ".0f")} → '
                 f'{fmt(st.get("workers_end"), ".0f")}; CPU {fmt(st.get("cpu_us_per_req"), ".1f")} '
                 'µs/req</text>')
    for a, _ in bands[1:]:
        o.append(f'<line x1="{X(a):.1f}" y1="{top1}" x2="{X(a):.1f}" y2="{top2 + ph2}" '
                 'stroke="#999" stroke-dasharray="3 3"/>')
    # workers panel: grid, axis, one step line per round, scale events
    for n in range(0, nmax + 1):
        o.append(f'<line x1="{left}" y1="{Y1(n):.1f}" x2="{left + pw}" y2="{Y1(n):.1f}" '
                 'stroke="#e2e2e2"/>')
        o.append(f'<text x="{left - 6}" y="{Y1(n) + 4:.1f}" text-anchor="end" fill="#555">{n}</text>')
    o.append(f'<text transform="translate(20,{top1 + ph1 / 2}) rotate(-90)" text-anchor="middle">'
             'running workers</text>')
    for k, t in enumerate(lines):
        color = ROUND_COLORS[k % len(ROUND_COLORS)]
        dy = -3 * k  # rounds that agree would hide each other: 3 px apart
        pts, prev = [], None
        for x in t["samples"]:
            if prev is not None:
                pts.append(f'{X(x["t"]):.1f},{Y1(prev) + dy:.1f}')
            pts.append(f'{X(x["t"]):.1f},{Y1(x["workers"]) + dy:.1f}')
            prev = x["workers"]
        pts.append(f'{X(t_max):.1f},{Y1(prev) + dy:.1f}')
        o.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" '
                 f'stroke-width="{2.5 if k == 0 else 1.5}" stroke-linejoin="round" '
                 f'opacity="{1 if k == 0 else 0.8}"/>')
        for a, b in zip(t["samples"], t["samples"][1:]):
            for key, mark, dy in (("ups", "▲ up", -6), ("downs", "▼ down", 14)):
                if b[key] > a[key]:
                    o.append(f'<text x="{X(b["t"]):.1f}" y="{Y1(b["workers"]) + dy:.1f}" '
                             f'font-size="10" fill="{color}" text-anchor="middle">{mark}</text>')
    if len(lines) > 1:
        lx = left + pw - 80 * len(lines)
        for k, t in enumerate(lines):
            o.append(f'<rect x="{lx + 80 * k}" y="{top1 + ph1 - 16}" width="12" height="3" '
                     f'fill="{ROUND_COLORS[k % len(ROUND_COLORS)]}"/>')
            o.append(f'<text x="{lx + 80 * k + 16}" y="{top1 + ph1 - 11}" font-size="10">'
                     f'round {t["round"]}</text>')
    o.append(f'<line x1="{left}" y1="{top1}" x2="{left}" y2="{top1 + ph1}" stroke="#333"/>')
    o.append(f'<line x1="{left}" y1="{top1 + ph1}" x2="{left + pw}" y2="{top1 + ph1}" stroke="#333"/>')
    # busy panel: first round, one line per worker slot, the marks
    for k in range(6):
        b = bmax * k / 5
        o.append(f'<line x1="{left}" y1="{Y2(b):.1f}" x2="{left + pw}" y2="{Y2(b):.1f}" '
                 'stroke="#e2e2e2"/>')
        o.append(f'<text x="{left - 6}" y="{Y2(b) + 4:.1f}" text-anchor="end" font-size="10" '
                 f'fill="#555">{b:.2g}</text>')
    for name, v in (("--scale-high", sc["scale_high"]), ("--scale-low", sc["scale_low"])):
        o.append(f'<line x1="{left}" y1="{Y2(v):.1f}" x2="{left + pw}" y2="{Y2(v):.1f}" '
                 'stroke="#a00" stroke-dasharray="6 4"/>')
        o.append(f'<text x="{left + pw - 4}" y="{Y2(v) - 3:.1f}" text-anchor="end" font-size="10" '
                 f'fill="#a00">{name} {v}</text>')
    slots = max((len(x["busy"]) for x in lines[0]["samples"]), default=0)
    for w in range(slots):
        pts = " ".join(f'{X(x["t"]):.1f},{Y2(x["busy"][w] if w < len(x["busy"]) else 0):.1f}'
                       for x in lines[0]["samples"])
        color = WORKER_COLORS[w % len(WORKER_COLORS)]
        o.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.3"/>')
        o.append(f'<rect x="{left + 8 + 80 * w}" y="{top2 + 6}" width="12" height="3" fill="{color}"/>')
        o.append(f'<text x="{left + 24 + 80 * w}" y="{top2 + 11}" font-size="10">worker {w}</text>')
    o.append(f'<text transform="translate(20,{top2 + ph2 / 2}) rotate(-90)" text-anchor="middle" '
             'font-size="11">busy fraction</text>')
    o.append(f'<text x="{left}" y="{top2 - 8}" font-size="11" fill="#555">each worker\'s busy '
             'fraction (CPU time / wall time'
             + (', round 1' if len(lines) > 1 else '') + '; 0 while stopped)</text>')
    o.append(f'<line x1="{left}" y1="{top2}" x2="{left}" y2="{top2 + ph2}" stroke="#333"/>')
    o.append(f'<line x1="{left}" y1="{top2 + ph2}" x2="{left + pw}" y2="{top2 + ph2}" stroke="#333"/>')
    step_s = next(v for v in (1, 2, 5, 10, 15, 30, 60, 120) if t_max / v <= 16)
    t = 0
    while t <= t_max + 1e-9:
        o.append(f'<line x1="{X(t):.1f}" y1="{top2 + ph2}" x2="{X(t):.1f}" y2="{top2 + ph2 + 4}" '
                 'stroke="#333"/>')
        o.append(f'<text x="{X(t):.1f}" y="{top2 + ph2 + 17}" text-anchor="middle" font-size="10" '
                 f'fill="#555">{t:g}</text>')
        t += step_s
    o.append(f'<text x="{left + pw / 2}" y="{top2 + ph2 + 34}" text-anchor="middle">seconds since '
             'the first step started</text>')
    o.append(f'<text x="{left}" y="{H - 8}" font-size="10" fill="#555">scale-ups '
             f'{fmt(s.get("scale_ups"), ".0f")}, scale-downs {fmt(s.get("scale_downs"), ".0f")}, '
             f'errors {s.get("errors", "–")} (median over rounds); p99 and req/s: median per step'
             '</text>')
    o.append('</svg>')
    return "\n".join(o) + "\n"


def svg_warmup(meta, summary, scn="warmup"):
    """warmup's chart: p99 per phase, a bar per proxy (whiskers: min-max
    over rounds), max latency and B's share written under each bar."""
    per = summary[scn]["proxies"]
    cols = [px for px in per if per[px].get("phases")]
    names = ["before", "cold", "ramp", "after"]
    colors = {"ringmux+reload": COLORS["ringmux"], "haproxy+slowstart": COLORS["haproxy"]}
    W, left, top, ph = 760, 70, 104, 260
    gw = (W - left - 20) / len(names)
    H = top + ph + 96
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{left}" y="26" font-size="17" font-weight="bold">An upstream added under load: '
         'p99 latency per phase (ms, lower is better)</text>',
         f'<text x="{left}" y="45" fill="#555">{SCENARIOS[scn]["conns"]} connections; B added at the '
         f'start of "cold", ready {SCENARIOS[scn]["ready_after_ms"] / 1000:g} s later, '
         f'{SCENARIOS[scn]["slow_start_s"]} s slow start</text>',
         f'<text x="{left}" y="61" fill="#555">median of {meta["rounds"]} round(s); '
         f'whiskers: min–max over rounds; {esc(meta["started"])}</text>']
    lx = left
    for px in cols:
        o.append(f'<rect x="{lx}" y="70" width="12" height="12" fill="{colors.get(px, "#888")}"/>')
        o.append(f'<text x="{lx + 17}" y="80">{esc(WARMUP_LABELS.get(px, px))}</text>')
        lx += 100
    if not cols:
        o.append(f'<text x="{left}" y="{top + 40}">no phases measured</text></svg>')
        return "\n".join(o) + "\n"
    by = {px: {st["phase"]: st for st in per[px]["phases"]} for px in cols}
    vals = [ms(x) for px in cols for st in by[px].values()
            for x in [st.get("p99_us")] + st.get("all_p99_us", []) if x is not None]
    ymax = nice_max(max(vals or [1]))
    y = lambda v: top + ph - (v / ymax) * ph  # noqa: E731
    for k in range(6):
        tv = ymax * k / 5
        o.append(f'<line x1="{left}" y1="{y(tv):.1f}" x2="{W - 20}" y2="{y(tv):.1f}" stroke="#e5e5e5"/>')
        o.append(f'<text x="{left - 5}" y="{y(tv) + 4:.1f}" text-anchor="end" font-size="10" '
                 f'fill="#555">{tv:.4g}</text>')
    o.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    o.append(f'<line x1="{left}" y1="{top + ph}" x2="{W - 20}" y2="{top + ph}" stroke="#333"/>')
    bw = gw / (len(cols) + 1)
    for i, name in enumerate(names):
        x0 = left + i * gw
        for j, px in enumerate(cols):
            st = by[px].get(name)
            bx = x0 + bw * 0.5 + j * bw
            if not st or st.get("p99_us") is None:
                o.append(f'<text x="{bx + bw / 2:.1f}" y="{top + ph - 5}" text-anchor="middle" '
                         'font-size="10" fill="#a00">n/a</text>')
                continue
            v = ms(st["p99_us"])
            o.append(f'<rect x="{bx + 4:.1f}" y="{y(v):.1f}" width="{bw - 8:.1f}" '
                     f'height="{top + ph - y(v):.1f}" fill="{colors.get(px, "#888")}"><title>{name} '
                     f'{esc(WARMUP_LABELS.get(px, px))}: p99 {v:.2f} ms</title></rect>')
            allv = [ms(a) for a in st.get("all_p99_us", []) if a is not None]
            cx = bx + bw / 2
            if len(allv) > 1:
                o.append(f'<line x1="{cx:.1f}" y1="{y(min(allv)):.1f}" x2="{cx:.1f}" '
                         f'y2="{y(max(allv)):.1f}" stroke="#222" stroke-width="1.2"/>')
            top_y = min([y(v)] + [y(a) for a in allv])
            o.append(f'<text x="{cx:.1f}" y="{top_y - 4:.1f}" text-anchor="middle" '
                     f'font-size="10">{v:.3g}</text>')
            bs = st.get("B_share")
            o.append(f'<text x="{cx:.1f}" y="{top + ph + 44}" text-anchor="middle" '
                     f'font-size="9" fill="#555">max {fmt(ms(st.get("max_us")), ".3g")}</text>')
            o.append(f'<text x="{cx:.1f}" y="{top + ph + 56}" text-anchor="middle" font-size="9" '
                     f'fill="#555">B {fmt(bs and 100 * bs, ".0f")}%</text>')
        o.append(f'<text x="{x0 + gw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle" '
                 f'font-weight="bold">{name}</text>')
        o.append(f'<text x="{x0 + gw / 2:.1f}" y="{top + ph + 30}" text-anchor="middle" '
                 f'font-size="10" fill="#555">{esc(PHASE_WHAT.get(name, ""))}</text>')
    o.append(f'<text x="{left}" y="{H - 8}" font-size="10" fill="#555">under each bar: max latency '
             '(ms) and the share of the phase\'s requests B answered (counted at the origins)</text>')
    o.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
             'p99 latency, ms</text>')
    o.append('</svg>')
    return "\n".join(o) + "\n"


# ------------------------------------------------------------------- main

def observed_note(r):
    """The progress line's tail for the observability variants and skewed."""
    if "upstreams" in r:
        x = r["upstreams"]
        return (f"; fast upstream {fmt(x['fast_share'] and 100 * x['fast_share'], '.1f')}% "
                f"({x['fast']:,} fast / {x['slow']:,} slow at the origins, "
                f"{x['origin_requests'] - x['wrk_requests']:+,} vs wrk)")
    if "access_log" in r:
        x = r["access_log"]
        return (f"; access log {x['lines']:,} lines for {x['requests']:,} requests "
                f"({x['diff']:+,}{'' if x['close'] else ', NOT close'})")
    if "admin_scrapes" in r:
        x = r["admin_scrapes"]
        return f"; {x['scrapes']} scrapes, {x['gets']} GETs ok, {x['failures']} failed"
    return ""


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


def main():
    global RINGMUX, ORIGIN, RELAY
    ap = argparse.ArgumentParser(prog="bench/run.sh")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up seconds before each run (default 2, or 1 when duration < 5)")
    ap.add_argument("--origin", choices=("nginx", "ringmux"), default="nginx",
                    help="the origin on CPU 0: nginx (default; one worker, the echo module for "
                         "the delayed URLs) or ringmux (ringmux-origin, thread per connection)")
    ap.add_argument("--no-floor", action="store_true",
                    help="do not build or measure the relay floor")
    ap.add_argument("--with-poll", action="store_true",
                    help="also run ringmux --busy-poll 20 (ringmux+poll) in every scenario "
                         "that runs plain ringmux")
    ap.add_argument("--out", default=RESULTS, help="results directory (default bench/results)")
    ap.add_argument("--no-save", action="store_true",
                    help="write no result files; print the Markdown only")
    ap.add_argument("scenarios", nargs="*", metavar="scenario",
                    help="any of: " + " ".join(ORDER) + " (default: " + " ".join(DEFAULT)
                    + "; " + " and ".join(s for s in ORDER if SCENARIOS[s].get("opt_in"))
                    + " run only when named)")
    a = ap.parse_args()
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; choose from: {' '.join(ORDER)}")
    if a.rounds < 1 or a.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    scenarios = [s for s in ORDER if s in a.scenarios] if a.scenarios else DEFAULT
    warm = a.warmup if a.warmup is not None else (2 if a.duration >= 5 else 1)
    warm = int(round(warm))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    for exe in (RINGMUX, ORIGIN) if a.origin == "ringmux" else (RINGMUX,):
        if not os.access(exe, os.X_OK):  # noqa
            sys.exit(f"missing {exe}: run bench/run.sh (it builds with cargo build --release)")

    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "?"
    meta = {
        "started": started, "rounds": a.rounds, "duration_s": a.duration, "warmup_s": warm,
        "scenarios": scenarios, "fd_limit": fd_limit, "git": git,
        "kernel": os.uname().release, "cpus": os.cpu_count(), "clk_tck": TICK,
        "versions": {"nginx": tool_version(["nginx", "-v"]),
                     "haproxy": tool_version(["haproxy", "-v"]),
                     "wrk": tool_version(["wrk", "-v"])},
        "origin": a.origin,
        "placement": ("proxy and relay floor: taskset -c 1 (one worker/thread); wrk, "
                      f"origin ({a.origin}), harness: CPU 0"),
        "scenario_defs": {},
        "origins": {},
    }
    if fd_limit < 65536:
        log(f"note: open-file limit is {fd_limit} (<65536); nginx gets worker_rlimit_nofile "
            f"{min(65536, fd_limit)}, HAProxy will warn that it cannot raise its limit")
    floor_wanted = not a.no_floor and any(SCENARIOS[s].get("floor") for s in scenarios)
    n_runs = sum(len(SCENARIOS[s].get("variants") or SCENARIOS[s].get("proxies") or PROXIES)
                 + (1 if floor_wanted and SCENARIOS[s].get("floor") else 0)
                 for s in scenarios if not SCENARIOS[s].get("idle"))
    n_skewed = len(SCENARIOS["skewed"]["proxies"]) * ("skewed" in scenarios)  # + ~1.5 s counting
    n_scale_extra = (len(SCENARIOS["scale"]["steps"]) - 1) * ("scale" in scenarios)  # more steps
    # warmup: its phases last longer than --duration; + ~0.5 s for the origins
    n_warmup_extra = (len(SCENARIOS["warmup"]["proxies"])
                      * (sum(n for _, n in warmup_phases(SCENARIOS["warmup"], a.duration))
                         - a.duration + 0.5)) * ("warmup" in scenarios)
    est = int(a.rounds * (n_runs * (a.duration + warm + 1) + 1.5 * n_skewed
                          + n_scale_extra * a.duration + n_warmup_extra
                          + 3 * (warm + 8) * ("idle" in scenarios)))
    log(f"scenarios: {' '.join(scenarios)}; origin {a.origin}; {a.rounds} round(s) x {a.duration}s "
        f"(+{warm}s warm-up); about {est // 60} min {est % 60} s")

    tmp = tempfile.mkdtemp(prefix="ringmux-bench-")
    os.chmod(tmp, 0o755)
    # Run copies of the binaries: a rebuild in target/ during the run (another
    # cargo build) must not change what is measured half-way.
    import hashlib
    for name in ("RINGMUX", "ORIGIN"):
        src = globals()[name]
        if not os.access(src, os.X_OK):
            continue  # ringmux-origin, not needed with --origin nginx (checked on use)
        dst = os.path.join(tmp, os.path.basename(src))
        shutil.copy2(src, dst)
        globals()[name] = dst
        with open(dst, "rb") as f:
            meta.setdefault("binaries_sha256", {})[os.path.basename(src)] = \
                hashlib.sha256(f.read()).hexdigest()[:16]
    runs = []
    interrupted = None
    origins = Origins(tmp, fd_limit)
    try:
        origins.get(a.origin)
        meta["origin_desc"] = origins.describe(a.origin)
        if floor_wanted:
            RELAY, where = build_relay(tmp)
            if RELAY:
                with open(RELAY, "rb") as f:
                    meta.setdefault("binaries_sha256", {})["relay"] = \
                        hashlib.sha256(f.read()).hexdigest()[:16]
                meta["relay_floor"] = {"binary": "relay", "src": where, "scenarios": []}
                log(f"relay floor built from {where}")
            else:
                meta["relay_floor"] = {"reason": where}
                log(f"relay floor skipped: {where}")
        elif a.no_floor:
            meta["relay_floor"] = {"reason": "--no-floor"}
        for scn in scenarios:
            sc = SCENARIOS[scn]
            kind = a.origin
            if sc.get("echo_origin"):
                # nginx + echo_sleep wherever possible (see start_nginx_origin);
                # otherwise ringmux-origin ?delay=.
                kind = "nginx" if origins.has_echo() else "ringmux"
                if kind == "ringmux":
                    log(f"{scn}: no echo module ({origins.echo_reason}); using ringmux-origin ?delay=")
            sk = None
            if sc.get("skewed"):
                # Two origins of their own (SkewedOrigin): nginx + echo_sleep
                # where it works, else two ringmux-origin --delay.
                sk = origins.skewed(sc["delays_ms"])
                kind = sk.kind
                if kind == "ringmux":
                    log(f"{scn}: no echo module ({origins.echo_reason}); using two "
                        "ringmux-origin --delay")
            if sc.get("warmup"):
                kind = "ringmux"  # two ringmux-origin of its own (WarmupOrigins), per run
            if sc.get("mixed") and kind == "nginx" and not origins.has_echo():
                why = (f"the nginx origin needs the echo module for the slow URL: "
                       f"{origins.echo_reason}; --origin ringmux runs it with ?delay=")
                meta.setdefault("skipped", {})[scn] = why
                log(f"{scn}: skipped ({why})")
                continue
            sc = dict(sc, path=resolve(sc.get("path", "/"), kind))
            if "slow_path" in sc:
                sc["slow_path"] = resolve(sc["slow_path"], kind)
            meta["scenario_defs"][scn] = dict(sc, origin=kind)
            paths = [f"`{sc['path']}`"] + ([f"`{sc['slow_path']}`"] if "slow_path" in sc else [])
            meta["origins"][scn] = ("nginx + echo module (echo_sleep)" if kind == "nginx" and (
                sc.get("echo_origin") or sc.get("mixed")) else
                "nginx" if kind == "nginx" else "ringmux-origin") + " " + " + ".join(paths)
            if sk:
                meta["origins"][scn] = sk.describe() + "; path " + " + ".join(paths)
            if sc.get("warmup"):
                meta["origins"][scn] = (
                    f"two ringmux-origin --size 20 --delay {sc['delay_ms']}, A and B, fresh per "
                    f"run (B with --ready-after {sc['ready_after_ms']}, started just before the "
                    "cold phase); requests counted with GET /stats; path " + " + ".join(paths))
                meta["scenario_defs"][scn]["phases"] = warmup_phases(sc, a.duration)
            proxies = (sc.get("variants") or sc.get("proxies")
                       or PROXIES + ([FLOOR] if sc.get("floor") and RELAY else []))
            if a.with_poll and "ringmux" in proxies and "ringmux+poll" not in proxies:
                proxies = list(proxies)
                proxies.insert(proxies.index("ringmux") + 1, "ringmux+poll")
            if FLOOR in proxies:
                meta["relay_floor"]["scenarios"].append(scn)
            for rnd in range(1, a.rounds + 1):
                for px in proxies:
                    for attempt in (1, 2):
                        wo, why = None, None
                        if sc.get("skewed"):
                            sk = origins.skewed(sc["delays_ms"])  # restarted if it died
                            proxy = Proxy(px, sk.addrs, tmp, fd_limit,
                                          balance=None if px.startswith("ringmux")
                                          else sc["peer_balance"])
                        elif sc.get("warmup"):
                            wo = WarmupOrigins(tmp, sc)  # A now, B in the run
                            why = wo.start("A")
                            proxy = Proxy(px, wo.addrs.get("A"), tmp, fd_limit)
                        else:
                            proxy = Proxy(px, origins.get(kind), tmp, fd_limit)
                        t = time.time()
                        if why:
                            r = {"proxy": px, "error": f"origin A: {why}"}
                        elif not proxy.start():
                            r = {"proxy": px, "error": f"failed to start: {proxy.error}"}
                        else:
                            try:
                                r = (measure_idle(proxy, sc, warm) if sc.get("idle")
                                     else measure_mixed(proxy, sc, a.duration, warm) if sc.get("mixed")
                                     else measure_observed(proxy, sc, a.duration, warm)
                                     if sc.get("variants")
                                     else measure_skewed(proxy, sc, a.duration, warm, sk)
                                     if sc.get("skewed")
                                     else measure_scale(proxy, sc, a.duration, warm)
                                     if sc.get("scale")
                                     else measure_warmup(proxy, sc, a.duration, warm, wo)
                                     if sc.get("warmup")
                                     else measure_load(proxy, sc, a.duration, warm))
                            finally:
                                proxy.stop()
                        if wo is not None:
                            alive = wo.alive() or why is not None  # (A never started: no retry)
                            wo.stop()
                            if alive:
                                break
                        elif sk.alive() if sc.get("skewed") else origins.alive(kind):
                            break
                        # The origin died under this run: the run measured
                        # nothing useful. Restart the origin and redo it once.
                        r.setdefault("error", "origin died during the run")
                        log(f"[{scn} r{rnd} {px}] origin died during the run"
                            + ("; retrying" if attempt == 1 else ""))
                    r.update(scenario=scn, round=rnd, origin=kind)
                    runs.append(r)
                    if "error" in r:
                        log(f"[{scn} r{rnd} {px}] ERROR {r['error'][:300]}")
                    elif sc.get("idle"):
                        log(f"[{scn} r{rnd} {px}] {r['connections']} conns, RSS "
                            f"{r['rss_before_kb']}→{r['rss_after_kb']} KiB = "
                            f"{fmt(r['rss_growth_bytes_per_conn'], '.0f')} B/conn, "
                            f"errors {r['errors']} ({time.time() - t:.0f}s)")
                    elif sc.get("scale"):
                        log(f"[{scn} r{rnd} {px}] " + "; ".join(
                            f"{st['conns']} conns: {st['rps']:,.0f} req/s p99 "
                            f"{fmt(ms(st['latency'].get('p99_us')), '.2f')} ms, "
                            f"{fmt(st['cpu_us_per_req'], '.1f')} µs CPU/req, workers "
                            f"{st['workers_start']}→{st['workers_end']}, busy "
                            f"{fmt(st['busy_mean'], '.2f')}" for st in r["steps"])
                            + f"; {r['scale_ups']} up / {r['scale_downs']} down, errors "
                            f"{r['errors']}, {r['sampler']['samples']} samples "
                            f"({r['sampler']['failures']} failed)")
                    elif sc.get("warmup"):
                        log(f"[{scn} r{rnd} {px}] " + "; ".join(
                            f"{st['phase']} {st['rps']:,.0f} req/s p99 "
                            f"{fmt(ms(st['latency'].get('p99_us')), '.2f')} max "
                            f"{fmt(ms(st['latency'].get('max_us')), '.1f')} ms B "
                            f"{fmt(st['shares']['B'] and 100 * st['shares']['B'], '.1f')}%"
                            for st in r["phases"])
                            + f"; B added in {r['reload']['took_ms']:.1f} ms, ready at "
                            f"{fmt(r.get('b_ready_s'), '+.2f')} s; errors {r['errors']}")
                    elif sc.get("mixed"):
                        f, sl = r["fast"], r["slow"]
                        log(f"[{scn} r{rnd} {px}] fast {f['rps']:,.0f} req/s p50 "
                            f"{fmt(ms(f['latency'].get('p50_us')), '.2f')} p99 "
                            f"{fmt(ms(f['latency'].get('p99_us')), '.2f')} max "
                            f"{fmt(ms(f['latency'].get('max_us')), '.1f')} ms; slow "
                            f"{sl['rps']:,.1f} req/s p50 {fmt(ms(sl['latency'].get('p50_us')), '.1f')} ms; "
                            f"{fmt(r['cpu_us_per_req'], '.2f')} µs CPU/req, errors {r['errors']}")
                    else:
                        lat = r["latency"]
                        log(f"[{scn} r{rnd} {px}] {r['rps']:,.0f} req/s, "
                            f"{fmt(r['cpu_us_per_req'], '.2f')} µs CPU/req, p99 "
                            f"{fmt(ms(lat.get('p99_us')), '.2f')} ms, RSS "
                            f"{r['peak_rss_kb'] / 1024:.1f} MiB, errors {r['errors']}"
                            + observed_note(r))
            if sk:
                origins.stop_skewed()  # not left idle on CPU 0 for what follows
    except (SystemExit, KeyboardInterrupt) as e:
        interrupted = f"interrupted ({e!r}) after {len(runs)} runs"
        log(interrupted + "; writing what was measured")
    finally:
        stop_all()
        subprocess.run(["rm", "-rf", tmp])
    if origins.restarts:
        meta["origin_restarts"] = origins.restarts
    meta.setdefault("origin_desc", origins.describe(a.origin))
    meta["echo_module"] = (origins.echo_reason or
                           ("loaded" if "nginx" in origins.procs else "present, not used"))
    if interrupted:
        meta["interrupted"] = interrupted
    scenarios = [s for s in scenarios if any(r["scenario"] == s for r in runs)]
    if not runs:
        sys.exit(1)

    summary = summarize(runs, scenarios)
    meta["finished"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    doc = {"meta": meta, "summary": summary, "runs": runs}
    md = markdown(meta, summary)
    print(md)
    if a.no_save:
        log("--no-save: no result files written")
        return
    os.makedirs(a.out, exist_ok=True)
    svg = svg_chart(meta, summary)
    # latest.* is what the README shows: only a run of every default
    # scenario replaces it; a partial or opt-in run writes its stamped
    # files (and the latest chart of an opt-in scenario it ran).
    full = set(DEFAULT) <= set(summary)
    for base in (["latest"] if full else []) + [stamp]:
        with open(os.path.join(a.out, base + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(a.out, base + ".md"), "w") as f:
            f.write(md)
        with open(os.path.join(a.out, base + ".svg"), "w") as f:
            f.write(svg)
    charts = {"scale": svg_scale, "warmup": svg_warmup}  # their own charts
    extra = []
    for name, draw in charts.items():
        if name in summary:
            chart = draw(meta, summary)
            for base in ("latest", stamp):
                with open(os.path.join(a.out, f"{base}-{name}.svg"), "w") as f:
                    f.write(chart)
            extra.append(f"latest-{name}.svg")
    log(f"wrote {a.out}/{stamp}.{{json,md,svg}}"
        + (" and latest.{json,md,svg}" if full else " (latest.* kept: not every default scenario ran)")
        + (", " + ", ".join(extra) if extra else ""))


if __name__ == "__main__":
    main()
