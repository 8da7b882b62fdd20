"""The reports: the summary of the runs (medians per scenario and proxy,
ratios), the Markdown (header, the load tables, each scenario's own
section, notes), the SVG chart of the load scenarios, and the result files
(<stamp>.{json,md,svg}, latest.*, each scenario's own chart)."""
import json
import os

from .common import FLOOR, PROXIES, log
from .render import COLORS, LABELS, MD_NAMES, esc, fmt, md_failed, ms, nice_max
from .scenarios import DEFAULT, REGISTRY, SCENARIOS


def scenario_proxies(runs, scn):
    """The columns of a scenario: the three proxies, plus the floor when it
    ran (observability: its ringmux variants; skewed: its own list)."""
    if SCENARIOS[scn].get("variants") or SCENARIOS[scn].get("proxies"):
        return SCENARIOS[scn].get("variants") or SCENARIOS[scn]["proxies"]
    return PROXIES + ([FLOOR] if any(r["scenario"] == scn and r["proxy"] == FLOOR
                                     for r in runs) else [])


def summarize(runs, scenarios):
    summary = {}
    for scn in scenarios:
        per = {}
        for px in scenario_proxies(runs, scn):
            rs = [r for r in runs if r["scenario"] == scn and r["proxy"] == px]
            ok = [r for r in rs if "error" not in r]
            s = {"runs": len(rs), "ok_runs": len(ok),
                 "failures": [r["error"] for r in rs if "error" in r]}
            REGISTRY[scn].summarize_proxy(s, rs, ok)
            per[px] = s
        summary[scn] = {"proxies": per, "ratios": REGISTRY[scn].ratios(runs, per)}
    return summary


def load_scenarios(summary):
    """The scenarios of the load tables and the load chart."""
    return [s for s in summary if REGISTRY[s].load_ratios]


def markdown(meta, summary):
    L = []
    L.append(f"# ringmux vs nginx vs HAProxy — {meta['started']}")
    L.append("")
    L.append(f"{meta['rounds']} interleaved round(s), {meta['duration_s']} s per measured run "
             f"(+{meta['warmup_s']} s warm-up), medians over rounds. Each proxy: one "
             "worker/thread pinned to CPU 1, a fresh process per run; wrk, the origin "
             f"(**{meta['origin']}**: {meta['origin_desc']}) and the harness on CPU 0. "
             f"Kernel {meta['kernel']}, {meta['versions']['nginx']}, "
             f"{meta['versions']['haproxy']}, {meta['versions']['wrk']}; "
             f"ringmux {meta['git']}; open-file limit {meta['fd_limit']}.")
    L.append("")
    if meta.get("origins"):
        L.append("Origin and path(s) per scenario: " + "; ".join(
            f"{scn}: {o}" for scn, o in meta["origins"].items()) + ".")
        L.append("")
    rf = meta.get("relay_floor", {})
    if rf.get("binary"):
        L.append(f"Relay floor (`relay`, built from {rf['src']}): a 1:1 io_uring byte relay, no "
                 "HTTP, one connection to the origin per client connection, pinned to CPU 1 like "
                 f"the proxies; measured in {', '.join(rf['scenarios']) or 'none of this run’s scenarios'}.")
    elif rf:
        L.append(f"Relay floor: **skipped** ({rf.get('reason')}).")
    L.append("")
    for scn, why in meta.get("skipped", {}).items():
        L.append(f"**{scn}: skipped** ({why}).")
        L.append("")
    if meta.get("interrupted"):
        L.append(f"**Incomplete run: {meta['interrupted']}.**")
        L.append("")
    load = load_scenarios(summary)
    plain = [s for s in load if REGISTRY[s].load_table]
    if plain:
        L.append("| scenario | proxy | req/s | CPU µs/req | p50 ms | p99 ms | p99.9 ms | mean ms | peak RSS MiB | errors |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for scn in plain:
            for px, s in summary[scn]["proxies"].items():
                if not s["ok_runs"]:
                    L.append(f"| {scn} | {MD_NAMES[px]} | {md_failed(s, 7)}")
                    continue
                L.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    scn, MD_NAMES[px], fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"),
                    fmt(ms(s["p50_us"]), ".3f"), fmt(ms(s["p99_us"]), ".3f"),
                    fmt(ms(s["p999_us"]), ".3f"), fmt(ms(s["mean_us"]), ".3f"),
                    fmt(s["peak_rss_kb"] and s["peak_rss_kb"] / 1024, ".1f"),
                    s["errors"] + (len(s["failures"]) and 0)))
        L.append("")
    if load:
        L.append("Ratios (ringmux ÷ peer; below 1 is better for CPU and p99, above 1 is better for "
                 "req/s; ÷ floor: ringmux's CPU/req over the relay floor's, 1 would be a proxy "
                 "as cheap as copying the bytes; mixed: req/s and p99 of the fast URL):")
        L.append("")
        L.append("| scenario | CPU/req ÷ nginx | CPU/req ÷ HAProxy | CPU/req ÷ floor | req/s ÷ nginx | req/s ÷ HAProxy | p99 ÷ nginx | p99 ÷ HAProxy |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for scn in load:
            r = summary[scn]["ratios"]
            pre = REGISTRY[scn].ratio_prefix
            L.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                scn, *(fmt(r.get(k), ".2f") + ("×" if r.get(k) is not None else "") for k in (
                    "cpu_us_per_req_ringmux_over_nginx", "cpu_us_per_req_ringmux_over_haproxy",
                    f"cpu_us_per_req_ringmux_over_{FLOOR}",
                    f"{pre}rps_ringmux_over_nginx", f"{pre}rps_ringmux_over_haproxy",
                    f"{pre}p99_us_ringmux_over_nginx", f"{pre}p99_us_ringmux_over_haproxy"))))
        L.append("")
    for scn in summary:
        L.extend(REGISTRY[scn].markdown(summary, meta))
    L.append("Notes:")
    L.append("- CPU µs/req: utime+stime of all the proxy's processes (nginx: master + worker) "
             "from /proc/PID/stat over the measured run, ÷ responses wrk completed.")
    L.append("- Latency: the samples wrk took, with wrk's coordinated-omission correction undone "
             "(see bench/wrk/report.lua). Under pipelining wrk takes one sample per batch "
             "(write of the batch → last response), so for `pipeline` and `slow-origin` the "
             "percentiles and the mean are per batch, not per request.")
    L.append("- errors: wrk socket errors (connect/read/write/timeout) + responses with status ≥ 400 "
             "(idle: connections that failed or were closed by the proxy).")
    L.append("- req/s is capped by CPU 0 (wrk + the origin), so CPU/req is "
             "the figure that compares the proxies; req/s and latency show whether they keep up.")
    return "\n".join(L) + "\n"


def svg_chart(meta, summary):
    """Grouped bars, one panel per scenario (own linear y axis from 0, since
    1 MiB bodies cost ~100x more per request than 20-byte ones). The panels
    show proxy CPU µs/request, except `mixed`: its fast URL's p99 in ms.
    observability (ringmux against itself) and skewed (its own columns)
    are in the Markdown only."""
    load = load_scenarios(summary)
    pw, ph = 190, 260           # panel plot area
    left, top, gap = 70, 80, 40
    width = left + len(load) * (pw + gap) + 20 if load else 400
    height = top + ph + 124
    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">')
    o.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    o.append(f'<text x="{left}" y="26" font-size="17" font-weight="bold">Proxy CPU time per request '
             f'(µs, lower is better)</text>')
    o.append(f'<text x="{left}" y="46" fill="#555">one worker on CPU 1; origin {esc(meta.get("origin", "?"))}; '
             f'median of {meta["rounds"]} round(s) × {meta["duration_s"]} s; whiskers: min–max over rounds; '
             f'{esc(meta["started"])}</text>')
    # legend
    lx = left
    extra = [px for px in ("ringmux+poll", "ringmux+base", FLOOR) if any(px in summary[s]["proxies"] for s in load)]
    shown = PROXIES[:1] + [px for px in extra if px != FLOOR] + PROXIES[1:] + (
        [FLOOR] if FLOOR in extra else [])
    for px in shown:
        o.append(f'<rect x="{lx}" y="56" width="12" height="12" fill="{COLORS[px]}"/>')
        o.append(f'<text x="{lx + 17}" y="66">{LABELS[px]}</text>')
        lx += 17 + 7 * len(LABELS[px]) + 20
    if not load:
        o.append(f'<text x="{left}" y="{top + 40}">no load scenarios in this run</text>')
    for i, scn in enumerate(load):
        x0 = left + i * (pw + gap)
        per = summary[scn]["proxies"]
        cols = list(per)
        sc = REGISTRY[scn]
        vals, alls, unit, what = sc.chart_values(per, cols)
        highs = [max(a or [0]) for a in alls]
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
        sc.chart_marks(o, x0, pw, top, y, ymax)
        bw = pw / (len(cols) + 1)
        for j, px in enumerate(cols):
            v = vals[j]
            bx = x0 + bw * 0.5 + j * bw
            if v is None:
                o.append(f'<text x="{bx + bw / 2:.1f}" y="{top + ph - 5}" text-anchor="middle" '
                         f'font-size="10" fill="#a00">n/a</text>')
                continue
            o.append(f'<rect x="{bx + 3:.1f}" y="{y(v):.1f}" width="{bw - 6:.1f}" '
                     f'height="{top + ph - y(v):.1f}" fill="{COLORS[px]}"><title>{scn} {LABELS[px]}: '
                     f'{what} {v:.2f} {unit}</title></rect>')
            allv = alls[j]
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
        key, word = sc.chart_ratio
        a, b = rn.get(f"{key}_ringmux_over_nginx"), rn.get(f"{key}_ringmux_over_haproxy")
        o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 80}" text-anchor="middle" font-size="10">'
                 f'ringmux{word}: {fmt(a, ".2f")}× nginx, {fmt(b, ".2f")}× HAProxy</text>')
        if FLOOR in per:
            f = rn.get(f"cpu_us_per_req_ringmux_over_{FLOOR}")
            o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 94}" text-anchor="middle" font-size="10">'
                     f'{fmt(f, ".2f")}× the relay floor</text>')
    o.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
             f'proxy CPU µs per request (each panel its own scale)</text>')
    o.append('</svg>')
    return "\n".join(o) + "\n"


def save(out, stamp, doc, md):
    """Write the result files into `out`: <stamp>.{json,md,svg}, latest.* as
    well when every default scenario ran, and the scenarios' own charts."""
    meta, summary = doc["meta"], doc["summary"]
    os.makedirs(out, exist_ok=True)
    svg = svg_chart(meta, summary)
    # latest.* is what the README shows: only a run of every default
    # scenario replaces it; a partial or opt-in run writes its stamped
    # files (and the latest chart of an opt-in scenario it ran).
    full = set(DEFAULT) <= set(summary)
    for base in (["latest"] if full else []) + [stamp]:
        with open(os.path.join(out, base + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(out, base + ".md"), "w") as f:
            f.write(md)
        with open(os.path.join(out, base + ".svg"), "w") as f:
            f.write(svg)
    extra = []
    for name, scn in REGISTRY.items():  # their own charts
        if scn.chart and name in summary:
            chart = scn.chart(meta, summary)
            for base in ("latest", stamp):
                with open(os.path.join(out, f"{base}-{name}.svg"), "w") as f:
                    f.write(chart)
            extra.append(f"latest-{name}.svg")
    log(f"wrote {out}/{stamp}.{{json,md,svg}}"
        + (" and latest.{json,md,svg}" if full else " (latest.* kept: not every default scenario ran)")
        + (", " + ", ".join(extra) if extra else ""))
