"""idle: 10,000 keep-alive connections, one request each, held open: the
RSS each adds to the proxy. Its client (idle_client, still_open), its
measurement, summary, ratios (RSS growth) and Markdown section."""
import socket
import time

from ..client import read_response
from ..common import log
from ..load import wrk
from ..procs import status_kb
from ..render import fmt, med
from .base import Scenario, register


def idle_client(addr, n, batch=100, batch_timeout=5.0, total_timeout=90.0, tls=None):
    """Open n keep-alive connections (over TLS with the context tls: the
    handshake as each connects), one GET each, keep them open.
    Never hangs: each batch has a deadline, the whole thing another; a proxy
    that stops answering is reported, not waited on."""
    host, port = addr.rsplit(":", 1)
    port = int(port)
    socks, failed, unanswered = [], 0, 0
    # Over TLS the Host is the name asked for (SNI), as a browser sends it.
    name = addr if tls is None else "bench.test"
    req = f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode()
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
                if tls is not None:
                    s = tls.wrap_socket(s, server_hostname="bench.test")
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
        # (A TLS socket is peeked at through a duplicate of its descriptor:
        # the bytes are ciphertext, an end is an end.)
        raw = socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        try:
            raw.setblocking(False)
            if raw.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        finally:
            raw.close()
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


class Idle(Scenario):
    load_table = load_ratios = False
    ratio_keys = ("rss_growth_bytes_per_conn",)

    def measure(self, proxy, sc, st):
        return measure_idle(proxy, sc, st.warm)

    def progress(self, r, t):
        return (f"{r['connections']} conns, RSS "
                f"{r['rss_before_kb']}→{r['rss_after_kb']} KiB = "
                f"{fmt(r['rss_growth_bytes_per_conn'], '.0f')} B/conn, "
                f"errors {r['errors']} ({time.time() - t:.0f}s)")

    def estimate_s(self, secs, warm, floor):
        return 3 * (warm + 8)

    def summarize_proxy(self, s, rs, ok):
        s["rss_growth_bytes_per_conn"] = med(r.get("rss_growth_bytes_per_conn") for r in ok)
        s["rss_before_kb"] = med(r.get("rss_before_kb") for r in ok)
        s["rss_after_kb"] = med(r.get("rss_after_kb") for r in ok)
        s["connections"] = med(r.get("connections") for r in ok)
        s["errors"] = sum(r.get("errors", 0) for r in rs)
        s["all_growth"] = [r.get("rss_growth_bytes_per_conn") for r in ok]

    def markdown(self, summary, meta):
        L = [f"idle: {self.defn['conns']:,} keep-alive client connections, each "
             "served one request, then held open; VmRSS of all the proxy's processes "
             "1 s after the last one opened, minus VmRSS before (after a 1 s warm-up).", "",
             "| proxy | RSS before MiB | RSS after MiB | growth bytes/conn | growth KiB/conn | ÷ ringmux | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
        rm = summary[self.name]["proxies"]["ringmux"].get("rss_growth_bytes_per_conn")
        for px, s in summary[self.name]["proxies"].items():
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
        return L


register(Idle("idle", dict(
    conns=10000, idle=True,
    desc="10,000 idle keep-alive connections (one request each): RSS growth")))
