"""The scenarios, one module each (plain: small, many, pipeline, large;
light: light and moderate), registered in base.REGISTRY as they are
imported. The import order below is the order in which scenarios run, are
listed by --help and appear in the reports.

Adding a scenario: a module here that registers a Scenario (see base.py),
and its name in this list."""
from . import (plain, slow_origin, mixed, idle, observability, skewed,  # noqa: F401
               scale, warmup, light, hosts, tls, h2, h2origin)
from .base import REGISTRY, SCENARIOS, Skip  # noqa: F401

ORDER = list(SCENARIOS)
DEFAULT = [s for s in ORDER if not SCENARIOS[s].get("opt_in")]
