"""tls (opt-in): TLS termination, each proxy one worker on CPU 1 with the
same ECDSA P-256 certificate (made for the run with openssl), in front of
the plain origin. Three measurements per run: keep-alive (wrk over HTTPS,
small body): req/s and CPU per request; full handshakes (`openssl s_time
-new`: a new connection and a full handshake per GET, one at a time):
handshakes per CPU-second of the proxy; reconnects (wrk with `Connection:
close`, 16 connections: wrk's OpenSSL resumes its sessions, so these are
TLS 1.3 PSK handshakes with an X25519 exchange): per CPU-second; idle:
10,000 TLS connections, one request each, held open: the RSS each adds.
The goals (issue 22): keep-alive CPU/req at most 0.8x the better peer,
handshakes per CPU-second at least 1.2x the better peer, memory per idle
connection at most 0.6x the better peer."""
import os
import re
import subprocess
import time

from ..client import tls_context
from ..common import log
from ..load import proxy_sample, timed_wrk, wrk
from ..procs import cpu_ticks, status_kb
from ..render import fmt, med, ms
from .base import Scenario, register
from .idle import idle_client, still_open

KINDS = ["ringmux+tls", "nginx+tls", "haproxy+tls"]


def make_cert(d):
    """An ECDSA P-256 certificate for bench.test in d: (cert, key, both)."""
    cert, key, pem = (os.path.join(d, n) for n in ("tls-cert.pem", "tls-key.pem", "tls.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test"],
                   check=True, capture_output=True)
    with open(pem, "w") as out:
        for part in (cert, key):
            with open(part) as f:
                out.write(f.read())
    os.chmod(key, 0o644)  # (nginx's and HAProxy's own users read it)
    os.chmod(pem, 0o644)
    return cert, key, pem


def timed_run(proxy, sc, secs):
    """A timed wrk run (load.timed_wrk) with requests per CPU-second, the
    raw wrk output left out."""
    r = timed_wrk(proxy, sc, secs)
    if "error" not in r:
        r.pop("wrk", None)
        r["per_cpu_s"] = (r["requests"] / r["cpu_s"]) if r["cpu_s"] else None
    return r


def timed_s_time(proxy, secs):
    """Full handshakes with `openssl s_time -new` (a GET / each) for secs,
    with the proxy's CPU over it."""
    r = {}
    t0 = cpu_ticks(proxy.pids())
    out = subprocess.run(["taskset", "-c", "0", "openssl", "s_time", "-connect", proxy.addr,
                          "-new", "-time", str(int(secs)), "-www", "/"],
                         capture_output=True, text=True, timeout=secs + 60)
    proxy_sample(proxy, r, t0)
    m = re.search(r"(\d+) connections in (\d+) real seconds", out.stdout)
    if not m:
        r["error"] = "s_time: " + (out.stdout + out.stderr)[-300:]
        return r
    n = int(m.group(1))
    r["requests"] = n
    r["rps"] = n / max(1, int(m.group(2)))
    r["per_cpu_s"] = (n / r["cpu_s"]) if r["cpu_s"] else None
    r["errors"] = 0
    return r


def measure_tls(proxy, sc, st):
    r = {"proxy": proxy.kind}
    keep = dict(sc, depth=1, scheme="https")
    close = dict(keep, conns=sc["handshake_conns"], headers=["Connection: close"])
    if st.warm > 0:
        for s in (keep, close):
            _, _, err = wrk(proxy.addr, s, st.warm)
            if err:
                r["error"] = "warm-up: " + err
                return r
    r["keepalive"] = timed_run(proxy, keep, st.secs)
    r["handshakes"] = timed_run(proxy, close, st.secs)
    r["full"] = timed_s_time(proxy, st.secs)
    for part in ("keepalive", "handshakes", "full"):
        if "error" in r[part]:
            r["error"] = f"{part}: {r[part]['error']}"
            return r
    time.sleep(0.5)
    pids = proxy.pids()
    before = status_kb(pids, "VmRSS")
    t0 = time.time()
    socks, failed, unanswered, first_err, aborted = idle_client(
        proxy.addr, sc["idle_conns"], tls=tls_context(), total_timeout=120.0)
    open_s = time.time() - t0
    time.sleep(1.0)
    after = status_kb(proxy.pids(), "VmRSS")
    alive = still_open(socks)
    for s in socks:
        s.close()
    n = len(socks)
    r["idle"] = dict(connections=n, open_s=open_s, failed=failed, unanswered=unanswered,
                     rss_before_kb=before, rss_after_kb=after, open_after_1s=alive,
                     bytes_per_conn=((after - before) * 1024 / n) if n else None)
    r["errors"] = (r["keepalive"]["errors"] + r["handshakes"]["errors"] + failed + unanswered
                   + (n - alive))
    if aborted:
        r["error"] = f"idle client: {aborted} (first error: {first_err})"
    elif n < sc["idle_conns"] * 0.99:
        r["error"] = f"only {n} of {sc['idle_conns']} TLS connections served ({first_err})"
    if not proxy.alive():
        r["error"] = "proxy died; " + proxy.logs()
    return r


# The figures of a proxy's summary: (key, where in a run, field).
FIGURES = (("rps", "keepalive", "rps"), ("cpu_us_per_req", "keepalive", "cpu_us_per_req"),
           ("p99_us", "keepalive", None),
           ("handshakes_per_s", "handshakes", "rps"),
           ("handshakes_per_cpu_s", "handshakes", "per_cpu_s"),
           ("full_per_s", "full", "rps"),
           ("full_per_cpu_s", "full", "per_cpu_s"),
           ("idle_bytes_per_conn", "idle", "bytes_per_conn"))

# The goals: (figure, better when "lower"/"higher", ringmux over the better
# peer must be within this).
GOALS = (("cpu_us_per_req", "lower", 0.8), ("full_per_cpu_s", "higher", 1.2),
         ("idle_bytes_per_conn", "lower", 0.6), ("handshakes_per_cpu_s", "higher", None))


class Tls(Scenario):
    load_table = load_ratios = False

    def upstream(self, px, sc, st, kind):
        if "tls_cert" not in sc:
            sc["tls_cert"], sc["tls_key"], sc["tls_pem"] = make_cert(st.tmp)
            log(f"tls: certificate {sc['tls_cert']} (ECDSA P-256)")
        return st.origins.get(kind), None, None

    def measure(self, proxy, sc, st):
        return measure_tls(proxy, sc, st)

    def progress(self, r, t):
        k, h, i, f = r["keepalive"], r["handshakes"], r["idle"], r["full"]
        return (f"keep-alive {k['rps']:,.0f} req/s, {fmt(k['cpu_us_per_req'], '.2f')} µs CPU/req; "
                f"full handshakes {f['rps']:,.0f}/s, {fmt(f['per_cpu_s'], ',.0f')} per CPU-s; "
                f"reconnects {h['rps']:,.0f}/s, {fmt(h['per_cpu_s'], ',.0f')} per CPU-s; "
                f"idle {fmt(i['bytes_per_conn'], ',.0f')} B/conn; errors {r['errors']} "
                f"({time.time() - t:.0f}s)")

    def estimate_s(self, secs, warm, floor):
        return len(KINDS) * (3 * (secs + warm) + 25)

    def summarize_proxy(self, s, rs, ok):
        for key, part, field in FIGURES:
            if field is None:
                s[key] = med(r[part].get("latency", {}).get(key) for r in ok)
            else:
                s[key] = med(r[part].get(field) for r in ok)
            s["all_" + key] = [r[part].get(field) for r in ok] if field else None
        s["errors"] = sum(r.get("errors", 0) for r in rs)

    def ratios(self, runs, per):
        out = {}
        mine = per.get("ringmux+tls", {})
        for key, better, _ in GOALS:
            peers = [per.get(p, {}).get(key) for p in ("nginx+tls", "haproxy+tls")]
            peers = [v for v in peers if v]
            best = (min if better == "lower" else max)(peers) if peers else None
            a = mine.get(key)
            out[f"{key}_ringmux_over_better_peer"] = (a / best) if (a is not None and best) else None
            for p in ("nginx+tls", "haproxy+tls"):
                b = per.get(p, {}).get(key)
                out[f"{key}_ringmux_over_{p.split('+')[0]}"] = (a / b) if (a is not None and b) else None
        return out

    def markdown(self, summary, meta):
        sc = self.defn
        per, rn = summary[self.name]["proxies"], summary[self.name]["ratios"]
        L = [f"tls: one worker on CPU 1 each, the same ECDSA P-256 certificate, TLS 1.3 "
             f"(nginx with `ssl_protocols TLSv1.2 TLSv1.3`: 1.22's default leaves 1.3 out). "
             f"Keep-alive: wrk over HTTPS, {sc['conns']} connections, `{sc['path']}`. "
             f"Full handshakes: `openssl s_time -new -www /` (one connection at a time, a full "
             f"handshake and a GET each). Reconnects: wrk with `Connection: close`, "
             f"{sc['handshake_conns']} connections (wrk resumes its sessions: TLS 1.3 PSK "
             f"handshakes with an X25519 exchange). Idle: {sc['idle_conns']:,} TLS connections, "
             f"one request each, held open (VmRSS growth).",
             "",
             "| proxy | keep-alive req/s | CPU µs/req | p99 ms | full handshakes/s | per CPU-s "
             "| reconnects/s | per CPU-s | idle bytes/conn | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for px, s in per.items():
            if not s["ok_runs"]:
                L.append(f"| {px} | failed: {'; '.join(s['failures']).replace(chr(10), ' ')[:200]}"
                         " | | | | | | | | |")
                continue
            L.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                px, fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"),
                fmt(ms(s["p99_us"]), ".3f"), fmt(s["full_per_s"], ",.0f"),
                fmt(s["full_per_cpu_s"], ",.0f"), fmt(s["handshakes_per_s"], ",.0f"),
                fmt(s["handshakes_per_cpu_s"], ",.0f"), fmt(s["idle_bytes_per_conn"], ",.0f"),
                s["errors"]))
        L += ["", "| goal (ringmux ÷ the better peer) | target | measured | ÷ nginx | ÷ HAProxy | met |",
              "|---|---:|---:|---:|---:|---|"]
        words = {"cpu_us_per_req": "keep-alive CPU per request",
                 "full_per_cpu_s": "full handshakes per CPU-second",
                 "idle_bytes_per_conn": "memory per idle TLS connection",
                 "handshakes_per_cpu_s": "reconnects (resumed) per CPU-second (no goal)"}
        for key, better, bound in GOALS:
            v = rn.get(f"{key}_ringmux_over_better_peer")
            if bound is None:
                met, target = None, "-"
            else:
                met = None if v is None else (v <= bound if better == "lower" else v >= bound)
                target = f"{'≤' if better == 'lower' else '≥'} {bound}"
            L.append("| {} | {} | {} | {} | {} | {} |".format(
                words[key], target, fmt(v, ".3f"),
                fmt(rn.get(f"{key}_ringmux_over_nginx"), ".3f"),
                fmt(rn.get(f"{key}_ringmux_over_haproxy"), ".3f"),
                "-" if bound is None else ("?" if met is None else ("yes" if met else "no"))))
        L.append("")
        return L


register(Tls("tls", dict(
    conns=64, path="/", host="bench.test", depth=1, handshake_conns=16, idle_conns=10000, opt_in=True,
    proxies=KINDS,
    desc="TLS termination: keep-alive CPU/req, full handshakes per CPU-second, "
         "memory per idle TLS connection")))
