"""scale (opt-in): one ringmux with elastic workers (--workers 1..N) under
16, 256, then 16 connections, its /metrics read every 250 ms
(WorkerSampler). Its measurement, summary, progress line, Markdown section
and chart of workers over time (<stamp>-scale.svg, latest-scale.svg)."""
import os
import statistics
import threading
import time

from ..client import http_get
from ..common import TICK
from ..load import load_stats, wrk
from ..procs import cpu_ticks, status_kb
from ..proxies import ELASTIC_CPUS
from ..render import esc, fmt, md_failed, med, ms, nice_max
from .base import Scenario, register


def parse_metrics(text):
    """What scale reads from GET /metrics: running workers, each worker's
    busy fraction (index -> fraction, every worker slot, stopped ones 0),
    the scale-up and scale-down counters."""
    out = {"workers": None, "busy": {}, "ups": None, "downs": None}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "ringmux_workers":
            out["workers"] = int(v)
        elif name == "ringmux_worker_scale_ups_total":
            out["ups"] = int(v)
        elif name == "ringmux_worker_scale_downs_total":
            out["downs"] = int(v)
        elif name.startswith('ringmux_worker_busy_ratio{worker="'):
            out["busy"][int(name.split('"')[1])] = v
    if out["workers"] is None or out["ups"] is None or out["downs"] is None:
        raise ValueError("no ringmux_workers / scale counters in /metrics")
    return out


class WorkerSampler:
    """GET /metrics on ringmux's admin address every `every` seconds (at
    t0 + k x every; a slow answer is not caught up on), from a thread of the
    harness (CPU 0), until stopped. samples: dicts with t (s since t0),
    workers, busy (list by worker index), ups, downs. sample_now() takes one
    more at once, from the caller's thread (the step boundaries)."""

    def __init__(self, addr, every):
        self.addr, self.every = addr, every
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.samples, self.failures, self.first_error = [], 0, None

    def start(self):
        self.t0 = time.time()
        self.thread.start()
        return self

    def sample_now(self):
        t = time.time()
        try:
            status, body = http_get(self.addr, "/metrics")
            if status != 200:
                raise ValueError(f"GET /metrics answered {status}")
            m = parse_metrics(body.decode(errors="replace"))
        except (OSError, ValueError) as e:
            with self.lock:
                self.failures += 1
                self.first_error = self.first_error or repr(e)
            return None
        busy = [m["busy"].get(i, 0.0) for i in range(max(m["busy"], default=-1) + 1)]
        x = {"t": round((t + time.time()) / 2 - self.t0, 3), "workers": m["workers"],
             "busy": busy, "ups": m["ups"], "downs": m["downs"]}
        with self.lock:
            self.samples.append(x)
        return x

    def _run(self):
        k = 1
        while not self.halt.wait(max(0.0, self.t0 + k * self.every - time.time())):
            self.sample_now()
            k = max(k + 1, int((time.time() - self.t0) / self.every) + 1)

    def stop(self):
        self.halt.set()
        self.thread.join(10)
        with self.lock:
            self.samples.sort(key=lambda x: x["t"])
        return self.samples


def measure_scale(proxy, sc, secs, warm):
    """scale: one elastic ringmux, a warm-up at the first step's connections,
    then the steps (connections each, `secs` each) as consecutive wrk runs,
    sampled by a WorkerSampler throughout. Per step: wrk's figures, the
    proxy's CPU per request, workers and the scale counters at the start and
    end (a /metrics read just before wrk starts and just after it ends), the
    mean busy fraction of the running workers over the step's samples."""
    r = {"proxy": proxy.kind, "flags": getattr(proxy, "flags", None)}
    try:
        with open(os.path.join(proxy.dir, "stderr.log")) as f:
            r["start_line"] = f.read().strip().splitlines()[0]
    except (OSError, IndexError):
        pass
    steps = sc["steps"]
    if warm > 0:
        _, _, err = wrk(proxy.addr, dict(sc, conns=steps[0]), warm)
        if err:
            r["error"] = "warm-up: " + err
            return r
    sampler = WorkerSampler(proxy.admin, sc["sample_ms"] / 1000).start()
    out = []
    try:
        for i, conns in enumerate(steps):
            part = dict(sc, conns=conns)
            first = sampler.sample_now()
            t_start = time.time() - sampler.t0
            c0 = cpu_ticks(proxy.pids())
            bench, hist, err = wrk(proxy.addr, part, secs)
            c1 = cpu_ticks(proxy.pids())
            t_end = time.time() - sampler.t0
            last = sampler.sample_now()
            if err:
                r["error"] = f"step {i + 1} ({conns} connections): {err}"
                break
            st = load_stats(bench, hist, part)
            st.update(step=i + 1, conns=conns, t_start=round(t_start, 3), t_end=round(t_end, 3),
                      cpu_s=(c1 - c0) / TICK,
                      cpu_us_per_req=((c1 - c0) / TICK * 1e6 / st["requests"])
                      if st["requests"] else None)
            for k, x in (("start", first), ("end", last)):
                st[f"workers_{k}"] = x and x["workers"]
                st[f"ups_{k}"] = x and x["ups"]
                st[f"downs_{k}"] = x and x["downs"]
            out.append(st)
            if not proxy.alive():
                break
    finally:
        samples = sampler.stop()
    if not proxy.alive():
        r["error"] = "proxy died during the run; " + proxy.logs()
    r["samples"] = samples
    r["sampler"] = {"every_ms": sc["sample_ms"], "samples": len(samples),
                    "failures": sampler.failures}
    if sampler.first_error:
        r["sampler"]["first_error"] = sampler.first_error
    for st in out:
        # Samples inside the step (not the boundary reads): the busy
        # fraction of each running worker, averaged over workers and samples.
        inside = [x for x in samples if st["t_start"] < x["t"] < st["t_end"]]
        fr = [b for x in inside for b in sorted(x["busy"], reverse=True)[:x["workers"]]]
        st["busy_mean"] = statistics.mean(fr) if fr else None
        one = [max(x["busy"]) for x in inside if x["workers"] == 1 and x["busy"]]
        st["busy_one_worker"] = statistics.mean(one) if one else None  # while one ran
        slots = max((len(x["busy"]) for x in inside), default=0)
        st["busy_by_worker"] = [statistics.mean(x["busy"][w] if w < len(x["busy"]) else 0.0
                                                for x in inside) for w in range(slots)]
        for k in ("ups", "downs"):
            a, b = st.get(f"{k}_start"), st.get(f"{k}_end")
            st[f"scale_{k}"] = (b - a) if a is not None and b is not None else None
    r["steps"] = out
    pids = proxy.pids()
    r["peak_rss_kb"] = status_kb(pids, "VmHWM")
    if out:
        r["requests"] = sum(st["requests"] for st in out)
        r["errors"] = sum(st["errors"] for st in out)
        f = [x for x in samples if x["ups"] is not None]
        r["scale_ups"] = f[-1]["ups"] - f[0]["ups"] if f else None
        r["scale_downs"] = f[-1]["downs"] - f[0]["downs"] if f else None
        r["max_workers"] = max((x["workers"] for x in samples), default=None)
    if "error" not in r and len(out) < len(steps):
        r["error"] = f"only {len(out)} of {len(steps)} steps ran"
    if "error" not in r and not samples:
        r["error"] = f"no /metrics sample succeeded: {sampler.first_error}"
    return r


STEP_KEYS = ("rps", "cpu_us_per_req", "busy_mean", "busy_one_worker")
STEP_LAT = ("p50_us", "p99_us", "p999_us", "max_us")
STEP_COUNTS = ("workers_start", "workers_end", "scale_ups", "scale_downs")


def scale_summary(s, rs, ok, sc):
    """scale: per step, medians over the rounds (workers and scale counts
    too, with every round's value kept), errors summed; each round's
    timeline of samples for the chart."""
    s["errors"] = sum(r.get("errors", 0) for r in rs)
    s["flags"] = next((r["flags"] for r in rs if r.get("flags")), None)
    s["start_line"] = next((r["start_line"] for r in rs if r.get("start_line")), None)
    for k in ("scale_ups", "scale_downs", "max_workers", "peak_rss_kb"):
        s[k] = med(r.get(k) for r in ok)
        s[f"all_{k}"] = [r.get(k) for r in ok]
    s["sampler_failures"] = sum(r.get("sampler", {}).get("failures", 0) for r in rs)
    s["samples"] = sum(r.get("sampler", {}).get("samples", 0) for r in rs)
    steps = []
    for i, conns in enumerate(sc["steps"]):
        got = [r["steps"][i] for r in ok if len(r.get("steps", [])) > i]
        st = {"step": i + 1, "conns": conns, "rounds": len(got)}
        for k in STEP_KEYS:
            st[k] = med(x.get(k) for x in got)
        for k in STEP_LAT:
            st[k] = med(x.get("latency", {}).get(k) for x in got)
        for k in STEP_COUNTS:
            st[k] = med(x.get(k) for x in got)
            st[f"all_{k}"] = [x.get(k) for x in got]
        st["all_p99_us"] = [x.get("latency", {}).get("p99_us") for x in got]
        st["all_rps"] = [x.get("rps") for x in got]
        bw = [x.get("busy_by_worker") or [] for x in got]
        st["busy_by_worker"] = [med(b[w] if w < len(b) else None for b in bw)
                                for w in range(max(map(len, bw), default=0))]
        st["errors"] = sum(x.get("errors", 0) for x in got)
        steps.append(st)
    s["steps"] = steps
    s["timelines"] = [{"round": r.get("round"), "samples": r.get("samples", []),
                       "steps": [(x["t_start"], x["t_end"]) for x in r.get("steps", [])]}
                      for r in ok]


def md_scale(scn, summ, meta):
    """The scale table: per load step, throughput, latency, CPU, workers
    at its start and end, what the scaler did, the busy fractions seen."""
    sc = SCALE.defn
    s = next(iter(summ["proxies"].values()), {})
    path = meta.get("scenario_defs", {}).get(scn, {}).get("path", "?")
    served = meta.get("origins", {}).get(scn, "?")
    L = [f"{scn}: one ringmux process with elastic workers, `{' '.join(s.get('flags') or ['?'])}`, "
         f"allowed every CPU (taskset -c 0-{os.cpu_count() - 1}; wrk, the origin and the harness stay "
         f"on CPU 0), in front of {served}. Load steps: wrk with "
         + ", then ".join(str(c) for c in sc["steps"]) + f" connections on `{path}` (the origin "
         f"answers after {sc['delay_ms']} ms, so the offered load follows the connections), "
         f"{meta['duration_s']} s each, back to back, after a {meta['warmup_s']} s warm-up at "
         f"{sc['steps'][0]}. A thread of the harness reads `GET /metrics` every {sc['sample_ms']} ms "
         "(`ringmux_workers`, `ringmux_worker_busy_ratio`, `ringmux_worker_scale_ups_total`, "
         "`ringmux_worker_scale_downs_total`). Workers at the start and end of a step: read just "
         "before wrk starts and just after it ends. busy: the running workers' busy fractions (a "
         "worker thread's CPU time over wall time, published every 100 ms) averaged over the step's "
         "samples; one worker: while only one ran; by worker: worker 0 / worker 1 / ... over all "
         "the step's samples, 0 while a worker is stopped (a worker serves the connections it "
         "accepted until they close: one started during a step gets only the connections opened "
         "after it started). Medians over rounds (each round in brackets when there is more than "
         "one).", ""]
    if s.get("start_line"):
        L += [f"ringmux said: `{s['start_line']}`", ""]
    L += ["| step | connections | req/s | p50 ms | p99 ms | CPU µs/req | workers start → end "
          "| scale-ups | scale-downs | busy: running (one worker) | busy by worker | errors |",
          "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|---:|"]
    if not s.get("ok_runs"):
        L.append(f"| – | – | {md_failed(s, 8)}")
    for st in s.get("steps", []):
        def cell(k, spec=".0f"):
            v, alls = st.get(k), [x for x in st.get(f"all_{k}", []) if x is not None]
            c = fmt(v, spec)
            if len(set(alls)) > 1:  # the rounds differ
                c += " (" + ", ".join(format(x, spec) for x in alls) + ")"
            return c
        p99 = fmt(ms(st["p99_us"]), ".2f")
        if len(st["all_p99_us"]) > 1:
            p99 += " (" + ", ".join(fmt(ms(x), ".2f") for x in st["all_p99_us"]) + ")"
        L.append("| {} | {} | {} | {} | {} | {} | {} → {} | {} | {} | {} ({}) | {} | {} |".format(
            st["step"], st["conns"], fmt(st["rps"], ",.0f"), fmt(ms(st["p50_us"]), ".2f"), p99,
            fmt(st["cpu_us_per_req"], ".2f"), cell("workers_start"), cell("workers_end"),
            cell("scale_ups"), cell("scale_downs"), fmt(st["busy_mean"], ".2f"),
            fmt(st["busy_one_worker"], ".2f"),
            " / ".join(fmt(b, ".2f") for b in st.get("busy_by_worker") or []) or "–",
            st["errors"]))
    L.append("")
    if s.get("ok_runs"):
        # "the scale notes in bench/harness.py" (kept as written: the report's
        # text is unchanged) are the comment above SCALE's definition below.
        L.append(f"Over the run: {fmt(s.get('scale_ups'), '.0f')} scale-up(s), "
                 f"{fmt(s.get('scale_downs'), '.0f')} scale-down(s), at most "
                 f"{fmt(s.get('max_workers'), '.0f')} workers running, {s['errors']} errors; "
                 f"{s['samples']} samples of /metrics ({s['sampler_failures']} failed). Marks: "
                 f"--scale-high {sc['scale_high']} (every worker above it for "
                 f"{sc['scale_up_after_ms']} ms: one more) and --scale-low {sc['scale_low']} (the "
                 f"busiest below it for {sc['scale_down_after_ms']} ms: one fewer), chosen from "
                 "the busy fractions one worker shows here at 16 and 256 connections (see the "
                 "scale notes in bench/harness.py); the busy column shows them as this run saw "
                 "them. Workers over time: the -scale.svg chart next to this file.")
        L.append("")
    return L


ROUND_COLORS = ["#d9534f", "#3465a4", "#2f8f4e", "#f0ad4e", "#75507b"]
WORKER_COLORS = ["#d9534f", "#3465a4", "#2f8f4e", "#f0ad4e", "#75507b", "#888a85"]


def svg_scale(meta, summary, scn="scale"):
    """scale's chart: running workers over time (a step line per round) with
    the load steps as bands, each annotated with its median p99 and req/s,
    scale-ups/downs marked; below it, each worker's busy fraction (first
    round) against the --scale-high/--scale-low marks."""
    sc = SCALE.defn
    s = next(iter(summary[scn]["proxies"].values()), {})
    lines = [t for t in s.get("timelines", []) if t["samples"]]
    W, left, right = 920, 64, 24
    pw = W - left - right
    top1, ph1 = 116, 210         # workers panel
    top2, ph2 = top1 + ph1 + 46, 120  # busy panel
    H = top2 + ph2 + 58
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{left}" y="26" font-size="17" font-weight="bold">ringmux elastic workers: '
         'running workers over time</text>',
         f'<text x="{left}" y="45" fill="#555">{esc(" ".join(s.get("flags") or []))}</text>',
         f'<text x="{left}" y="62" fill="#555">wrk '
         + " → ".join(str(c) for c in sc["steps"])
         + f' connections, {meta["duration_s"]} s each, on a URL the origin '
         f'({esc(meta.get("scenario_defs", {}).get(scn, {}).get("origin", "?"))}) answers after {sc["delay_ms"]} ms; /metrics every {sc["sample_ms"]} ms; '
         f'{len(lines)} round(s); {esc(meta["started"])}</text>']
    if not lines:
        o.append(f'<text x="{left}" y="{top1 + 40}">no samples (the run failed: '
                 f'{esc("; ".join(s.get("failures", []))[:120])})</text></svg>')
        return "\n".join(o) + "\n"
    t_max = max(max(x["t"] for x in t["samples"]) for t in lines)
    t_max = max([t_max] + [b for t in lines for _, b in t["steps"]])
    nmax = max(ELASTIC_CPUS, max((x["workers"] for t in lines for x in t["samples"]), default=1))
    X = lambda t: left + pw * t / t_max  # noqa: E731
    Y1 = lambda n: top1 + ph1 - ph1 * n / (nmax + 0.5)  # noqa: E731
    bmax = max([b for x in lines[0]["samples"] for b in x["busy"]] + [sc["scale_high"]])
    bmax = min(1.0, nice_max(bmax * 1.1))
    Y2 = lambda b: top2 + ph2 - ph2 * b / bmax  # noqa: E731
    # load steps: bands (the first round's times), labels, p99 per step
    steps = s.get("steps", [])
    bands = lines[0]["steps"]
    for i, (a, b) in enumerate(bands):
        shade = "#f3f3f3" if sc["steps"][i] == min(sc["steps"]) else "#fbe9e7"
        for top, ph in ((top1, ph1), (top2, ph2)):
            o.append(f'<rect x="{X(a):.1f}" y="{top}" width="{X(b) - X(a):.1f}" height="{ph}" '
                     f'fill="{shade}"/>')
        cx = (X(a) + X(b)) / 2
        o.append(f'<text x="{cx:.1f}" y="{top1 - 24}" text-anchor="middle" font-weight="bold">'
                 f'{sc["steps"][i]} connections</text>')
        st = steps[i] if i < len(steps) else {}
        o.append(f'<text x="{cx:.1f}" y="{top1 - 8}" text-anchor="middle" font-size="11">'
                 f'p99 {fmt(ms(st.get("p99_us")), ".2f")} ms · {fmt(st.get("rps"), ",.0f")} req/s</text>')
        o.append(f'<text x="{cx:.1f}" y="{top1 + 14}" text-anchor="middle" font-size="10" '
                 f'fill="#555">workers {fmt(st.get("workers_start"), ".0f")} → '
                 f'{fmt(st.get("workers_end"), ".0f")}; CPU {fmt(st.get("cpu_us_per_req"), ".1f")} '
                 'µs/req</text>')
    for a, _ in bands[1:]:
        o.append(f'<line x1="{X(a):.1f}" y1="{top1}" x2="{X(a):.1f}" y2="{top2 + ph2}" '
                 'stroke="#999" stroke-dasharray="3 3"/>')
    # workers panel: grid, axis, one step line per round, scale events
    for n in range(0, nmax + 1):
        o.append(f'<line x1="{left}" y1="{Y1(n):.1f}" x2="{left + pw}" y2="{Y1(n):.1f}" '
                 'stroke="#e2e2e2"/>')
        o.append(f'<text x="{left - 6}" y="{Y1(n) + 4:.1f}" text-anchor="end" fill="#555">{n}</text>')
    o.append(f'<text transform="translate(20,{top1 + ph1 / 2}) rotate(-90)" text-anchor="middle">'
             'running workers</text>')
    for k, t in enumerate(lines):
        color = ROUND_COLORS[k % len(ROUND_COLORS)]
        dy = -3 * k  # rounds that agree would hide each other: 3 px apart
        pts, prev = [], None
        for x in t["samples"]:
            if prev is not None:
                pts.append(f'{X(x["t"]):.1f},{Y1(prev) + dy:.1f}')
            pts.append(f'{X(x["t"]):.1f},{Y1(x["workers"]) + dy:.1f}')
            prev = x["workers"]
        pts.append(f'{X(t_max):.1f},{Y1(prev) + dy:.1f}')
        o.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" '
                 f'stroke-width="{2.5 if k == 0 else 1.5}" stroke-linejoin="round" '
                 f'opacity="{1 if k == 0 else 0.8}"/>')
        for a, b in zip(t["samples"], t["samples"][1:]):
            for key, mark, dy in (("ups", "▲ up", -6), ("downs", "▼ down", 14)):
                if b[key] > a[key]:
                    o.append(f'<text x="{X(b["t"]):.1f}" y="{Y1(b["workers"]) + dy:.1f}" '
                             f'font-size="10" fill="{color}" text-anchor="middle">{mark}</text>')
    if len(lines) > 1:
        lx = left + pw - 80 * len(lines)
        for k, t in enumerate(lines):
            o.append(f'<rect x="{lx + 80 * k}" y="{top1 + ph1 - 16}" width="12" height="3" '
                     f'fill="{ROUND_COLORS[k % len(ROUND_COLORS)]}"/>')
            o.append(f'<text x="{lx + 80 * k + 16}" y="{top1 + ph1 - 11}" font-size="10">'
                     f'round {t["round"]}</text>')
    o.append(f'<line x1="{left}" y1="{top1}" x2="{left}" y2="{top1 + ph1}" stroke="#333"/>')
    o.append(f'<line x1="{left}" y1="{top1 + ph1}" x2="{left + pw}" y2="{top1 + ph1}" stroke="#333"/>')
    # busy panel: first round, one line per worker slot, the marks
    for k in range(6):
        b = bmax * k / 5
        o.append(f'<line x1="{left}" y1="{Y2(b):.1f}" x2="{left + pw}" y2="{Y2(b):.1f}" '
                 'stroke="#e2e2e2"/>')
        o.append(f'<text x="{left - 6}" y="{Y2(b) + 4:.1f}" text-anchor="end" font-size="10" '
                 f'fill="#555">{b:.2g}</text>')
    for name, v in (("--scale-high", sc["scale_high"]), ("--scale-low", sc["scale_low"])):
        o.append(f'<line x1="{left}" y1="{Y2(v):.1f}" x2="{left + pw}" y2="{Y2(v):.1f}" '
                 'stroke="#a00" stroke-dasharray="6 4"/>')
        o.append(f'<text x="{left + pw - 4}" y="{Y2(v) - 3:.1f}" text-anchor="end" font-size="10" '
                 f'fill="#a00">{name} {v}</text>')
    slots = max((len(x["busy"]) for x in lines[0]["samples"]), default=0)
    for w in range(slots):
        pts = " ".join(f'{X(x["t"]):.1f},{Y2(x["busy"][w] if w < len(x["busy"]) else 0):.1f}'
                       for x in lines[0]["samples"])
        color = WORKER_COLORS[w % len(WORKER_COLORS)]
        o.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.3"/>')
        o.append(f'<rect x="{left + 8 + 80 * w}" y="{top2 + 6}" width="12" height="3" fill="{color}"/>')
        o.append(f'<text x="{left + 24 + 80 * w}" y="{top2 + 11}" font-size="10">worker {w}</text>')
    o.append(f'<text transform="translate(20,{top2 + ph2 / 2}) rotate(-90)" text-anchor="middle" '
             'font-size="11">busy fraction</text>')
    o.append(f'<text x="{left}" y="{top2 - 8}" font-size="11" fill="#555">each worker\'s busy '
             'fraction (CPU time / wall time'
             + (', round 1' if len(lines) > 1 else '') + '; 0 while stopped)</text>')
    o.append(f'<line x1="{left}" y1="{top2}" x2="{left}" y2="{top2 + ph2}" stroke="#333"/>')
    o.append(f'<line x1="{left}" y1="{top2 + ph2}" x2="{left + pw}" y2="{top2 + ph2}" stroke="#333"/>')
    step_s = next(v for v in (1, 2, 5, 10, 15, 30, 60, 120) if t_max / v <= 16)
    t = 0
    while t <= t_max + 1e-9:
        o.append(f'<line x1="{X(t):.1f}" y1="{top2 + ph2}" x2="{X(t):.1f}" y2="{top2 + ph2 + 4}" '
                 'stroke="#333"/>')
        o.append(f'<text x="{X(t):.1f}" y="{top2 + ph2 + 17}" text-anchor="middle" font-size="10" '
                 f'fill="#555">{t:g}</text>')
        t += step_s
    o.append(f'<text x="{left + pw / 2}" y="{top2 + ph2 + 34}" text-anchor="middle">seconds since '
             'the first step started</text>')
    o.append(f'<text x="{left}" y="{H - 8}" font-size="10" fill="#555">scale-ups '
             f'{fmt(s.get("scale_ups"), ".0f")}, scale-downs {fmt(s.get("scale_downs"), ".0f")}, '
             f'errors {s.get("errors", "–")} (median over rounds); p99 and req/s: median per step'
             '</text>')
    o.append('</svg>')
    return "\n".join(o) + "\n"


class Scale(Scenario):
    load_table = load_ratios = False
    chart = staticmethod(svg_scale)

    def measure(self, proxy, sc, st):
        return measure_scale(proxy, sc, st.secs, st.warm)

    def progress(self, r, t):
        return ("; ".join(
            f"{st['conns']} conns: {st['rps']:,.0f} req/s p99 "
            f"{fmt(ms(st['latency'].get('p99_us')), '.2f')} ms, "
            f"{fmt(st['cpu_us_per_req'], '.1f')} µs CPU/req, workers "
            f"{st['workers_start']}→{st['workers_end']}, busy "
            f"{fmt(st['busy_mean'], '.2f')}" for st in r["steps"])
            + f"; {r['scale_ups']} up / {r['scale_downs']} down, errors "
            f"{r['errors']}, {r['sampler']['samples']} samples "
            f"({r['sampler']['failures']} failed)")

    def estimate_s(self, secs, warm, floor):
        return super().estimate_s(secs, warm, floor) + (len(self.defn["steps"]) - 1) * secs

    def summarize_proxy(self, s, rs, ok):
        scale_summary(s, rs, ok, self.defn)

    def ratios(self, runs, per):
        return {}

    def markdown(self, summary, meta):
        return md_scale(self.name, summary[self.name], meta)


# ringmux's elastic workers (--workers 1..N, N = the machine's CPUs, at
# least 2): one ringmux process, three consecutive wrk runs of `duration`
# each at 16, 256 and 16 connections, while a thread of the harness reads
# GET /metrics on the admin address every 250 ms (running workers, each
# worker's busy fraction, the scale-up/down counters). The process may use
# every CPU (taskset -c 0-(N-1)); see proxies.ELASTIC_PIN for --no-pin.
# The path answers after 1 ms (nginx echo_sleep, or ringmux-origin
# ?delay=1) so that the offered load follows the connections: 16 ask for
# at most 16k req/s, 256 for more than one worker serves. On `/` one worker
# is saturated at 16 connections already and shows the same busy fraction
# at 16 and at 256 (0.44 at both with CPU 1 shared, 0.86 at both with CPU 1
# to itself: busy is CPU time over wall time, and wrk and the origin hold
# CPU 0), so no mark separates the steps there. Measured on the 2-CPU
# machine (one worker, /delay1): 0.06-0.08 busy at 16 connections; at 256,
# 0.34 when it shared a CPU (pinned to CPU 0 with wrk and the origin, or
# unpinned with another build on CPU 1) and 0.66-0.80 with CPU 1 free. So
# high 0.25: one worker at 256 stays above it in every case, at 16 far
# below; low 0.12: at 16 each of two workers stays below it (0.06-0.08),
# at 256 the busiest is far above (a new worker only gets connections
# opened after it started: wrk's 256 stay on worker 0). The timers are short
# (1 s up, 3 s down) so that a run is quick. Opt-in: 3 x duration + warm-up
# per round, and a figure about ringmux alone.
SCALE = register(Scale("scale", dict(
    steps=(16, 256, 16), path={"nginx": "/delay1", "ringmux": "/?delay=1"}, depth=1,
    echo_origin=True, scale=True, delay_ms=1,
    scale_high=0.25, scale_low=0.12, scale_up_after_ms=1000, scale_down_after_ms=3000,
    sample_ms=250, proxies=["ringmux+elastic"], opt_in=True,
    desc="ringmux --workers 1..N: 16, then 256, then 16 connections on a 1 ms URL; "
         "workers over time")))
