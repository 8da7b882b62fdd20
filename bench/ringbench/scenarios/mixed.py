"""mixed: a fast URL and a slow one (200 ms) through the same proxy at once
(two wrk processes): whether fast requests queue behind slow ones. Its
measurement, summary (fast and slow URL), Markdown section and chart panel
(the fast URL's p99, not CPU)."""
from ..load import load_stats, proxy_sample, wrk_together
from ..procs import cpu_ticks
from ..render import MD_NAMES, fmt, md_failed, med, ms
from .base import Scenario, Skip, register

MIXED_KEYS = [(part, k) for part in ("fast", "slow")
              for k in ("rps", "p50_us", "p99_us", "p999_us", "max_us", "mean_us")]


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


class Mixed(Scenario):
    load_table = False
    ratio_prefix = "fast_"
    ratio_keys = ("cpu_us_per_req", "fast_rps", "fast_p99_us")
    chart_ratio = ("fast_p99_us", " p99")

    def origin_kind(self, sc, st):
        kind = super().origin_kind(sc, st)
        if kind == "nginx" and not st.origins.has_echo():
            raise Skip(f"the nginx origin needs the echo module for the slow URL: "
                       f"{st.origins.echo_reason}; --origin ringmux runs it with ?delay=")
        return kind

    def measure(self, proxy, sc, st):
        return measure_mixed(proxy, sc, st.secs, st.warm)

    def progress(self, r, t):
        f, sl = r["fast"], r["slow"]
        return (f"fast {f['rps']:,.0f} req/s p50 "
                f"{fmt(ms(f['latency'].get('p50_us')), '.2f')} p99 "
                f"{fmt(ms(f['latency'].get('p99_us')), '.2f')} max "
                f"{fmt(ms(f['latency'].get('max_us')), '.1f')} ms; slow "
                f"{sl['rps']:,.1f} req/s p50 {fmt(ms(sl['latency'].get('p50_us')), '.1f')} ms; "
                f"{fmt(r['cpu_us_per_req'], '.2f')} µs CPU/req, errors {r['errors']}")

    def summarize_proxy(self, s, rs, ok):
        for key in ("rps", "cpu_us_per_req", "peak_rss_kb"):
            s[key] = med(r.get(key) for r in ok)
        for part, k in MIXED_KEYS:
            src = (lambda r: r[part].get("rps")) if k == "rps" else \
                (lambda r: r[part].get("latency", {}).get(k))
            s[f"{part}_{k}"] = med(src(r) for r in ok)
        s["errors"] = sum(r.get("errors", 0) for r in rs)
        s["all_cpu_us_per_req"] = [r.get("cpu_us_per_req") for r in ok]
        s["all_fast_p99_us"] = [r["fast"].get("latency", {}).get("p99_us") for r in ok]

    def markdown(self, summary, meta):
        sc = self.defn
        paths = meta.get("scenario_defs", {}).get(self.name, {})
        L = [f"mixed: {sc['conns']} connections on the fast URL `{paths.get('path', sc['path'])}` "
             f"and, at the same time through the same proxy, {sc['slow_conns']} on the slow URL "
             f"`{paths.get('slow_path', '?')}` (origin answers after {sc['slow_ms']} ms): two wrk "
             "processes on CPU 0 started together. A proxy that queues fast requests behind slow "
             f"ones shows a fast-URL p99 near {sc['slow_ms']} ms; a good one stays near small's "
             f"p99; the slow URL should give {sc['slow_conns']} × 1000 / {sc['slow_ms']} = "
             f"{sc['slow_conns'] * 1000 / sc['slow_ms']:.0f} req/s at a p50 and p99 of "
             f"{sc['slow_ms']} ms. CPU/req is over the responses of both URLs.", ""]
        small = summary.get("small", {}).get("proxies", {})
        L.append("| proxy | fast req/s | fast p50 ms | fast p99 ms | fast max ms | fast p99 ÷ small p99 "
                 "| slow req/s | slow p50 ms | slow p99 ms | CPU µs/req | peak RSS MiB | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for px, s in summary[self.name]["proxies"].items():
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
        return L

    def chart_values(self, per, cols):  # fast-URL p99, ms
        vals = [ms(per[p].get("fast_p99_us")) for p in cols]
        alls = [[ms(a) for a in per[p].get("all_fast_p99_us") or [] if a is not None] for p in cols]
        return vals, alls, "ms", "fast-URL p99"

    def chart_marks(self, o, x0, pw, top, y, ymax):
        o.append(f'<text x="{x0 + 4}" y="{top - 6}" font-size="10" fill="#a00">'
                 f'fast-URL p99, ms (not CPU)</text>')
        slow_ms = self.defn["slow_ms"]
        if slow_ms <= ymax:
            o.append(f'<line x1="{x0}" y1="{y(slow_ms):.1f}" x2="{x0 + pw}" y2="{y(slow_ms):.1f}" '
                     f'stroke="#a00" stroke-dasharray="4 3"/>')
            o.append(f'<text x="{x0 + pw - 2}" y="{y(slow_ms) - 3:.1f}" text-anchor="end" '
                     f'font-size="9" fill="#a00">slow URL: {slow_ms} ms</text>')


# Two wrk processes at once through the same proxy: `conns` on the fast
# `path` and `slow_conns` on `slow_path` (the origin answers after
# slow_ms). A proxy that queues fast requests behind slow ones shows a
# fast-URL p99 near slow_ms; a good one stays near small's p99. With the
# nginx origin this needs the echo module (skipped without it).
register(Mixed("mixed", dict(
    conns=64, path="/", depth=1, slow_conns=16,
    slow_path={"nginx": "/slow", "ringmux": "/?delay=200"}, slow_ms=200, mixed=True,
    desc="64 connections on a fast URL while 16 others wait 200 ms each on a slow one")))
