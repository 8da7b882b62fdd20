"""h2 (opt-in): HTTP/2 from clients, each proxy one worker on CPU 1 in
front of the plain HTTP/1.1 origin, over h2c (prior knowledge) and over TLS
(ALPN h2, the tls scenario's ECDSA P-256 certificate). Load: h2load -c 64
-m 10 (64 connections, 10 streams each) on `/` for the duration: req/s and
the proxy's CPU per request. Idle, first (the process fresh): 2,000
HTTP/2 connections, one request each, held open: the RSS each adds. The goal (issue 23): CPU/req at most
0.7x the better peer over h2c and over TLS; memory per idle HTTP/2
connection at most the better peer's."""
import re
import socket
import ssl
import struct
import subprocess
import time

from ..client import tls_context
from ..common import log
from ..load import proxy_sample
from ..procs import cpu_ticks, status_kb
from ..render import fmt, med
from .base import Scenario, register
from .tls import make_cert

KINDS = ["ringmux+h2c", "nginx+h2c", "haproxy+h2c", "ringmux+h2", "nginx+h2", "haproxy+h2"]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def url(proxy, path="/"):
    scheme = "https" if proxy.tls else "http"
    return f"{scheme}://{proxy.addr}{path}"


def h2load(proxy, sc, secs, warm):
    """One h2load run (pinned to CPU 0) with the proxy's CPU over its
    measured part."""
    r = {}
    cmd = ["taskset", "-c", "0", "h2load", "-t", "1", "-c", str(sc["conns"]),
           "-m", str(sc["streams"]), "-D", str(int(secs)),
           f"--warm-up-time={max(1, int(warm))}", url(proxy, sc["path"])]
    # (The CPU is sampled over warm-up and run both: h2load says only the
    # measured part's requests, so the warm-up's are counted at its rate.)
    t0 = cpu_ticks(proxy.pids())
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + warm + 60)
    proxy_sample(proxy, r, t0)
    text = out.stdout
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    q = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if not (m and q):
        r["error"] = "h2load: " + (text + out.stderr)[-400:]
        return r
    rps = float(m.group(2))
    done = int(q.group(3))
    r["rps"] = rps
    r["requests"] = done
    bad = sum(int(codes.group(i)) for i in (3, 4)) if codes else 0
    r["errors"] = int(q.group(5)) + int(q.group(6)) + bad
    # CPU over warm-up and run, per request at the run's rate over both.
    span = float(m.group(1)) + max(1, int(warm))
    r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / (rps * span)) if rps else None
    r["mean_ms"] = parse_ms(lat.group(3)) if lat else None
    return r


def parse_ms(text):
    """h2load's `1.23ms` / `456us` / `1.2s` in ms."""
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def h2_request(authority):
    """The client preface, an empty SETTINGS and a GET / on stream 1 (an
    HPACK block of static-table references and one literal)."""
    a = authority.encode()
    block = b"\x82\x86\x84\x01" + bytes([len(a)]) + a
    settings = struct.pack(">I", 0)[1:] + b"\x04\x00" + struct.pack(">I", 0)
    headers = (struct.pack(">I", len(block))[1:] + b"\x01\x05"
               + struct.pack(">I", 1) + block)
    return PREFACE + settings + headers


def answered(s, deadline):
    """Read frames until stream 1 ends (True) or the deadline (False)."""
    buf = b""
    while time.time() < deadline:
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + length:]
            if sid == 1 and kind in (0, 1) and flags & 1:
                return True
        s.settimeout(max(0.001, deadline - time.time()))
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            return False
        if not chunk:
            return False
        buf += chunk
    return False


def idle_h2(proxy, n, batch=100, timeout=5.0):
    """Open n HTTP/2 connections, one GET each, keep them open: the
    sockets, and how many failed."""
    host, port = proxy.addr.rsplit(":", 1)
    ctx = None
    if proxy.tls:
        ctx = tls_context()
        ctx.set_alpn_protocols(["h2"])
    req = h2_request("bench.test" if proxy.tls else proxy.addr)
    socks, failed = [], 0
    for start in range(0, n, batch):
        group = []
        for _ in range(min(batch, n - start)):
            s = socket.socket()
            s.settimeout(timeout)
            try:
                s.connect((host, int(port)))
                if ctx is not None:
                    s = ctx.wrap_socket(s, server_hostname="bench.test")
                s.sendall(req)
                group.append(s)
            except OSError:
                failed += 1
                s.close()
        deadline = time.time() + timeout
        for s in group:
            if answered(s, deadline):
                socks.append(s)
            else:
                failed += 1
                s.close()
    return socks, failed


def measure_h2(proxy, sc, st):
    """Idle first (the process fresh, as each proxy's heap is before any
    load), then the load."""
    r = {"proxy": proxy.kind}
    time.sleep(0.3)
    before = status_kb(proxy.pids(), "VmRSS")
    socks, failed = idle_h2(proxy, sc["idle_conns"])
    time.sleep(1.0)
    after = status_kb(proxy.pids(), "VmRSS")
    for s in socks:
        s.close()
    n = len(socks)
    r["idle"] = dict(connections=n, failed=failed, rss_before_kb=before, rss_after_kb=after,
                     bytes_per_conn=((after - before) * 1024 / n) if n else None)
    if n < sc["idle_conns"] * 0.99:
        r["error"] = f"only {n} of {sc['idle_conns']} HTTP/2 connections served"
        return r
    time.sleep(0.5)
    r["load"] = h2load(proxy, sc, st.secs, st.warm)
    if "error" in r["load"]:
        r["error"] = r["load"]["error"]
        return r
    r["errors"] = r["load"]["errors"] + failed
    if not proxy.alive():
        r["error"] = "proxy died; " + proxy.logs()
    return r


FIGURES = (("rps", "load", "rps"), ("cpu_us_per_req", "load", "cpu_us_per_req"),
           ("mean_ms", "load", "mean_ms"), ("idle_bytes_per_conn", "idle", "bytes_per_conn"))
GOALS = (("cpu_us_per_req", "lower", 0.7), ("idle_bytes_per_conn", "lower", 1.0))


class H2(Scenario):
    load_table = load_ratios = False

    def upstream(self, px, sc, st, kind):
        if "tls_cert" not in sc:
            sc["tls_cert"], sc["tls_key"], sc["tls_pem"] = make_cert(st.tmp)
            log(f"h2: certificate {sc['tls_cert']} (ECDSA P-256)")
        return st.origins.get(kind), None, None

    def measure(self, proxy, sc, st):
        return measure_h2(proxy, sc, st)

    def progress(self, r, t):
        lo, i = r["load"], r["idle"]
        return (f"{lo['rps']:,.0f} req/s, {fmt(lo['cpu_us_per_req'], '.2f')} µs CPU/req, "
                f"mean {fmt(lo['mean_ms'], '.2f')} ms; idle {fmt(i['bytes_per_conn'], ',.0f')} "
                f"B/conn; errors {r['errors']} ({time.time() - t:.0f}s)")

    def estimate_s(self, secs, warm, floor):
        return len(KINDS) * (secs + warm + 15)

    def summarize_proxy(self, s, rs, ok):
        for key, part, field in FIGURES:
            s[key] = med(r[part].get(field) for r in ok)
            s["all_" + key] = [r[part].get(field) for r in ok]
        s["errors"] = sum(r.get("errors", 0) for r in rs)

    def ratios(self, runs, per):
        out = {}
        for wire in ("h2c", "h2"):
            mine = per.get(f"ringmux+{wire}", {})
            for key, better, _ in GOALS:
                peers = [per.get(f"{p}+{wire}", {}).get(key) for p in ("nginx", "haproxy")]
                peers = [v for v in peers if v]
                best = min(peers) if peers else None
                a = mine.get(key)
                out[f"{wire}_{key}_ringmux_over_better_peer"] = (
                    (a / best) if (a is not None and best) else None)
                for p in ("nginx", "haproxy"):
                    b = per.get(f"{p}+{wire}", {}).get(key)
                    out[f"{wire}_{key}_ringmux_over_{p}"] = (a / b) if (a is not None and b) else None
        return out

    def markdown(self, summary, meta):
        sc = self.defn
        per, rn = summary[self.name]["proxies"], summary[self.name]["ratios"]
        L = [f"h2: one worker on CPU 1 each, HTTP/1.1 to the origin. Load: `h2load -t 1 -c "
             f"{sc['conns']} -m {sc['streams']}` on `{sc['path']}` (CPU over warm-up and run, per "
             f"request at the run's rate). h2c: prior knowledge (nginx `listen ... http2`, HAProxy "
             f"`proto h2`); h2: TLS 1.3 with ALPN (nginx `ssl http2`, HAProxy `alpn h2,http/1.1`), "
             f"one ECDSA P-256 certificate. Idle (before the load, the process fresh): "
             f"{sc['idle_conns']:,} HTTP/2 connections, one request each, held open (VmRSS growth).",
             "",
             "| proxy | req/s | CPU µs/req | mean ms | idle bytes/conn | errors |",
             "|---|---:|---:|---:|---:|---:|"]
        for px, s in per.items():
            if not s["ok_runs"]:
                L.append(f"| {px} | failed: {'; '.join(s['failures']).replace(chr(10), ' ')[:200]}"
                         " | | | | |")
                continue
            L.append("| {} | {} | {} | {} | {} | {} |".format(
                px, fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"),
                fmt(s["mean_ms"], ".2f"), fmt(s["idle_bytes_per_conn"], ",.0f"), s["errors"]))
        L += ["", "| goal (ringmux ÷ the better peer) | target | measured | ÷ nginx | ÷ HAProxy | met |",
              "|---|---:|---:|---:|---:|---|"]
        words = {"cpu_us_per_req": "CPU per request", "idle_bytes_per_conn": "memory per idle connection"}
        for wire in ("h2c", "h2"):
            for key, _, bound in GOALS:
                v = rn.get(f"{wire}_{key}_ringmux_over_better_peer")
                met = "?" if v is None else ("yes" if v <= bound else "no")
                L.append("| {} | ≤ {} | {} | {} | {} | {} |".format(
                    f"{wire}: {words[key]}", bound, fmt(v, ".3f"),
                    fmt(rn.get(f"{wire}_{key}_ringmux_over_nginx"), ".3f"),
                    fmt(rn.get(f"{wire}_{key}_ringmux_over_haproxy"), ".3f"), met))
        L.append("")
        return L


register(H2("h2", dict(
    conns=64, streams=10, path="/", host="bench.test", depth=1, idle_conns=2000, opt_in=True,
    proxies=KINDS,
    desc="HTTP/2 from clients (h2c and TLS): CPU/req and req/s under h2load -c 64 -m 10, "
         "memory per idle HTTP/2 connection")))
