"""observability (opt-in): ringmux against itself at small's load: plain,
with its admin address scraped once a second (Scraper), with a combined
access log (its lines counted against wrk's requests). Its measurement,
summary, ratios (each variant over plain ringmux) and Markdown section."""
import os
import statistics
import threading
import time

from ..client import http_get
from ..load import load_stats, proxy_sample, wrk
from ..procs import LineCounter, cpu_ticks
from ..render import fmt, md_failed, med, ms
from .base import SCENARIOS, Scenario, load_summary, register


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


class Observability(Scenario):
    load_table = load_ratios = False

    def measure(self, proxy, sc, st):
        return measure_observed(proxy, sc, st.secs, st.warm)

    def note(self, r):
        if "access_log" in r:
            x = r["access_log"]
            return (f"; access log {x['lines']:,} lines for {x['requests']:,} requests "
                    f"({x['diff']:+,}{'' if x['close'] else ', NOT close'})")
        if "admin_scrapes" in r:
            x = r["admin_scrapes"]
            return f"; {x['scrapes']} scrapes, {x['gets']} GETs ok, {x['failures']} failed"
        return ""

    def summarize_proxy(self, s, rs, ok):
        load_summary(s, rs, ok)
        logs = [r["access_log"] for r in ok if "access_log" in r]
        if logs:  # ringmux+log
            s["access_log_lines"] = med(x["lines"] for x in logs)
            s["access_log_requests"] = med(x["requests"] for x in logs)
            s["access_log_close"] = all(x["close"] for x in logs)
            s["all_access_log"] = logs
        scrapes = [r["admin_scrapes"] for r in ok if "admin_scrapes" in r]
        if scrapes:  # ringmux+admin
            s["admin_scrapes"] = sum(x["scrapes"] for x in scrapes)
            s["admin_gets"] = sum(x["gets"] for x in scrapes)
            s["admin_failures"] = sum(x["failures"] for x in scrapes)
            s["admin_bytes"] = scrapes[-1]["bytes"]

    def ratios(self, runs, per):
        """Each variant's CPU/req and req/s over plain ringmux's (ratio of
        the medians, the headline), and the CPU ratio of each round alone
        (the variants of a round ran back to back, so these are paired and
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
                if r["scenario"] == self.name and "error" not in r and r.get("cpu_us_per_req"):
                    by_round.setdefault(r["round"], {})[r["proxy"]] = r["cpu_us_per_req"]
            ratios[f"all_cpu_us_per_req_{px}_over_{base}"] = [
                v[px] / v[base] for _, v in sorted(by_round.items()) if px in v and base in v]
        return ratios

    def markdown(self, summary, meta):
        """The observability table: each variant against plain ringmux."""
        scn, sc = self.name, self.defn
        per, rn = summary[scn]["proxies"], summary[scn]["ratios"]
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


# ringmux against itself, not against nginx/HAProxy: the CPU per request
# that the status module (scraped as Prometheus would, plus /status as a
# dashboard would) and the access log add, at small's load. Opt-in: three
# variants x rounds x (duration + warm-up) is about 2 min at the defaults,
# more than a default run should grow by for a figure about ringmux alone.
register(Observability("observability", dict(
    {k: SCENARIOS["small"][k] for k in ("conns", "path", "depth")},
    variants=["ringmux", "ringmux+admin", "ringmux+log"],
    targets={"ringmux+admin": 1.03, "ringmux+log": 1.10},  # CPU/req ÷ plain ringmux
    opt_in=True,
    desc="small's load through ringmux alone: plain, --admin scraped once a second, "
         "--access-log combined")))
