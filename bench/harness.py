#!/usr/bin/env python3
"""Side-by-side benchmark harness for ringmux, nginx and HAProxy.

Started by bench/run.sh (which installs tools, builds ringmux, raises the fd
limit and pins this process to CPU 0). Standard library only.

Layout of a run:
  * one ringmux-origin (--size 20) pinned to CPU 0, shared by all runs;
  * for every (scenario, round, proxy) a FRESH proxy process tree pinned to
    CPU 1 (one worker / thread), a warm-up, then the measured wrk run on CPU 0;
    the proxy is stopped afterwards (so its VmHWM is the peak of that run);
  * rounds are interleaved: ringmux nginx haproxy ringmux nginx haproxy ...;
  * medians over rounds, ratios ringmux/nginx and ringmux/haproxy;
  * bench/results/latest.{json,md,svg} plus timestamped copies.
"""
import argparse
import datetime as dt
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RINGMUX = os.path.join(ROOT, "target/release/ringmux")
ORIGIN = os.path.join(ROOT, "target/release/ringmux-origin")
RESULTS = os.path.join(BENCH, "results")
LUA_REPORT = os.path.join(BENCH, "wrk/report.lua")
LUA_PIPE = os.path.join(BENCH, "wrk/pipeline.lua")
PROXIES = ["ringmux", "nginx", "haproxy"]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SCENARIOS = {
    "small": dict(conns=64, path="/", depth=1,
                  desc="64 keep-alive connections, 20-byte bodies"),
    "many": dict(conns=2000, path="/", depth=1,
                 desc="2,000 keep-alive connections, 20-byte bodies"),
    "pipeline": dict(conns=64, path="/", depth=16,
                     desc="64 connections, 16 pipelined requests each"),
    "large": dict(conns=16, path="/?size=1048576", depth=1,
                  desc="16 connections, 1 MiB bodies"),
    # Served by nginx with the echo module where it is installed (see
    # start_echo_origin); otherwise by ringmux-origin with ?delay=5.
    "slow-origin": dict(conns=64, path="/?delay=5", depth=8, delay_ms=5, echo_origin=True,
                        desc="origin +5 ms per response, 64 connections x 8 pipelined"),
    "idle": dict(conns=10000, idle=True,
                 desc="10,000 idle keep-alive connections (one request each): RSS growth"),
}
ORDER = list(SCENARIOS)


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


def start_echo_origin(tmp, delay_ms):
    """An nginx origin on CPU 0 that answers every request with a 20-byte
    body after `delay_ms` (echo_sleep): a delayed response costs nginx's
    event loop a timer, where ringmux-origin spends a thread wake-up and a
    sleep. With 512 delayed requests in flight, ringmux-origin and wrk
    saturate CPU 0 at about 40k responses/s, which would bound every
    proxy's batch latency at about 13 ms whatever the proxy does.
    Returns (process, address), or (None, reason)."""
    if not os.path.exists(ECHO_MODULE):
        return None, f"{ECHO_MODULE} missing (Debian: libnginx-mod-http-echo)"
    d = os.path.join(tmp, "echo-origin")
    for sub in ("cb", "px", "fc", "uw", "sc"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""load_module {ECHO_MODULE};
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log crit;
worker_rlimit_nofile 20000;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path {d}/cb;
    proxy_temp_path {d}/px;
    fastcgi_temp_path {d}/fc;
    uwsgi_temp_path {d}/uw;
    scgi_temp_path {d}/sc;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            echo_sleep {delay_ms / 1000:.3f};
            echo -n "abcdefghijklmnopqrst";
        }}
    }}
}}
""")
    with open(os.path.join(d, "out"), "w") as out, open(os.path.join(d, "err"), "w") as err:
        p = spawn(["taskset", "-c", "0", "nginx", "-c", conf, "-p", d + "/"], out, err)
    if not wait_port(port, p):
        stop(p)
        return None, "nginx with the echo module did not start"
    return p, f"127.0.0.1:{port}"


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
    length = 0
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status, body


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
    def __init__(self, kind, origin, tmp, fd_limit):
        self.kind, self.origin, self.fd_limit = kind, origin, fd_limit
        self.dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp)
        os.chmod(self.dir, 0o755)
        self.proc, self.addr, self.error = None, None, None

    def start(self):
        out = open(os.path.join(self.dir, "stdout.log"), "w")
        err = open(os.path.join(self.dir, "stderr.log"), "w")
        try:
            getattr(self, "_start_" + self.kind)(out, err)
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
        self.proc = spawn(["taskset", "-c", "1", RINGMUX, "--listen", "127.0.0.1:0",
                           "--workers", "1", "--no-pin", "--upstream", self.origin],
                          out, err)
        self.addr = wait_line(out.name, "listening on", self.proc)
        if not self.addr:
            self.error = "ringmux did not print 'listening on'"

    def _start_nginx(self, out, err):
        port = free_port()
        d = self.dir
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
            os.chmod(os.path.join(d, sub), 0o777)  # the worker may run as nobody
        conf = os.path.join(d, "nginx.conf")
        nofile = min(65536, self.fd_limit)
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
    upstream origin {{
        server {self.origin};
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
        with open(conf, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn {maxconn}

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

backend be
    server origin {self.origin}
""")
        self.proc = spawn(["taskset", "-c", "1", "haproxy", "-db", "-f", conf], out, err)
        if wait_port(port, self.proc):
            self.addr = f"127.0.0.1:{port}"
        else:
            self.error = "haproxy did not start listening"

    def pids(self):
        return descendants(self.proc.pid) if self.proc else []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        stop(self.proc)
        self.proc = None


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


def wrk(addr, sc, secs, timeout_s=10):
    cmd = ["taskset", "-c", "0", "wrk", "-t1", f"-c{sc['conns']}", f"-d{secs}s",
           "--latency", f"--timeout", f"{timeout_s}s"]
    url = f"http://{addr}"
    if sc["depth"] > 1:
        cmd += ["-s", LUA_PIPE, url, "--", str(sc["depth"]), sc["path"]]
    else:
        cmd += ["-s", LUA_REPORT, url + sc["path"]]
    p = spawn(cmd, subprocess.PIPE, subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=secs + 60)
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


def measure_load(proxy, sc, secs, warm):
    r = {"proxy": proxy.kind}
    if warm > 0:
        _, _, err = wrk(proxy.addr, sc, warm)
        if err:
            r["error"] = "warm-up: " + err
            return r
    pids = proxy.pids()
    t0 = cpu_ticks(pids)
    bench, hist, err = wrk(proxy.addr, sc, secs)
    pids = proxy.pids()  # nginx may have restarted a worker
    t1 = cpu_ticks(pids)
    r["peak_rss_kb"] = status_kb(pids, "VmHWM")
    r["rss_end_kb"] = status_kb(pids, "VmRSS")
    r["processes"] = len(pids)
    if not proxy.alive():
        r["error"] = "proxy died during the run; " + proxy.logs()
    if err:
        r["error"] = err
        return r
    reqs = bench["requests"]
    secs_real = bench["duration_us"] / 1e6
    r.update(
        requests=reqs, duration_s=secs_real, rps=reqs / secs_real,
        cpu_s=(t1 - t0) / TICK, cpu_ticks=t1 - t0,
        cpu_us_per_req=((t1 - t0) / TICK * 1e6 / reqs) if reqs else None,
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


def summarize(runs, scenarios):
    summary = {}
    for scn in scenarios:
        sc = SCENARIOS[scn]
        per = {}
        for px in PROXIES:
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
            else:
                for key in ("rps", "cpu_us_per_req", "peak_rss_kb", "batch_mean_littles_law_us"):
                    s[key] = med(r.get(key) for r in ok)
                for key in ("p50_us", "p99_us", "p999_us", "mean_us"):
                    s[key] = med(r.get("latency", {}).get(key) for r in ok)
                s["errors"] = sum(r.get("errors", 0) for r in rs)
                s["all_cpu_us_per_req"] = [r.get("cpu_us_per_req") for r in ok]
                s["all_rps"] = [r.get("rps") for r in ok]
            per[px] = s
        ratios = {}
        keys = (["rss_growth_bytes_per_conn"] if sc.get("idle")
                else ["cpu_us_per_req", "rps", "p99_us"])
        for other in ("nginx", "haproxy"):
            for k in keys:
                a, b = per["ringmux"].get(k), per[other].get(k)
                ratios[f"{k}_ringmux_over_{other}"] = (a / b) if (a is not None and b) else None
        summary[scn] = {"proxies": per, "ratios": ratios}
    return summary


def fmt(v, spec=".1f", none="–"):
    return none if v is None else format(v, spec)


def ms(us):
    return None if us is None else us / 1000


def markdown(meta, summary):
    L = []
    L.append(f"# ringmux vs nginx vs HAProxy — {meta['started']}")
    L.append("")
    L.append(f"{meta['rounds']} interleaved round(s), {meta['duration_s']} s per measured run "
             f"(+{meta['warmup_s']} s warm-up), medians over rounds. Each proxy: one "
             "worker/thread pinned to CPU 1, a fresh process per run; wrk, the origin "
             "(ringmux-origin, 20-byte bodies; for slow-origin "
             f"{meta.get('origins', {}).get('slow-origin', 'ringmux-origin ?delay=')}) "
             "and the harness on CPU 0. "
             f"Kernel {meta['kernel']}, {meta['versions']['nginx']}, "
             f"{meta['versions']['haproxy']}, {meta['versions']['wrk']}; "
             f"ringmux {meta['git']}; open-file limit {meta['fd_limit']}.")
    L.append("")
    if meta.get("interrupted"):
        L.append(f"**Incomplete run: {meta['interrupted']}.**")
        L.append("")
    load = [s for s in summary if not SCENARIOS[s].get("idle")]
    if load:
        L.append("| scenario | proxy | req/s | CPU µs/req | p50 ms | p99 ms | p99.9 ms | mean ms | peak RSS MiB | errors |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for scn in load:
            for px in PROXIES:
                s = summary[scn]["proxies"][px]
                if not s["ok_runs"]:
                    L.append(f"| {scn} | {px} | failed: {'; '.join(s['failures']).replace(chr(10), ' ')[:200]} | | | | | | | |")
                    continue
                L.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    scn, px, fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"),
                    fmt(ms(s["p50_us"]), ".3f"), fmt(ms(s["p99_us"]), ".3f"),
                    fmt(ms(s["p999_us"]), ".3f"), fmt(ms(s["mean_us"]), ".3f"),
                    fmt(s["peak_rss_kb"] and s["peak_rss_kb"] / 1024, ".1f"),
                    s["errors"] + (len(s["failures"]) and 0)))
        L.append("")
        L.append("Ratios (ringmux ÷ peer; below 1 is better for CPU and p99, above 1 is better for req/s):")
        L.append("")
        L.append("| scenario | CPU/req ÷ nginx | CPU/req ÷ HAProxy | req/s ÷ nginx | req/s ÷ HAProxy | p99 ÷ nginx | p99 ÷ HAProxy |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for scn in load:
            r = summary[scn]["ratios"]
            L.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                scn, *(fmt(r.get(k), ".2f") + ("×" if r.get(k) is not None else "") for k in (
                    "cpu_us_per_req_ringmux_over_nginx", "cpu_us_per_req_ringmux_over_haproxy",
                    "rps_ringmux_over_nginx", "rps_ringmux_over_haproxy",
                    "p99_us_ringmux_over_nginx", "p99_us_ringmux_over_haproxy"))))
        L.append("")
    if "slow-origin" in summary:
        d = SCENARIOS["slow-origin"]["delay_ms"]
        served = meta.get("origins", {}).get("slow-origin", "ringmux-origin ?delay=")
        L.append(f"slow-origin (origin delay {d} ms, served by {served}, 8 requests "
                 "pipelined per connection): mean batch latency = time from writing the 8 requests to reading the "
                 "last of their responses (an upper bound for each request of the batch).")
        L.append("")
        L.append("| proxy | mean batch latency ms | ÷ origin delay | Little's-law check ms |")
        L.append("|---|---:|---:|---:|")
        for px in PROXIES:
            s = summary["slow-origin"]["proxies"][px]
            m = ms(s.get("mean_us"))
            L.append("| {} | {} | {} | {} |".format(
                px, fmt(m, ".2f"), fmt(m and m / d, ".1f") + ("×" if m else ""),
                fmt(ms(s.get("batch_mean_littles_law_us")), ".2f")))
        L.append("")
    if "idle" in summary:
        L.append(f"idle: {SCENARIOS['idle']['conns']:,} keep-alive client connections, each "
                 "served one request, then held open; VmRSS of all the proxy's processes "
                 "1 s after the last one opened, minus VmRSS before (after a 1 s warm-up).")
        L.append("")
        L.append("| proxy | RSS before MiB | RSS after MiB | growth bytes/conn | growth KiB/conn | ÷ ringmux | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        rm = summary["idle"]["proxies"]["ringmux"].get("rss_growth_bytes_per_conn")
        for px in PROXIES:
            s = summary["idle"]["proxies"][px]
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
    L.append("Notes:")
    L.append("- CPU µs/req: utime+stime of all the proxy's processes (nginx: master + worker) "
             "from /proc/PID/stat over the measured run, ÷ responses wrk completed.")
    L.append("- Latency: the samples wrk took, with wrk's coordinated-omission correction undone "
             "(see bench/wrk/report.lua). Under pipelining wrk takes one sample per batch "
             "(write of the batch → last response), so for `pipeline` and `slow-origin` the "
             "percentiles and the mean are per batch, not per request.")
    L.append("- errors: wrk socket errors (connect/read/write/timeout) + responses with status ≥ 400 "
             "(idle: connections that failed or were closed by the proxy).")
    L.append("- req/s is capped by CPU 0 (wrk + the thread-per-connection origin), so CPU/req is "
             "the figure that compares the proxies; req/s and latency show whether they keep up.")
    return "\n".join(L) + "\n"


COLORS = {"ringmux": "#d9534f", "nginx": "#2f8f4e", "haproxy": "#3465a4"}
LABELS = {"ringmux": "ringmux", "nginx": "nginx", "haproxy": "HAProxy"}


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
    1 MiB bodies cost ~100x more per request than 20-byte ones)."""
    load = [s for s in summary if not SCENARIOS[s].get("idle")]
    pw, ph = 190, 260           # panel plot area
    left, top, gap = 70, 80, 40
    width = left + len(load) * (pw + gap) + 20 if load else 400
    height = top + ph + 110
    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">')
    o.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    o.append(f'<text x="{left}" y="26" font-size="17" font-weight="bold">Proxy CPU time per request '
             f'(µs, lower is better)</text>')
    o.append(f'<text x="{left}" y="46" fill="#555">one worker on CPU 1; median of {meta["rounds"]} '
             f'round(s) × {meta["duration_s"]} s; whiskers: min–max over rounds; {esc(meta["started"])}</text>')
    # legend
    lx = left
    for px in PROXIES:
        o.append(f'<rect x="{lx}" y="56" width="12" height="12" fill="{COLORS[px]}"/>')
        o.append(f'<text x="{lx + 17}" y="66">{LABELS[px]}</text>')
        lx += 90
    if not load:
        o.append(f'<text x="{left}" y="{top + 40}">no load scenarios in this run</text>')
    for i, scn in enumerate(load):
        x0 = left + i * (pw + gap)
        per = summary[scn]["proxies"]
        vals = [per[p].get("cpu_us_per_req") for p in PROXIES]
        highs = [max(per[p].get("all_cpu_us_per_req") or [0]) for p in PROXIES]
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
        bw = pw / 4
        for j, px in enumerate(PROXIES):
            v = vals[j]
            bx = x0 + bw * 0.5 + j * bw
            if v is None:
                o.append(f'<text x="{bx + bw / 2:.1f}" y="{top + ph - 5}" text-anchor="middle" '
                         f'font-size="10" fill="#a00">n/a</text>')
                continue
            o.append(f'<rect x="{bx + 3:.1f}" y="{y(v):.1f}" width="{bw - 6:.1f}" '
                     f'height="{top + ph - y(v):.1f}" fill="{COLORS[px]}"><title>{scn} {LABELS[px]}: '
                     f'{v:.2f} µs/request</title></rect>')
            allv = [a for a in per[px].get("all_cpu_us_per_req") or [] if a is not None]
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
        a, b = rn.get("cpu_us_per_req_ringmux_over_nginx"), rn.get("cpu_us_per_req_ringmux_over_haproxy")
        o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 80}" text-anchor="middle" font-size="10">'
                 f'ringmux: {fmt(a, ".2f")}× nginx, {fmt(b, ".2f")}× HAProxy</text>')
    o.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
             f'proxy CPU µs per request (each panel its own scale)</text>')
    o.append('</svg>')
    return "\n".join(o) + "\n"


# ------------------------------------------------------------------- main

def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


def main():
    global RINGMUX, ORIGIN
    ap = argparse.ArgumentParser(prog="bench/run.sh")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up seconds before each run (default 2, or 1 when duration < 5)")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("scenarios", nargs="*", metavar="scenario",
                    help="any of: " + " ".join(ORDER) + " (default: all)")
    a = ap.parse_args()
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; choose from: {' '.join(ORDER)}")
    if a.rounds < 1 or a.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    scenarios = [s for s in ORDER if s in a.scenarios] if a.scenarios else ORDER
    warm = a.warmup if a.warmup is not None else (2 if a.duration >= 5 else 1)
    warm = int(round(warm))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    for exe in (RINGMUX, ORIGIN):
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
        "placement": "proxy: taskset -c 1 (one worker/thread); wrk, origin, harness: CPU 0",
        "scenario_defs": {s: SCENARIOS[s] for s in scenarios},
    }
    if fd_limit < 65536:
        log(f"note: open-file limit is {fd_limit} (<65536); nginx gets worker_rlimit_nofile "
            f"{min(65536, fd_limit)}, HAProxy will warn that it cannot raise its limit")
    n_load = sum(1 for s in scenarios if not SCENARIOS[s].get("idle"))
    est = a.rounds * 3 * (n_load * (a.duration + warm + 1) + (warm + 8) * ("idle" in scenarios))
    log(f"scenarios: {' '.join(scenarios)}; {a.rounds} round(s) x {a.duration}s "
        f"(+{warm}s warm-up); about {est // 60} min {est % 60} s")

    tmp = tempfile.mkdtemp(prefix="ringmux-bench-")
    os.chmod(tmp, 0o755)
    # Run copies of the binaries: a rebuild in target/ during the run (another
    # cargo build) must not change what is measured half-way.
    import hashlib
    import shutil
    for name in ("RINGMUX", "ORIGIN"):
        src = globals()[name]
        dst = os.path.join(tmp, os.path.basename(src))
        shutil.copy2(src, dst)
        globals()[name] = dst
        with open(dst, "rb") as f:
            meta.setdefault("binaries_sha256", {})[os.path.basename(src)] = \
                hashlib.sha256(f.read()).hexdigest()[:16]
    runs = []
    origin = None
    interrupted = None
    try:
        def start_origin():
            path = os.path.join(tmp, "origin.out")
            with open(path, "w") as out, open(os.path.join(tmp, "origin.err"), "w") as err:
                p = spawn(["taskset", "-c", "0", ORIGIN, "--listen", "127.0.0.1:0",
                           "--size", "20"], out, err)
            addr = wait_line(path, "listening on", p)
            if not addr:
                stop(p)
                sys.exit("ringmux-origin did not start")
            return p, addr

        origin, oaddr = start_origin()
        log(f"origin on {oaddr}")
        echo = None
        for scn in scenarios:
            sc = SCENARIOS[scn]
            scn_origin = None
            if sc.get("echo_origin"):
                if echo is None:
                    echo, where = start_echo_origin(tmp, sc["delay_ms"])
                    if echo is None:
                        log(f"{scn}: no echo origin ({where}); using ringmux-origin ?delay=")
                        echo = False
                    else:
                        echo_addr = where
                        log(f"{scn}: nginx echo origin on {echo_addr}")
                if echo:
                    scn_origin = echo_addr
                    sc = dict(sc, path="/")
                meta.setdefault("origins", {})[scn] = (
                    "nginx + echo module (echo_sleep)" if echo else "ringmux-origin ?delay=")
            for rnd in range(1, a.rounds + 1):
                for px in PROXIES:
                    for attempt in (1, 2):
                        if origin.poll() is not None:
                            try:
                                with open(os.path.join(tmp, "origin.err")) as f:
                                    oerr = f.read()[-300:].strip()
                            except OSError:
                                oerr = ""
                            log(f"origin died (exit {origin.returncode}; stderr: {oerr!r}); restarting it")
                            meta["origin_restarts"] = meta.get("origin_restarts", 0) + 1
                            stop(origin)
                            origin, oaddr = start_origin()
                        proxy = Proxy(px, scn_origin or oaddr, tmp, fd_limit)
                        t = time.time()
                        if not proxy.start():
                            r = {"proxy": px, "error": f"failed to start: {proxy.error}"}
                        else:
                            try:
                                r = (measure_idle(proxy, sc, warm) if sc.get("idle")
                                     else measure_load(proxy, sc, a.duration, warm))
                            finally:
                                proxy.stop()
                        if origin.poll() is None:
                            break
                        # The origin died under this run: the run measured
                        # nothing useful. Restart the origin and redo it once.
                        r.setdefault("error", "origin died during the run")
                        log(f"[{scn} r{rnd} {px}] origin died during the run"
                            + ("; retrying" if attempt == 1 else ""))
                    r.update(scenario=scn, round=rnd)
                    runs.append(r)
                    if "error" in r:
                        log(f"[{scn} r{rnd} {px}] ERROR {r['error'][:300]}")
                    elif sc.get("idle"):
                        log(f"[{scn} r{rnd} {px}] {r['connections']} conns, RSS "
                            f"{r['rss_before_kb']}→{r['rss_after_kb']} KiB = "
                            f"{fmt(r['rss_growth_bytes_per_conn'], '.0f')} B/conn, "
                            f"errors {r['errors']} ({time.time() - t:.0f}s)")
                    else:
                        lat = r["latency"]
                        log(f"[{scn} r{rnd} {px}] {r['rps']:,.0f} req/s, "
                            f"{fmt(r['cpu_us_per_req'], '.2f')} µs CPU/req, p99 "
                            f"{fmt(ms(lat.get('p99_us')), '.2f')} ms, RSS "
                            f"{r['peak_rss_kb'] / 1024:.1f} MiB, errors {r['errors']}")
    except (SystemExit, KeyboardInterrupt) as e:
        interrupted = f"interrupted ({e!r}) after {len(runs)} runs"
        log(interrupted + "; writing what was measured")
    finally:
        stop_all()
        subprocess.run(["rm", "-rf", tmp])
    if interrupted:
        meta["interrupted"] = interrupted
        scenarios = [s for s in scenarios if any(r["scenario"] == s for r in runs)]
        if not runs:
            sys.exit(1)

    summary = summarize(runs, scenarios)
    meta["finished"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    doc = {"meta": meta, "summary": summary, "runs": runs}
    os.makedirs(a.out, exist_ok=True)
    md = markdown(meta, summary)
    svg = svg_chart(meta, summary)
    for base in ("latest", stamp):
        with open(os.path.join(a.out, base + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(a.out, base + ".md"), "w") as f:
            f.write(md)
        with open(os.path.join(a.out, base + ".svg"), "w") as f:
            f.write(svg)
    print(md)
    log(f"wrote {a.out}/latest.{{json,md,svg}} and {stamp}.*")


if __name__ == "__main__":
    main()
