"""small, many, pipeline, large: the plain load scenarios. Each is one wrk
run (after a warm-up) through each proxy and the relay floor where it has
floor=True, measured and reported by the defaults of Scenario."""
from .base import Scenario, register

# A path is either one string (the same on both origins) or a dict keyed by
# the origin kind: "nginx" (start_nginx_origin) or "ringmux" (ringmux-origin).
for _name, _defn in (
        ("small", dict(conns=64, path="/", depth=1, floor=True,
                       desc="64 keep-alive connections, 20-byte bodies")),
        ("many", dict(conns=2000, path="/", depth=1,
                      desc="2,000 keep-alive connections, 20-byte bodies")),
        ("pipeline", dict(conns=64, path="/", depth=8, floor=True,
                          desc="64 connections, 8 pipelined requests each")),
        ("large", dict(conns=16, path={"nginx": "/large.bin", "ringmux": "/?size=1048576"},
                       depth=1, floor=True, desc="16 connections, 1 MiB bodies"))):
    register(Scenario(_name, _defn))
