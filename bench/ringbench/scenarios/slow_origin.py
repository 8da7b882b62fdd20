"""slow-origin: an origin that answers after 5 ms, 64 connections x 8
pipelined; measured as a plain load scenario, with a section of its own
(mean batch latency against the origin's delay)."""
from ..render import fmt, ms
from .base import Scenario, register


class SlowOrigin(Scenario):
    def markdown(self, summary, meta):
        d = self.defn["delay_ms"]
        served = meta.get("origins", {}).get(self.name, "?")
        L = [f"slow-origin (origin delay {d} ms, served by {served}, 8 requests "
             "pipelined per connection): mean batch latency = time from writing the 8 requests to reading the "
             "last of their responses (an upper bound for each request of the batch).", "",
             "| proxy | mean batch latency ms | ÷ origin delay | Little's-law check ms |",
             "|---|---:|---:|---:|"]
        for px, s in summary[self.name]["proxies"].items():
            m = ms(s.get("mean_us"))
            L.append("| {} | {} | {} | {} |".format(
                px, fmt(m, ".2f"), fmt(m and m / d, ".1f") + ("×" if m else ""),
                fmt(ms(s.get("batch_mean_littles_law_us")), ".2f")))
        L.append("")
        return L


# Served by nginx with the echo module where it is installed (the main
# origin with --origin nginx, a second one on CPU 0 with --origin
# ringmux); otherwise by ringmux-origin with ?delay=5.
register(SlowOrigin("slow-origin", dict(
    conns=64, path={"nginx": "/delay5", "ringmux": "/?delay=5"}, depth=8,
    delay_ms=5, echo_origin=True,
    desc="origin +5 ms per response, 64 connections x 8 pipelined")))
