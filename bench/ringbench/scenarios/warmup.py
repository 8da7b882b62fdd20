"""warmup (opt-in): an upstream added under load, ringmux (config file
rewritten + SIGHUP: readiness check, warm connections, slow start) against
HAProxy (stats socket, slowstart), in front of two ringmux-origin of its
own per run (origins.WarmupOrigins). Its phases, measurement, summary,
ratios, Markdown section and chart (<stamp>-warmup.svg, latest-warmup.svg)."""
import time

from ..common import TICK
from ..load import load_stats, wrk, wrk_finish, wrk_start
from ..origins import WarmupOrigins
from ..procs import cpu_ticks, status_kb, stop
from ..render import COLORS, esc, fmt, med, ms, nice_max
from .base import Scenario, register


def warmup_phases(sc, secs):
    """warmup's wrk phases: (name, seconds). wrk takes whole seconds."""
    edge = max(2, round(secs / 3))
    return [("before", edge), ("cold", -(-sc["ready_after_ms"] // 1000)),
            ("ramp", sc["slow_start_s"] + 1), ("after", edge)]


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


WARMUP_LABELS = {"ringmux+reload": "ringmux", "haproxy+slowstart": "HAProxy"}
PHASE_WHAT = {"before": "A only",
              "cold": "B started, added 0.1 s in; not ready",
              "ramp": "B ready: slow start",
              "after": "A and B"}


def md_warmup(scn, summ, meta):
    """The warmup tables: one per proxy, a row per phase (latency, req/s,
    CPU, the requests each origin answered), and ringmux ÷ HAProxy."""
    sc = WARMUP.defn
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
         f'<text x="{left}" y="45" fill="#555">{WARMUP.defn["conns"]} connections; B added at the '
         f'start of "cold", ready {WARMUP.defn["ready_after_ms"] / 1000:g} s later, '
         f'{WARMUP.defn["slow_start_s"]} s slow start</text>',
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


class Warmup(Scenario):
    load_table = load_ratios = False
    chart = staticmethod(svg_warmup)

    def origin_kind(self, sc, st):
        return "ringmux"  # two ringmux-origin of its own (WarmupOrigins), per run

    def scenario_def(self, sc, kind, st):
        return dict(super().scenario_def(sc, kind, st), phases=warmup_phases(sc, st.secs))

    def describe_origin(self, sc, kind, paths, st):
        return (f"two ringmux-origin --size 20 --delay {sc['delay_ms']}, A and B, fresh per "
                f"run (B with --ready-after {sc['ready_after_ms']}, started just before the "
                "cold phase); requests counted with GET /stats; path " + " + ".join(paths))

    def upstream(self, px, sc, st, kind):
        st.wo = WarmupOrigins(st.tmp, sc)  # A now, B in the run
        why = st.wo.start("A")
        return st.wo.addrs.get("A"), None, why and f"origin A: {why}"

    def origins_alive(self, st, kind, why):
        alive = st.wo.alive() or why is not None  # (A never started: no retry)
        st.wo.stop()
        return alive

    def measure(self, proxy, sc, st):
        return measure_warmup(proxy, sc, st.secs, st.warm, st.wo)

    def progress(self, r, t):
        return ("; ".join(
            f"{st['phase']} {st['rps']:,.0f} req/s p99 "
            f"{fmt(ms(st['latency'].get('p99_us')), '.2f')} max "
            f"{fmt(ms(st['latency'].get('max_us')), '.1f')} ms B "
            f"{fmt(st['shares']['B'] and 100 * st['shares']['B'], '.1f')}%"
            for st in r["phases"])
            + f"; B added in {r['reload']['took_ms']:.1f} ms, ready at "
            f"{fmt(r.get('b_ready_s'), '+.2f')} s; errors {r['errors']}")

    def estimate_s(self, secs, warm, floor):
        # its phases last longer than --duration; + ~0.5 s for the origins
        return super().estimate_s(secs, warm, floor) + len(self.defn["proxies"]) * (
            sum(n for _, n in warmup_phases(self.defn, secs)) - secs + 0.5)

    def summarize_proxy(self, s, rs, ok):
        warmup_summary(s, rs, ok)

    def ratios(self, runs, per):
        # ringmux over HAProxy, phase by phase.
        ratios = {}
        rm, hp = per.get("ringmux+reload", {}), per.get("haproxy+slowstart", {})
        for a, b in zip(rm.get("phases", []), hp.get("phases", [])):
            for k in ("p99_us", "max_us", "rps", "cpu_us_per_req"):
                x, y = a.get(k), b.get(k)
                ratios[f"{k}_{a['phase']}_ringmux_over_haproxy"] = \
                    (x / y) if (x is not None and y) else None
        return ratios

    def markdown(self, summary, meta):
        return md_warmup(self.name, summary[self.name], meta)


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
WARMUP = register(Warmup("warmup", dict(
    conns=64, path="/", depth=1, warmup=True, delay_ms=1, ready_after_ms=2000,
    ready_path="/ready", slow_start_s=5, warm_conns=4, check_ms=200, reload_after_s=0.1,
    proxies=["ringmux+reload", "haproxy+slowstart"], opt_in=True,
    desc="64 connections; upstream B added under load (readiness check, 5 s slow start): "
         "p50/p99/max before, while B is cold, during its ramp, after")))
