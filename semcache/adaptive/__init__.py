"""Load-adaptive policies: thresholds and TTLs that follow engine load, inside a false-hit budget.

* :mod:`semcache.adaptive.pressure`: a pressure signal per model from the load model;
* :mod:`semcache.adaptive.controller`: a controller per category (steps, hysteresis,
  calibrated floor, serve-stale, kill switches, dry run);
* :mod:`semcache.adaptive.events`: the log of every move.
"""

from semcache.adaptive.controller import AdaptiveControl, Effective
from semcache.adaptive.events import AdaptiveEvent, EventLog
from semcache.adaptive.pressure import NO_PRESSURE, Pressure, PressureSource, PressureTargets, pressure_of

__all__ = ["AdaptiveControl", "AdaptiveEvent", "Effective", "EventLog", "NO_PRESSURE", "Pressure",
           "PressureSource", "PressureTargets", "pressure_of"]
