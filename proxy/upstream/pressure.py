"""Pressure per model for the adaptive controller, from the proxy's view of its upstreams.

A model's engine load is :meth:`UpstreamLoad.model_load` over every upstream
serving it (the same figure IC-Cache's router reads); when none of them
exports vLLM metrics, this proxy's own requests in flight stand in. A model
whose every engine stopped answering its metrics counts as failing (stale
entries may then be served, see ``under_load.serve_stale_s``).
"""

from __future__ import annotations

from proxy.upstream.load import UpstreamLoad
from proxy.upstream.pool import UpstreamPool
from semcache.adaptive import NO_PRESSURE, Pressure, PressureSource, PressureTargets, pressure_of


def model_pressure(pool: UpstreamPool, load: UpstreamLoad | None, targets: PressureTargets) -> PressureSource:
    def pressure(model: str) -> Pressure:
        upstreams = pool.router.candidates(model)
        if not upstreams:
            return NO_PRESSURE
        engine = load.model_load(upstreams) if load is not None else None
        return pressure_of(engine, targets, in_flight=sum(u.in_flight for u in upstreams),
                           failing=load is not None and load.failing(upstreams))

    return pressure
