"""The scenario registry and the Scenario base class.

A scenario is one module under scenarios/ that registers a Scenario (or a
subclass): its definition (a dict: the fields the run loop, --help and the
JSON's meta.scenario_defs read, unchanged from the one-file harness) and
the methods that are its own: which origin it runs in front of, its
measurement of one run, its progress line, the summary of a proxy's runs,
its ratios, its Markdown section and, when it has one, its own chart. The
defaults are those of a plain load scenario (small, many, ...): one wrk
run through each proxy in front of the shared origin, a row per proxy in
the load table, a panel in the chart of CPU per request."""
from ..common import FLOOR, PROXIES, log
from ..load import measure_load
from ..render import fmt, med, ms

SCENARIOS = {}  # name -> definition, in registration order (scenarios/__init__.py)
REGISTRY = {}  # name -> Scenario


def register(scenario):
    REGISTRY[scenario.name] = scenario
    SCENARIOS[scenario.name] = scenario.defn
    return scenario


class Skip(Exception):
    """The scenario cannot run here (the reason goes to meta.skipped)."""


class Scenario:
    load_table = True  # a row per proxy in the Markdown's load table
    load_ratios = True  # a row in the ratios table, a panel in the load chart
    ratio_prefix = ""  # of req/s and p99 in the ratios table ("fast_": mixed)
    ratio_keys = ("cpu_us_per_req", "rps", "p99_us")  # ringmux ÷ nginx, HAProxy
    chart_ratio = ("cpu_us_per_req", "")  # (ratio, word after "ringmux") under its panel
    chart = None  # its own chart, function(meta, summary): <stamp>-<name>.svg

    def __init__(self, name, defn):
        self.name, self.defn = name, defn

    # ------------------------------------------------------------ the run
    # st: this scenario's state for its runs (cli.main): origins (an
    # Origins), tmp, fd_limit, origin (--origin), secs (--duration), warm;
    # the hooks may keep more on it.

    def origin_kind(self, sc, st):
        """The origin kind it runs in front of ("nginx" or "ringmux"), or
        raise Skip."""
        kind = st.origin
        if sc.get("echo_origin"):
            # nginx + echo_sleep wherever possible (see start_nginx_origin);
            # otherwise ringmux-origin ?delay=.
            kind = "nginx" if st.origins.has_echo() else "ringmux"
            if kind == "ringmux":
                log(f"{self.name}: no echo module ({st.origins.echo_reason}); "
                    "using ringmux-origin ?delay=")
        return kind

    def scenario_def(self, sc, kind, st):
        """Its entry in meta.scenario_defs."""
        return dict(sc, origin=kind)

    def describe_origin(self, sc, kind, paths, st):
        """Its entry in meta.origins (paths: the paths it requests, quoted)."""
        return ("nginx + echo module (echo_sleep)" if kind == "nginx" and (
            sc.get("echo_origin") or sc.get("mixed")) else
            "nginx" if kind == "nginx" else "ringmux-origin") + " " + " + ".join(paths)

    def upstream(self, px, sc, st, kind):
        """Before each run: (the proxy's origin: an address or a list, the
        balance of nginx/HAProxy over several, why the run cannot start)."""
        return st.origins.get(kind), None, None

    def origins_alive(self, st, kind, why):
        """After each run: whether its origins lived through it (if not, the
        run is redone once). Stops the origins that were the run's own."""
        return st.origins.alive(kind)

    def measure(self, proxy, sc, st):
        return measure_load(proxy, sc, st.secs, st.warm)

    def finish(self, st):
        """After its last run."""

    def progress(self, r, t):
        """The progress line of a run without error (after "[scn rN px] ");
        t: when the run started."""
        lat = r["latency"]
        return (f"{r['rps']:,.0f} req/s, "
                f"{fmt(r['cpu_us_per_req'], '.2f')} µs CPU/req, p99 "
                f"{fmt(ms(lat.get('p99_us')), '.2f')} ms, RSS "
                f"{r['peak_rss_kb'] / 1024:.1f} MiB, errors {r['errors']}"
                + self.note(r))

    def note(self, r):
        """The tail of the progress line: what this scenario adds."""
        return ""

    def estimate_s(self, secs, warm, floor):
        """Seconds one round takes, about (floor: the relay floor is built)."""
        n = (len(self.defn.get("variants") or self.defn.get("proxies") or PROXIES)
             + (1 if floor and self.defn.get("floor") else 0))
        return n * (secs + warm + 1)

    # --------------------------------------------------------- the report

    def summarize_proxy(self, s, rs, ok):
        """A proxy's summary into s (rs: its runs, ok: those without error)."""
        load_summary(s, rs, ok)

    def ratios(self, runs, per):
        ratios = {}
        for other in ("nginx", "haproxy"):
            for k in self.ratio_keys:
                a, b = per["ringmux"].get(k), per[other].get(k)
                ratios[f"{k}_ringmux_over_{other}"] = (a / b) if (a is not None and b) else None
        if FLOOR in per:
            a, b = per["ringmux"].get("cpu_us_per_req"), per[FLOOR].get("cpu_us_per_req")
            ratios[f"cpu_us_per_req_ringmux_over_{FLOOR}"] = (a / b) if (a is not None and b) else None
        return ratios

    def markdown(self, summary, meta):
        """Its own section of the Markdown (lines), after the load tables."""
        return []

    def chart_values(self, per, cols):
        """Its panel in the load chart: values, every round's values, unit, what."""
        vals = [per[p].get("cpu_us_per_req") for p in cols]
        alls = [[a for a in per[p].get("all_cpu_us_per_req") or [] if a is not None] for p in cols]
        return vals, alls, "µs/request", "CPU"

    def chart_marks(self, o, x0, pw, top, y, ymax):
        """Anything its panel draws besides the bars and the grid."""


def load_summary(s, rs, ok):
    """Medians of a plain load scenario's runs of one proxy into s."""
    for key in ("rps", "cpu_us_per_req", "peak_rss_kb", "batch_mean_littles_law_us"):
        s[key] = med(r.get(key) for r in ok)
    for key in ("p50_us", "p99_us", "p999_us", "mean_us"):
        s[key] = med(r.get("latency", {}).get(key) for r in ok)
    s["errors"] = sum(r.get("errors", 0) for r in rs)
    s["all_cpu_us_per_req"] = [r.get("cpu_us_per_req") for r in ok]
    s["all_rps"] = [r.get("rps") for r in ok]
