"""hosts (opt-in): routing by host name at small's load, with one host
route and with 10,000, through each proxy: ringmux `[[route]] host = ...`
(exact hosts in a map), nginx `server_name` (its server-names hash),
HAProxy `use_backend` with a map file. Every request names the last host
configured; the figure is each proxy's CPU per request at 10,000 over
its own at 1 (the target for ringmux: at most 5% more)."""
from ..render import fmt, md_failed, ms
from .base import Scenario, register

COUNTS = (1, 10000)
KINDS = [f"{p}+hosts{n}" for p in ("ringmux", "nginx", "haproxy") for n in COUNTS]


# Every request names this host; it is the last of the N configured (the
# others are h1..h(N-1)).
TARGET = "target.bench.test"


def host_names(n):
    """The N host names a proxy is configured with, the target last."""
    return [f"h{i}.bench.test" for i in range(1, n)] + [TARGET]


def hosts_of(kind):
    """N for a "PROXY+hostsN" kind, else None."""
    _, _, n = kind.partition("+hosts")
    return int(n) if n.isdigit() else None


class Hosts(Scenario):
    load_table = load_ratios = False

    def ratios(self, runs, per):
        out = {}
        for p in ("ringmux", "nginx", "haproxy"):
            one, many = per.get(f"{p}+hosts{COUNTS[0]}", {}), per.get(f"{p}+hosts{COUNTS[-1]}", {})
            a, b = many.get("cpu_us_per_req"), one.get("cpu_us_per_req")
            out[f"cpu_us_per_req_{p}_many_over_one"] = (a / b) if (a is not None and b) else None
        return out

    def markdown(self, summary, meta):
        scn, sc = self.name, self.defn
        per, rn = summary[scn]["proxies"], summary[scn]["ratios"]
        L = [f"{scn}: small's load ({sc['conns']} connections, `{sc['path']}`) with a `Host` "
             f"of the last of N host routes: ringmux `[[route]] host`, nginx `server_name`, "
             "HAProxy `use_backend` with a map file. ÷ 1 route: CPU per request at N over the "
             "same proxy's at 1 (target for ringmux at 10,000: ≤ 1.05).", "",
             "| proxy | routes | req/s | CPU µs/req | ÷ 1 route | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
        for px, s in per.items():
            name, _, count = px.partition("+hosts")
            if not s["ok_runs"]:
                L.append(f"| {name} | {count} | {md_failed(s, 5)}")
                continue
            ratio = rn.get(f"cpu_us_per_req_{name}_many_over_one") if count != str(COUNTS[0]) else 1.0
            L.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                name, f"{int(count):,}", fmt(s["rps"], ",.0f"), fmt(s["cpu_us_per_req"], ".2f"),
                fmt(ratio, ".3f"), fmt(ms(s["p99_us"]), ".3f"), s["errors"]))
        L.append("")
        return L


register(Hosts("hosts", dict(
    conns=64, path="/", depth=1, opt_in=True, proxies=KINDS, host=TARGET,
    desc="small's load, routed by host among 1 and among 10,000 host routes")))
