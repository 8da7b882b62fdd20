"""h2origin, h2origin-pipeline (opt-in): HTTP/1.1 clients, an HTTP/2
origin. The nginx origin serves the same server on a second port by h2c
(prior knowledge). Each proxy one worker on CPU 1; wrk as in small (64
keep-alive connections) and pipeline (8 pipelined requests each):

  ringmux+admin  HTTP/1.1 to the origin (its admin port read for sends)
  ringmux+h2o    `--upstream-protocol h2`: every client's requests as streams
                 on few connections
  nginx          HTTP/1.1 to the origin (nginx has no HTTP/2 to upstreams)
  haproxy        HTTP/1.1 to the origin
  haproxy+h2o    `server ... proto h2`
  relay          the 1:1 byte relay (the floor), HTTP/1.1

For ringmux, the sends per request (ringmux_ring_sends_total over the
timed run, both sides) and, for +h2o, the requests one upstream send
carried (streams opened ÷ upstream sends: the sends to clients are one per
response batch, as with HTTP/1.1). The goal (issue 24): ringmux+h2o's CPU
per request at most 0.5x the better peer, and below the relay floor."""
import re
import urllib.request

from ..common import FLOOR
from ..load import timed_wrk, warm_up
from ..render import fmt, med
from .base import Scenario, load_summary, register

RINGMUX = ("ringmux+admin", "ringmux+h2o")
PEERS = ("nginx", "haproxy", "haproxy+h2o")


def scrape(admin, names):
    """The values of the unlabelled samples `names` on ringmux's /metrics."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as f:
        text = f.read().decode()
    out = {}
    for n in names:
        m = re.search(rf"^{n} (\S+)$", text, re.M)
        out[n] = float(m.group(1)) if m else None
    return out


class H2Origin(Scenario):
    # (Its own table: its columns are not the three proxies of the others.)
    load_table = load_ratios = False

    def origin_kind(self, sc, st):
        return "nginx"

    def upstream(self, px, sc, st, kind):
        if px.endswith("+h2o"):
            return st.origins.h2_addr(), None, None
        return st.origins.get("nginx"), None, None

    def describe_origin(self, sc, kind, paths, st):
        return "nginx (HTTP/1.1 port, and h2c port for +h2o) " + " + ".join(paths)

    def measure(self, proxy, sc, st):
        r = {"proxy": proxy.kind}
        if not warm_up(proxy, sc, st.warm, r):
            return r
        names = ("ringmux_ring_sends_total", "ringmux_upstream_h2_streams_total",
                 "ringmux_upstream_connections_opened_total")
        before = scrape(proxy.admin, names) if proxy.admin else None
        timed_wrk(proxy, sc, st.secs, r)
        if before and "error" not in r:
            after = scrape(proxy.admin, names)
            # (Published by the worker within a tick: close enough over a
            # run of seconds.)
            d = {n: (after[n] - before[n]) if None not in (after[n], before[n]) else None
                 for n in names}
            reqs = r.get("requests") or 0
            sends = d["ringmux_ring_sends_total"]
            r["sends_per_req"] = sends / reqs if (sends and reqs) else None
            streams = d["ringmux_upstream_h2_streams_total"]
            if streams and sends and reqs:
                # Sends to clients: at least one per response batch; the
                # rest went upstream.
                client_sends = reqs / sc["depth"]
                up = max(1.0, sends - client_sends)
                r["streams_per_upstream_send"] = streams / up
        return r

    def note(self, r):
        s = r.get("sends_per_req")
        extra = "" if s is None else f", {s:.2f} sends/req"
        k = r.get("streams_per_upstream_send")
        return extra + ("" if k is None else f", {k:.1f} req per upstream send")

    def summarize_proxy(self, s, rs, ok):
        load_summary(s, rs, ok)
        for key in ("sends_per_req", "streams_per_upstream_send"):
            s[key] = med(r.get(key) for r in ok)

    def ratios(self, runs, per):
        out = {}
        mine = per.get("ringmux+h2o", {}).get("cpu_us_per_req")
        h1 = per.get("ringmux+admin", {}).get("cpu_us_per_req")
        peers = {p: per.get(p, {}).get("cpu_us_per_req") for p in PEERS}
        best = min((v for v in peers.values() if v), default=None)
        out["cpu_h2o_over_better_peer"] = (mine / best) if (mine and best) else None
        for p, v in peers.items():
            out[f"cpu_h2o_over_{p}"] = (mine / v) if (mine and v) else None
        out["cpu_h2o_over_http1"] = (mine / h1) if (mine and h1) else None
        floor = per.get(FLOOR, {}).get("cpu_us_per_req")
        out[f"cpu_h2o_over_{FLOOR}"] = (mine / floor) if (mine and floor) else None
        return out

    def markdown(self, summary, meta):
        per, rn = summary[self.name]["proxies"], summary[self.name]["ratios"]
        sc = self.defn
        L = [f"{self.name}: HTTP/1.1 clients (wrk, {sc['conns']} connections, depth "
             f"{sc['depth']}), an HTTP/2 origin (nginx h2c) for the +h2o kinds, HTTP/1.1 "
             "to the same nginx for the others; one worker on CPU 1 each.", "",
             "| proxy | req/s | CPU µs/req | p99 ms | sends/req | req per upstream send |",
             "|---|---:|---:|---:|---:|---:|"]
        for px, s in per.items():
            if not s.get("ok_runs"):
                L.append(f"| {px} | failed | | | | |")
                continue
            p99 = s.get("p99_us")
            L.append("| {} | {} | {} | {} | {} | {} |".format(
                px, fmt(s.get("rps"), ",.0f"), fmt(s.get("cpu_us_per_req"), ".2f"),
                fmt(p99 / 1000 if p99 else None, ".2f"), fmt(s.get("sends_per_req"), ".2f"),
                fmt(s.get("streams_per_upstream_send"), ".1f")))
        v = rn.get("cpu_h2o_over_better_peer")
        f = rn.get(f"cpu_h2o_over_{FLOOR}")
        L += ["", "| goal | target | measured | met |", "|---|---:|---:|---|",
              "| ringmux+h2o CPU/req ÷ the better peer | ≤ 0.5 | {} | {} |".format(
                  fmt(v, ".3f"), "?" if v is None else ("yes" if v <= 0.5 else "no")),
              "| ringmux+h2o CPU/req ÷ the relay floor | < 1 | {} | {} |".format(
                  fmt(f, ".3f"), "?" if f is None else ("yes" if f < 1 else "no")),
              f"| (ringmux+h2o ÷ ringmux HTTP/1.1) | | {fmt(rn.get('cpu_h2o_over_http1'), '.3f')} | |",
              ""]
        return L

for _name, _depth, _what in (("h2origin", 1, "64 keep-alive connections"),
                             ("h2origin-pipeline", 8, "64 connections, 8 pipelined each")):
    register(H2Origin(_name, dict(
        conns=64, path="/", depth=_depth, opt_in=True, proxies=list(RINGMUX + PEERS) + [FLOOR], floor=True,
        desc=f"HTTP/1.1 clients, HTTP/2 origin: {_what}")))
