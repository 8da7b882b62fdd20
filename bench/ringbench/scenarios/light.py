"""light and moderate (opt-in): one and eight connections on small's URL,
ringmux with and without --busy-poll 20 beside nginx and HAProxy; measured
and reported as the plain load scenarios."""
from .base import Scenario, register

# Light and moderate load, where a worker often runs out of work and
# sleeps: one and eight connections on small's URL, ringmux with and
# without --busy-poll 20 beside nginx and HAProxy. Each sleep costs a
# wake-up when the next packet comes (on loopback and in a VM, tens of
# microseconds), so latency here is mostly wake-ups. Opt-in: four columns
# x two scenarios x rounds x (duration + warm-up).
for _name, _conns in (("light", 1), ("moderate", 8)):
    register(Scenario(_name, dict(
        conns=_conns, path="/", depth=1, opt_in=True,
        proxies=["ringmux", "ringmux+poll", "nginx", "haproxy"],
        desc=f"{_conns} connection(s) on a fast URL: ringmux sleeping and with --busy-poll 20")))
