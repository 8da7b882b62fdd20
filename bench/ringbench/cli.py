"""The command line (bench/run.sh's flags) and the run: run copies of the
binaries, the origins, the relay floor, then for every scenario, round and
proxy a fresh proxy, its measurement (the scenario's own) and a progress
line; the summary, the Markdown on stdout, the result files."""
import argparse
import datetime as dt
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

from . import common, report
from .common import FLOOR, PROXIES, RESULTS, ROOT, TICK, log
from .origins import Origins, resolve
from .procs import on_signal, stop_all, tool_version
from .proxies import Proxy, build_relay
from .scenarios import DEFAULT, ORDER, REGISTRY, SCENARIOS, Skip


def main():
    ap = argparse.ArgumentParser(prog="bench/run.sh")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up seconds before each run (default 2, or 1 when duration < 5)")
    ap.add_argument("--origin", choices=("nginx", "ringmux"), default="nginx",
                    help="the origin on CPU 0: nginx (default; one worker, the echo module for "
                         "the delayed URLs) or ringmux (ringmux-origin, thread per connection)")
    ap.add_argument("--no-floor", action="store_true",
                    help="do not build or measure the relay floor")
    ap.add_argument("--with-poll", action="store_true",
                    help="also run ringmux --busy-poll 20 (ringmux+poll) in every scenario "
                         "that runs plain ringmux")
    ap.add_argument("--baseline", metavar="BIN",
                    help="also run this ringmux binary (ringmux+base: an older build, for "
                         "before/after in one run) in every scenario that runs plain ringmux")
    ap.add_argument("--out", default=RESULTS, help="results directory (default bench/results)")
    ap.add_argument("--no-save", action="store_true",
                    help="write no result files; print the Markdown only")
    ap.add_argument("scenarios", nargs="*", metavar="scenario",
                    help="any of: " + " ".join(ORDER) + " (default: " + " ".join(DEFAULT)
                    + "; " + " and ".join(s for s in ORDER if SCENARIOS[s].get("opt_in"))
                    + " run only when named)")
    a = ap.parse_args()
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; choose from: {' '.join(ORDER)}")
    if a.rounds < 1 or a.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    scenarios = [s for s in ORDER if s in a.scenarios] if a.scenarios else DEFAULT
    warm = a.warmup if a.warmup is not None else (2 if a.duration >= 5 else 1)
    warm = int(round(warm))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    if a.baseline:
        common.BASELINE = os.path.abspath(a.baseline)
    for exe in ((common.RINGMUX, common.ORIGIN) if a.origin == "ringmux" else (common.RINGMUX,)) + (
            (common.BASELINE,) if a.baseline else ()):
        if not os.access(exe, os.X_OK):  # noqa
            sys.exit(f"missing {exe}: run bench/run.sh (it builds with cargo build --release)")

    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "?"
    meta = {
        "started": started, "rounds": a.rounds, "duration_s": a.duration, "warmup_s": warm,
        "scenarios": scenarios, "fd_limit": fd_limit, "git": git,
        "kernel": os.uname().release, "cpus": os.cpu_count(), "clk_tck": TICK,
        "versions": {"nginx": tool_version(["nginx", "-v"]),
                     "haproxy": tool_version(["haproxy", "-v"]),
                     "wrk": tool_version(["wrk", "-v"])},
        "origin": a.origin,
        "placement": ("proxy and relay floor: taskset -c 1 (one worker/thread); wrk, "
                      f"origin ({a.origin}), harness: CPU 0"),
        "scenario_defs": {},
        "origins": {},
    }
    if fd_limit < 65536:
        log(f"note: open-file limit is {fd_limit} (<65536); nginx gets worker_rlimit_nofile "
            f"{min(65536, fd_limit)}, HAProxy will warn that it cannot raise its limit")
    floor_wanted = not a.no_floor and any(SCENARIOS[s].get("floor") for s in scenarios)
    est = int(a.rounds * sum(REGISTRY[s].estimate_s(a.duration, warm, floor_wanted)
                             for s in scenarios))
    log(f"scenarios: {' '.join(scenarios)}; origin {a.origin}; {a.rounds} round(s) x {a.duration}s "
        f"(+{warm}s warm-up); about {est // 60} min {est % 60} s")

    tmp = tempfile.mkdtemp(prefix="ringmux-bench-")
    os.chmod(tmp, 0o755)
    # Run copies of the binaries: a rebuild in target/ during the run (another
    # cargo build) must not change what is measured half-way.
    for name in ("RINGMUX", "ORIGIN", "BASELINE"):
        src = getattr(common, name)
        if not src or not os.access(src, os.X_OK):
            continue  # ringmux-origin, not needed with --origin nginx (checked on use)
        base = os.path.basename(src) + ("-baseline" if name == "BASELINE" else "")
        dst = os.path.join(tmp, base)
        shutil.copy2(src, dst)
        setattr(common, name, dst)
        with open(dst, "rb") as f:
            meta.setdefault("binaries_sha256", {})[base] = \
                hashlib.sha256(f.read()).hexdigest()[:16]
    runs = []
    interrupted = None
    origins = Origins(tmp, fd_limit)
    try:
        origins.get(a.origin)
        meta["origin_desc"] = origins.describe(a.origin)
        if floor_wanted:
            common.RELAY, where = build_relay(tmp)
            if common.RELAY:
                with open(common.RELAY, "rb") as f:
                    meta.setdefault("binaries_sha256", {})["relay"] = \
                        hashlib.sha256(f.read()).hexdigest()[:16]
                meta["relay_floor"] = {"binary": "relay", "src": where, "scenarios": []}
                log(f"relay floor built from {where}")
            else:
                meta["relay_floor"] = {"reason": where}
                log(f"relay floor skipped: {where}")
        elif a.no_floor:
            meta["relay_floor"] = {"reason": "--no-floor"}
        for scn in scenarios:
            run_scenario(REGISTRY[scn], a, warm, meta, origins, tmp, fd_limit, runs)
    except (SystemExit, KeyboardInterrupt) as e:
        interrupted = f"interrupted ({e!r}) after {len(runs)} runs"
        log(interrupted + "; writing what was measured")
    finally:
        stop_all()
        subprocess.run(["rm", "-rf", tmp])
    if origins.restarts:
        meta["origin_restarts"] = origins.restarts
    meta.setdefault("origin_desc", origins.describe(a.origin))
    meta["echo_module"] = (origins.echo_reason or
                           ("loaded" if "nginx" in origins.procs else "present, not used"))
    if interrupted:
        meta["interrupted"] = interrupted
    scenarios = [s for s in scenarios if any(r["scenario"] == s for r in runs)]
    if not runs:
        sys.exit(1)

    summary = report.summarize(runs, scenarios)
    meta["finished"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    doc = {"meta": meta, "summary": summary, "runs": runs}
    md = report.markdown(meta, summary)
    print(md)
    if a.no_save:
        log("--no-save: no result files written")
        return
    report.save(a.out, stamp, doc, md)


def run_scenario(scenario, a, warm, meta, origins, tmp, fd_limit, runs):
    """Every round of one scenario: for each proxy a fresh one, measured;
    a run whose origin died under it is redone once. Each run is appended
    to `runs` as it ends, so an interruption keeps what was measured."""
    scn, sc = scenario.name, scenario.defn
    st = SimpleNamespace(origins=origins, tmp=tmp, fd_limit=fd_limit, origin=a.origin,
                         secs=a.duration, warm=warm)
    try:
        kind = scenario.origin_kind(sc, st)
    except Skip as e:
        meta.setdefault("skipped", {})[scn] = str(e)
        log(f"{scn}: skipped ({e})")
        return
    sc = dict(sc, path=resolve(sc.get("path", "/"), kind))
    if "slow_path" in sc:
        sc["slow_path"] = resolve(sc["slow_path"], kind)
    meta["scenario_defs"][scn] = scenario.scenario_def(sc, kind, st)
    paths = [f"`{sc['path']}`"] + ([f"`{sc['slow_path']}`"] if "slow_path" in sc else [])
    meta["origins"][scn] = scenario.describe_origin(sc, kind, paths, st)
    proxies = (sc.get("variants") or sc.get("proxies")
               or PROXIES + ([FLOOR] if sc.get("floor") and common.RELAY else []))
    if a.with_poll and "ringmux" in proxies and "ringmux+poll" not in proxies:
        proxies = list(proxies)
        proxies.insert(proxies.index("ringmux") + 1, "ringmux+poll")
    if a.baseline and "ringmux" in proxies and "ringmux+base" not in proxies:
        proxies = list(proxies)
        proxies.insert(proxies.index("ringmux") + 1, "ringmux+base")
    if FLOOR in proxies:
        meta["relay_floor"]["scenarios"].append(scn)
    for rnd in range(1, a.rounds + 1):
        for px in proxies:
            for attempt in (1, 2):
                origin, balance, why = scenario.upstream(px, sc, st, kind)
                proxy = Proxy(px, origin, tmp, fd_limit, balance=balance, sc=sc)
                t = time.time()
                if why:
                    r = {"proxy": px, "error": why}
                elif not proxy.start():
                    r = {"proxy": px, "error": f"failed to start: {proxy.error}"}
                else:
                    try:
                        r = scenario.measure(proxy, sc, st)
                    finally:
                        proxy.stop()
                if scenario.origins_alive(st, kind, why):
                    break
                # The origin died under this run: the run measured
                # nothing useful. Restart the origin and redo it once.
                r.setdefault("error", "origin died during the run")
                log(f"[{scn} r{rnd} {px}] origin died during the run"
                    + ("; retrying" if attempt == 1 else ""))
            r.update(scenario=scn, round=rnd, origin=kind)
            runs.append(r)
            if "error" in r:
                log(f"[{scn} r{rnd} {px}] ERROR {r['error'][:300]}")
            else:
                log(f"[{scn} r{rnd} {px}] " + scenario.progress(r, t))
    scenario.finish(st)
