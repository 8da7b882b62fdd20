"""Measurement with wrk: starting and finishing wrk runs (one, or several at
once), parsing bench/wrk/report.lua's output, undoing wrk's
coordinated-omission correction, percentiles from its histogram, the
figures of one run (load_stats), the proxy's CPU and memory over it
(proxy_sample), and measure_load: the measurement of a plain load scenario."""
import json
import subprocess
import time

from .common import LUA_PIPE, LUA_REPORT, TICK
from .procs import STARTED, cpu_ticks, spawn, status_kb, stop


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
    url = f"{sc.get('scheme', 'http')}://{addr}"
    if sc.get("host"):
        cmd += ["-H", f"Host: {sc['host']}"]
    for h in sc.get("headers", ()):
        cmd += ["-H", h]
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


def timed_wrk(proxy, sc, secs, r=None):
    """One wrk run through proxy with the proxy's CPU over it, into r (a new
    dict if None): the figures and CPU per request, or "error"."""
    r = {} if r is None else r
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


def warm_up(proxy, sc, warm, r):
    """wrk for warm seconds (none if 0); False, with r["error"], if it
    failed."""
    if warm > 0:
        _, _, err = wrk(proxy.addr, sc, warm)
        if err:
            r["error"] = "warm-up: " + err
            return False
    return True


def measure_load(proxy, sc, secs, warm):
    r = {"proxy": proxy.kind}
    if not warm_up(proxy, sc, warm, r):
        return r
    return timed_wrk(proxy, sc, secs, r)
