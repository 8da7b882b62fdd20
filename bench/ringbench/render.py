"""Formatting shared by the reports (report.py and each scenario's own
sections and charts): medians, number cells, SVG escaping and axis tops,
the failed-row cell, and the proxies' names and colours."""
import math
import statistics

from .common import FLOOR


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec=".1f", none="–"):
    return none if v is None else format(v, spec)


def ms(us):
    return None if us is None else us / 1000


def md_failed(s, cols):
    return f"failed: {'; '.join(s['failures']).replace(chr(10), ' ')[:200]}" + " |" * cols


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_max(v):
    if v <= 0:
        return 1
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v:
            return m * e
    return 10 * e


COLORS = {"ringmux": "#d9534f", "ringmux+poll": "#f0ad4e", "ringmux+base": "#b084cc", "nginx": "#2f8f4e",
          "haproxy": "#3465a4", FLOOR: "#9a9a9a"}
LABELS = {"ringmux": "ringmux", "ringmux+poll": "ringmux --busy-poll 20",
          "ringmux+base": "ringmux (baseline)", "nginx": "nginx",
          "haproxy": "HAProxy", FLOOR: "relay floor"}
MD_NAMES = {"ringmux": "ringmux", "ringmux+poll": "ringmux --busy-poll 20",
            "ringmux+base": "ringmux (baseline)", "nginx": "nginx",
            "haproxy": "haproxy", FLOOR: "relay floor"}
