"""How much evidence an incident offers at all: the detectability bound of the wide world.

An incident of 3x for 5 minutes on a key that calls once an hour adds half a call: nothing,
not even a detector that knew the truth, could tell it from chance. `oracle_nats()` measures
what an *oracle* could: one that knows, minute by minute, the identity's true rate with and
without the incident (rhythm, level noise and traps included) and counts sessions, the
world's independent arrivals (a session's calls follow one another and carry no more
evidence about the rate than the session itself). Its expected log-likelihood ratio over the
incident is the Kullback-Leibler divergence of the two Poisson session counts, summed over
the incident's minutes:

    Σ λ₁ ln(λ₁/λ₀) − (λ₁ − λ₀)        λ = expected calls / session dispersion

A retry loop's calls are its own sessions (one request, steadily). An oracle's sequential test
reaches e^N on average after N nats, so an incident offering fewer nats than an alert needs
(`alert_evidence`, 14 by default) is beyond the reach of any detector held to the same false
alarm rate. `meterguard evaluate` reports recall both over every incident and over those
within reach.
"""

from __future__ import annotations

import math

from meterguard.streams.simulation.wide_incidents import WideIncident
from meterguard.streams.simulation.wide_world import WidePlan


def session_dispersion(plan: WidePlan, who: int) -> float:
    """E[S²]/E[S] of the identity's session sizes: geometric (mean s): 2s - 1; fixed: s."""
    s = float(plan.pop.session[who])
    return s if bool(plan.pop.fixed_session[who]) else max(1.0, 2 * s - 1)


def incident_factor(incident: WideIncident, minute: int) -> float:
    """The incident's multiple of the identity's ordinary rate at this run minute."""
    kind = incident.label.kind
    if kind == "runaway_agent":
        return incident.magnitude
    if kind == "slow_ramp":
        done = (minute - incident.first + 0.5) / (incident.end - incident.first)
        return float(incident.magnitude**done)
    return 1.0  # a retry loop adds calls of its own


def oracle_nats(plan: WidePlan, incident: WideIncident) -> float:
    """Expected evidence (nats) an oracle gathers over the whole incident."""
    who, phi = incident.who, session_dispersion(plan, incident.who)
    total = 0.0
    for minute in range(incident.first, incident.end):
        with_it = float(plan.mean_calls(minute)[who])
        without = with_it / incident_factor(incident, minute)
        lam0 = without / phi
        lam1 = with_it / phi + incident.retry_rate
        if lam0 <= 0:
            continue  # the identity does not call at all then: no yardstick, no evidence
        total += lam1 * math.log(lam1 / lam0) - (lam1 - lam0)
    return total
