"""The rule-based schedule: what a site runs when the MILP cannot answer in time.

One forward pass over the day, a handful of rules an operator would write down:

1. A battery below soc_min is recharged as fast as its rating allows: every interval spent
   below the band counts as violation again, more than importing over the cap for it would.
2. PV surplus goes into the battery up to soc_max, less the room rule 9 keeps for what pays to
   store later (surplus that a full battery would spill at a loss now is stored whatever that
   room). Surplus the grid takes at a non-negative price within the export cap goes in only up to
   what the later intervals will draw: the end-of-day target (at least soc_min) where some later
   hour buys dearer than that export price (with a demand charge, always), rule 4's draws and
   rule 3's to its threshold, and the draws of rule 3's expensive and middle hours (their whole
   deficit, up to the discharge rating) up to the last of them where storing pays: where the
   export price it forgoes, after round-trip losses, and the wear the objective bills per kWh
   delivered cost less than that hour's buy price. Where a later hour of rule 9's that makes room
   pays so, it goes in up to soc_max (rule 9 draws what lies above the room). The rest is exported
   up to the cap while exporting costs less than curtailing; only what neither can take is
   curtailed.
3. In the day's expensive hours (top quartile of the buy price) the battery covers the deficit
   when the import it replaces costs more than the battery's wear (cycle_cost_per_kwh), down to a
   floor that keeps the end-of-day target reachable by later recharging, net of what rule 4 will
   draw from it later. Energy the target needs back goes only where putting it back pays after
   round-trip losses and wear (rule 5's test): the floor counts only the later recharging, PV
   surplus at the export price it forgoes or the grid at its buy price, that is cheap enough; what
   the battery holds above the target costs only the wear. The floor also keeps what the dearer
   expensive hours after it will draw (their whole deficit, up to the discharge rating; where rule 4
   or the threshold below draws more, that), refilled only by the same later recharging: on a day of
   many prices (a spot tariff) the dearest expensive hours are covered first, not the earliest.
   With a demand charge billed on the day's peak import, the battery first holds the import of
   every interval, expensive or not, at a threshold, whatever the price and the wear: it discharges
   what the import would exceed it by, down to the level the end-of-day target needs when every
   later interval recharges under the threshold (net of rule 4's later draws), and it is recharged
   for it only where the import stays under the threshold (rules 5 and 6). The threshold lies
   between the lowest one the battery can hold and the peak the site would draw without it. The
   lowest is where the battery, charging under the threshold wherever the import leaves room and
   discharging above it, would otherwise have to leave its SOC band or start the day fuller than it
   is to end on target (the ratings, the efficiencies and rule 4's draws count; it is never below
   the day's highest deficit less the discharge rating). Each kW held lower saves the demand charge
   and costs the discharges of every interval above it, their losses and wear, and the energy the
   expensive hours would otherwise have had: the threshold is the cheapest, by the objective, of
   the lowest and a few above it (a short golden-section search between the lowest and the
   no-battery peak, closer to the lowest, and the no-battery peak itself). Beyond the threshold the battery covers more of an expensive hour's deficit, where
   that beats the wear, only with what the later intervals' threshold and rule 4 will not need
   (and, as without a demand charge, what its floor keeps for the dearer expensive hours).
   Should the plan hold less than that energy balance allows (rule 1 recharging a battery that
   starts below soc_min over the threshold, say), the lowest is the one the plan holds, found by
   bisection; should it not even hold the no-battery peak, the battery covers the expensive hours'
   deficit chronologically, whatever the wear and the recharge.
   It also discharges in the day's middle hours, with a demand charge too (the energy they draw is
   bought back under the threshold): of the other hours with a deficit, those whose price beats a
   kWh stored in the cheapest of the cheap hours (bottom quartile) where storing pays against a
   later expensive hour (rule 5's test) after round-trip losses and wear, the dearest that
   together draw what the SOC band holds and the day's PV surplus can put back where storing it
   pays against the cheapest of them (a full battery exporting at 0.05 refills for 0.35). There
   it covers the deficit with what it holds above its middle floor (and rule 3's floor): the level
   that the later expensive hours' draws (their whole deficit, up to the discharge rating), the
   later dearer middle hours' (likewise: in time order the cheaper would spend it first), rule 9's
   later discharges' in hours no cheaper (likewise) and, with a demand charge, the later
   discharges to the threshold in the other hours (rule 9's on top of them), or rule 4's where
   larger, and the end-of-day target need, counting only the later recharging in rule 5's hours
   where storing pays against the cheapest of the middle hours (with a demand charge, under the
   threshold), and the PV surplus whose export price does so. In an hour where rule 5 charges,
   only when its next charging hour is cheaper: what it delivered would otherwise be bought back
   at the same price or dearer, less the losses.
4. The battery also discharges to hold imports under the import cap, down to the level the
   end-of-day target still needs: energy it cannot recharge later would only move the violation
   to the end of the day, larger by the discharge losses.
5. In cheap hours it charges from the grid when that pays after round-trip losses against a later
   expensive hour. Its hours are those outside the expensive ones where that pays, of their price
   bands the cheapest that can store (as the peak guard allows) what the expensive hours, rule 3's
   middle hours and, with a demand charge, rule 3's discharges to its threshold in the other hours
   need, up to the SOC band: the bottom quartile where it can store that, dearer hours that still
   pay where it cannot (the peak guard leaving its hours too little room, say). Where those hours
   all come too late for an expensive hour (a morning peak before a cheap midday), what they and
   the battery's charge above soc_min at the start cannot store before it, the cheapest hours
   before it where storing pays against it store. It charges there
   up to the energy the expensive hours after it will need, and with a demand charge what rule
   3's discharges to its threshold will draw in the other hours after it too, but not into the
   room rule 9 keeps; with a demand charge, never above rule 3's threshold (without one, the peak
   the site would draw without a battery). Those of its hours where storing pays against the
   cheapest of the middle hours charge for what the middle hours after them will draw too. Where
   its later, cheaper hours (as the peak guard allows; besides its own, those outside rule 3's
   expensive and middle hours where storing pays against no later expensive hour, where rule 6
   buys the end-of-day target back) or PV surplus exported at a lower price (or where exporting
   costs more than curtailing) can store some of that in time, it charges only to the level that
   those draws and rule 9's later discharges to make room (in each interval the larger) and the
   end-of-day target (at least soc_min) need with that later charging, when that is lower: a
   dearer cheap hour does not fill the battery before a cheaper one. Those draws count, of an
   hour where storing at the charging hour's price does not pay (rule 5's test), expensive or
   one where rule 9 makes room, only what rule 3's threshold and rule 4 draw there: the rest
   would cost more stored than bought.
6. It charges for the terminal SOC target in the cheapest hours that can still store it: in each
   interval, what the later intervals no dearer to buy in (and PV surplus, whatever the price)
   could not store in time, counting the discharges rule 4 and rule 3's threshold will still make:
   under that threshold when a peak is billed and time allows, up to the import cap when it must.
   On a flat tariff that is just in time.
7. A battery above soc_max (it started the day there) discharges into the site's load, and into
   the export room PV leaves while exporting costs less than staying above, until it is back
   within its band.
8. While the site is paid to import (a negative buy price), the battery charges from the grid
   as fast as rule 5's limits allow, in the most negative of those hours that can fill it: every
   kWh it draws then earns money, whether or not a later hour uses it. It leaves room for the PV
   surplus of the hours after it, which rule 2 stores first, so as not to spill it at a price.
   Not on a day with a demand charge: charging up to the peak guard would set the billed peak
   that rule 3's discharges are there to lower.
9. Storing pays by itself where a full battery would spill PV surplus at a loss (export it at a
   negative price, or curtail it: beyond the export cap, or where exporting costs more than
   curtailing) and in rule 8's hours: the battery makes room for it beforehand. The room it needs
   at the end of each interval is worked backwards from the end of the day: each such interval
   needs what it can store (the surplus spilt at a loss, up to the charge rating; in rule 8's
   hours what the import cap leaves the rating), an expensive hour makes room of its own by what
   rule 3 would draw there, and no more room is needed than the SOC band holds. The battery
   discharges into the deficit of the dearest hours before such intervals that together can make
   the most room they need, and of the expensive hours among them, where what it delivers
   replaces import dearer than storing it back later costs after round-trip losses and wear
   (rule 5's test, against the priciest of the later intervals that refill it): down to the
   level that leaves that room, counting the room the later of those hours will still make, and
   never below rule 3's floor. What it stores back then serves the later hours and the end-of-day
   target as the energy it delivered would have.
10. The plan is never dearer, by the objective, than leaving the battery idle all day (PV serving
   the load, the rest exported while that costs less than curtailing, within the export cap): on
   a day where the rules' interplay would cost more, the battery idles.

By construction it never charges and discharges, or imports and exports, in the same interval,
and it never leaves [0, capacity] or exceeds a rating or the hard export cap.

This module makes rule 10's choice; its submodules plan the rest: `prices` (the expensive and
cheap hours, the cheapest price bands), `levels` (the energy the target needs at the end of each
interval), `day` (what the rules read off the day whatever rule 3's threshold), `threshold`
(rules 1 to 9, searching rule 3's threshold with a demand charge), `charging` (rule 5's hours and
levels), `forward_pass` (the pass over the intervals) and `tolerance` (what counts as rounding).
"""

from __future__ import annotations

import numpy as np

from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.fallback.prices import charging_hours, price_quartiles
from dispatch_pipeline.core.fallback.threshold import planned_schedule
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import Schedule

__all__ = ["charging_hours", "idle_schedule", "price_quartiles", "rule_based_schedule"]


def rule_based_schedule(problem: DispatchProblem) -> Schedule:
    """The rules of the module docstring, over the whole day."""
    planned = planned_schedule(problem)
    idle = idle_schedule(problem)
    return idle if objective_value(problem, idle) < objective_value(problem, planned) else planned


def idle_schedule(problem: DispatchProblem) -> Schedule:
    """Rule 10's yardstick: the battery idle all day, PV serving the load and its surplus exported
    within the export cap where that costs less than curtailing it."""
    net = problem.load_kw - problem.pv_kw
    w = problem.weights
    surplus = np.maximum(-net, 0.0)
    export = np.where(w.cost * problem.sell >= -w.curtail, np.minimum(surplus, problem.export_bound_kw), 0.0)
    curtail = surplus - export
    idle = np.zeros(problem.intervals)
    return Schedule(
        pv_set=problem.pv_kw - curtail,
        curtail=curtail,
        charge=idle,
        discharge=idle.copy(),
        grid_import=np.maximum(net, 0.0),
        grid_export=export,
        energy=np.full(problem.intervals, float(problem.energy_initial_kwh)),
    )

