"""skewed (opt-in): two equal-weight upstreams, one answering after 1 ms and
the other after 10 ms (origins.SkewedOrigin), behind ringmux --balance wrr
and least-conn, HAProxy leastconn and nginx least_conn: the share of the
requests the fast one answered, counted at the origins. Its origins, its
measurement, summary, ratios and Markdown section."""
from ..common import log
from ..load import load_stats, proxy_sample, warm_up, wrk
from ..procs import cpu_ticks
from ..render import fmt, md_failed, med, ms
from .base import Scenario, load_summary, register


def measure_skewed(proxy, sc, secs, warm, sk):
    """measure_load through a proxy with skewed's two upstreams, plus the
    requests each origin answered during the measured run (counts taken
    once the requests in flight before and after it were answered: the
    origins' total may exceed wrk's by up to the connections, requests
    answered after wrk stopped counting)."""
    r = {"proxy": proxy.kind}
    if not warm_up(proxy, sc, warm, r):
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


SKEWED_LABELS = {"ringmux+wrr": ("ringmux", "`--balance wrr`"),
                 "ringmux+least-conn": ("ringmux", "`--balance least-conn`"),
                 "haproxy": ("haproxy", "`balance leastconn`"),
                 "nginx": ("nginx", "`least_conn`")}


class Skewed(Scenario):
    load_table = load_ratios = False

    def origin_kind(self, sc, st):
        # Two origins of their own (SkewedOrigin): nginx + echo_sleep
        # where it works, else two ringmux-origin --delay.
        st.sk = st.origins.skewed(sc["delays_ms"])
        kind = st.sk.kind
        if kind == "ringmux":
            log(f"{self.name}: no echo module ({st.origins.echo_reason}); using two "
                "ringmux-origin --delay")
        return kind

    def describe_origin(self, sc, kind, paths, st):
        return st.sk.describe() + "; path " + " + ".join(paths)

    def upstream(self, px, sc, st, kind):
        st.sk = st.origins.skewed(sc["delays_ms"])  # restarted if it died
        return st.sk.addrs, None if px.startswith("ringmux") else sc["peer_balance"], None

    def origins_alive(self, st, kind, why):
        return st.sk.alive()

    def finish(self, st):
        st.origins.stop_skewed()  # not left idle on CPU 0 for what follows

    def measure(self, proxy, sc, st):
        return measure_skewed(proxy, sc, st.secs, st.warm, st.sk)

    def note(self, r):
        if "upstreams" in r:
            x = r["upstreams"]
            return (f"; fast upstream {fmt(x['fast_share'] and 100 * x['fast_share'], '.1f')}% "
                    f"({x['fast']:,} fast / {x['slow']:,} slow at the origins, "
                    f"{x['origin_requests'] - x['wrk_requests']:+,} vs wrk)")
        return ""

    def estimate_s(self, secs, warm, floor):
        return super().estimate_s(secs, warm, floor) + 1.5 * len(self.defn["proxies"])  # counting

    def summarize_proxy(self, s, rs, ok):
        load_summary(s, rs, ok)
        ups = [r["upstreams"] for r in ok if "upstreams" in r]
        for k in ("fast_share", "fast", "slow", "origin_requests", "wrk_requests"):
            s[k] = med(u.get(k) for u in ups)
        s["all_fast_share"] = [u.get("fast_share") for u in ups]

    def ratios(self, runs, per):
        # ringmux least-conn against the peers' least-connections and
        # against its own wrr (the gain that balancing by load buys).
        ratios = {}
        lc = per.get("ringmux+least-conn", {})
        for other in ("nginx", "haproxy", "ringmux+wrr"):
            for k in ("cpu_us_per_req", "rps", "p99_us"):
                a, b = lc.get(k), per.get(other, {}).get(k)
                ratios[f"{k}_ringmux+least-conn_over_{other}"] = \
                    (a / b) if (a is not None and b) else None
        return ratios

    def markdown(self, summary, meta):
        """The skewed table: per proxy and policy, throughput, latency, CPU and
        the share of the requests the fast upstream answered (origin side)."""
        scn, sc = self.name, self.defn
        per, rn = summary[scn]["proxies"], summary[scn]["ratios"]
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


# Two upstreams of equal weight, one 10x slower than the other (SkewedOrigin:
# nginx + echo_sleep on two ports, or two ringmux-origin --delay), behind
# ringmux --balance wrr, ringmux --balance least-conn, HAProxy `balance
# leastconn` and nginx `least_conn`. The origins count the requests each
# answered, so the share that went to the fast one is measured where it
# lands. wrr should give 50%; a least-connections policy that keeps the
# in-flight counts equal gives slow/(fast+slow) = 10/11 of the requests to the
# fast upstream, and about 3x wrr's req/s. Opt-in: four columns x rounds x
# (duration + warm-up + settling) is about 3 min at the defaults.
register(Skewed("skewed", dict(
    conns=64, path="/", depth=1, skewed=True, delays_ms=(1, 10),
    proxies=["ringmux+wrr", "ringmux+least-conn", "haproxy", "nginx"],
    peer_balance="least-conn",  # nginx `least_conn`, HAProxy `balance leastconn`
    opt_in=True,
    desc="64 connections, two equal-weight upstreams answering after 1 ms and 10 ms: "
         "share sent to the fast one")))
