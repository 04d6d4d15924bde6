"""What the rules read off the day whatever rule 3's threshold."""

from __future__ import annotations

import numpy as np

from dispatch_pipeline.core.fallback.levels import level_needed, sum_after
from dispatch_pipeline.core.fallback.prices import charging_hours, hours_by_price, price_quartiles
from dispatch_pipeline.core.fallback.tolerance import EPS
from dispatch_pipeline.core.problem import DispatchProblem


class Day:
    """What the rules read off the day whatever rule 3's threshold: computed once, for the forward
    pass (`forward_pass`) that runs once a day, and a few times with a demand charge."""

    def __init__(self, problem: DispatchProblem) -> None:
        self.problem = problem
        T, dt = problem.intervals, problem.dt
        bess = problem.bess
        eta_d, max_dis = bess.discharge_efficiency, bess.max_discharge_kw
        e_min, e_max, e_final = problem.energy_min_kwh, problem.energy_max_kwh, problem.energy_final_kwh
        buy, sell = problem.buy, problem.sell
        import_cap = problem.import_cap_kw if problem.import_cap_kw is not None else np.inf
        w = problem.weights
        self.target_band = (e_final, e_min, e_max)
        # Rule 6's price rows: no_dearer[k, u], interval u buys at no more than the k-th price of
        # the day; price_rows[t], the row of t's price; price_first[k], the first interval at it.
        prices, self.price_first, self.price_rows = np.unique(buy, return_index=True, return_inverse=True)
        self.no_dearer, self.hours = buy[None, :] <= prices[:, None], np.arange(T)

        expensive, cheap = price_quartiles(buy)
        # Rule 3's hours: discharging there replaces import dearer than the wear it costs, or, with
        # a demand charge, may also lower the day's billed peak.
        discharging = expensive & ((buy > bess.cycle_cost_per_kwh) | (problem.demand_charge_per_kw > 0))
        deficit = np.maximum(problem.load_kw - problem.pv_kw, 0.0)
        surplus = np.maximum(problem.pv_kw - problem.load_kw, 0.0)
        self.expensive, self.cheap, self.discharging = expensive, cheap, discharging
        self.deficit_kw, self.surplus_kw, self.import_cap = deficit, surplus, import_cap
        self.surplus_gain = self.chargeable(0.0)  # what PV surplus alone can store
        needed_at_cap, holding_floor = self._rule_4_levels()

        # Stored energy the expensive hours after t will draw, and the priciest of them: grid
        # charging at t pays only against a dearer hour still to come.
        with np.errstate(over="ignore"):
            self.expensive_need = np.where(discharging, np.minimum(deficit, max_dis) * dt / eta_d, 0.0)
        self.need_after = sum_after(self.expensive_need)
        dearest_after = np.concatenate(
            [np.maximum.accumulate(np.where(discharging, buy, -np.inf)[::-1])[::-1][1:], [-np.inf]]
        )
        export_beats_curtailing = w.cost * sell >= -w.curtail
        exported_at = np.where(export_beats_curtailing, sell, -np.inf)  # what storing surplus forgoes
        self.pays_to_store = self.pays_against(buy, dearest_after)
        with np.errstate(over="ignore"):
            drawable = np.minimum(deficit, max_dis) * dt / eta_d
        self._middle_hours(cheap, drawable, exported_at)
        # Rule 5's hours, before it narrows them to the price bands it needs (every pass does): any
        # outside the expensive ones where storing pays, as the bottom quartile alone may not store
        # enough under the peak guard; the narrowing keeps to the quartile where it does.
        self.storing = ~expensive & self.pays_to_store
        self.storing_by_price = hours_by_price(buy, self.storing)
        self._arbitrage_prices(drawable, exported_at)
        # Rule 8's hours: drawing from the grid earns money (when cost counts at all).
        self.paid = (buy < -EPS) & (w.cost > 0) & (problem.demand_charge_per_kw == 0)
        # Without a demand charge the peak guard is the import cap, so this is the pass's own.
        self.paid_to_charge = charging_hours(buy, self.paid, self.at_cap, e_max - e_min)
        lossy, self.room_for, self.making_room = self._room_for_gains(export_beats_curtailing)
        # What the middle floor keeps besides the expensive hours' draws: rule 9's, at their most.
        self.middle_reserve = np.where(self.making_room & ~discharging, drawable, 0.0)
        self.middle_prices = self._middle_prices()
        self._store_ceilings(export_beats_curtailing)
        self._per_interval(needed_at_cap, holding_floor, lossy, export_beats_curtailing, exported_at)

    def _rule_4_levels(self) -> tuple[np.ndarray, np.ndarray]:
        """Rule 4's levels: (the one the end-of-day target needs when every later hour charges up
        to the import cap, rule 4's later draws counted; the floor its own discharges stop at).
        Keeps rule 4's draws (`forced`) and what each interval can store under the cap (`at_cap`)."""
        problem = self.problem
        T, dt = problem.intervals, problem.dt
        bess = problem.bess
        eta_d, max_dis = bess.discharge_efficiency, bess.max_discharge_kw
        e_final, e_min, e_max = self.target_band
        buy, w = problem.buy, problem.weights
        deficit, import_cap = self.deficit_kw, self.import_cap
        # Stored energy rule 4 will draw later to hold imports under the cap (an interval with load
        # above the cap has nothing to charge from). The levels below count it: what the later hours
        # can recharge does not bring the battery to its target if rule 4 spends part of it first.
        with np.errstate(divide="ignore", over="ignore"):
            self.forced = np.minimum(np.maximum(deficit - import_cap, 0.0), max_dis) * dt / eta_d
        self.at_cap = self.chargeable(import_cap)
        needed_at_cap = self.level_needed(self.at_cap)
        # Rule 4's own floor: the level the target needs, charging at the cap in every later hour,
        # not counting rule 4's later discharges (where the energy is not there they do not happen;
        # each kWh it holds the cap with is worth the same whichever hour it is spent in).
        # Held back only where the shortfall at the end would cost more than the discharge saves: a
        # kWh delivered ends 1/eta_d kWh short, against the import violation, price and wear it spares.
        # A target below soc_min (a start there, left as the target) is no floor.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            holds_for_target = w.violation / eta_d > w.violation + w.cost * (buy - bess.cycle_cost_per_kwh)
        target_floor = (  # needed_at_cap's, where rule 4 draws nothing
            needed_at_cap if not self.forced.any() else level_needed(self.at_cap, np.zeros(T), e_final, e_min, e_max)
        )
        holding_floor = np.where(holds_for_target, np.maximum(e_min, target_floor), e_min)
        return needed_at_cap, holding_floor

    def _middle_hours(self, cheap: np.ndarray, drawable: np.ndarray, exported_at: np.ndarray) -> None:
        """Rule 3's middle hours, what they draw (`drawable`: each interval's whole deficit, up to
        the discharge rating), the cheapest of their prices, and what refills for them."""
        problem = self.problem
        T = problem.intervals
        buy = problem.buy
        e_min, e_max = problem.energy_min_kwh, problem.energy_max_kwh
        # Rule 3's middle hours (with a demand charge too): of the other hours with a deficit, those
        # whose price beats a kWh stored in the day's cheapest hour that pays to store after
        # round-trip losses and wear, the dearest that together draw what the SOC band holds and
        # the PV surplus that pays to store against them refills; what they draw, and the cheapest
        # of their prices (rule 5 fills for them where that pays).
        middle = ~self.discharging & (self.deficit_kw > 0)
        if middle.any():
            cheapest = float(buy[cheap & self.pays_to_store].min(initial=np.inf))
            middle &= self.pays_against(np.full(T, cheapest), buy)
            if middle.any():
                refilled = self.pays_against(exported_at, float(buy[middle].min()))
                refill_kwh = float(self.surplus_gain[refilled].sum())
                middle = charging_hours(-buy, middle, drawable, e_max - e_min + refill_kwh)
        self.middle, self.middle_need = middle, np.where(middle, drawable, 0.0)
        self.middle_price = float(buy[middle].min(initial=np.inf))
        self.middle_need_kwh = self.middle_need.sum()
        # Rule 5's hours that refill for them (where storing pays against that price), the PV
        # surplus that does, what the middle hours after t draw, and the first of them (the pass
        # reads their floor from there on).
        self.refills_middle = self.pays_against(buy, self.middle_price)
        self.surplus_refills_middle = self.pays_against(exported_at, self.middle_price)
        self.middle_need_after = sum_after(self.middle_need)
        self.middle_from = int(np.argmax(middle)) if middle.any() else T

    def _arbitrage_prices(self, drawable: np.ndarray, exported_at: np.ndarray) -> None:
        """Rule 3's hours beyond the peak, and for its arbitrage floor their prices."""
        problem = self.problem
        dt, bess = problem.dt, problem.bess
        eta_c, max_ch = bess.charge_efficiency, bess.max_charge_kw
        buy, expensive = problem.buy, self.expensive
        # Rule 3's discharges beyond the peak, without a threshold and with one (then only where
        # they beat the wear), and for its arbitrage floor each of their prices with the later
        # recharging, from PV surplus or the grid, that pays against it.
        self.arbitrage = (self.discharging, expensive & (buy > bess.cycle_cost_per_kwh))
        self.from_surplus = np.where(expensive, 0.0, np.minimum(self.surplus_kw, max_ch) * eta_c * dt)
        surplus_cost = self.storing_cost(exported_at)
        grid_cost = self.storing_cost(buy)

        def arbitrage_prices(
            hours: np.ndarray,
        ) -> list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray | None]]:
            # (The pass works each price's floor out from the first of its hours on.) And what the
            # dearer of those hours draw (their whole deficit, up to the discharge rating), which
            # the floor keeps for: None where none is dearer.
            entries = []
            for price in sorted(set(buy[hours].tolist())):  # np.unique's, for less
                at_price = hours & (buy == price)
                dearer = hours & (buy > price)
                dearer_need = np.where(dearer, drawable, 0.0) if dearer.any() else None
                entries.append(
                    (at_price, int(np.argmax(at_price)), surplus_cost < price, grid_cost < price, dearer_need)
                )
            return entries

        # A day with a demand charge reads only those with a threshold (its pass without one skips
        # the arbitrage floor), a day without only those without.
        read = int(problem.demand_charge_per_kw > 0)
        self.arbitrage_prices = tuple(
            arbitrage_prices(hours) if with_threshold == read else []
            for with_threshold, hours in enumerate(self.arbitrage)
        )

    def _middle_prices(self) -> list[tuple[np.ndarray, int, np.ndarray]]:
        """(at_price, first, kept) for each price of rule 3's middle hours whose floor keeps for
        other draws than the expensive hours' and rule 9's (`middle_reserve`)."""
        buy, middle = self.problem.buy, self.middle
        # The middle hours by price, where their floor keeps for other draws than those: what the
        # dearer middle hours after them draw (in time order, the cheaper would spend it first),
        # and rule 9's only in hours no cheaper (a cheaper one is better left to the grid, and the
        # room it makes, the middle hour's draw has made already).
        middle_prices = []
        for price in sorted(set(buy[middle].tolist())):
            at_price = middle & (buy == price)
            first = int(np.argmax(at_price))
            kept = np.maximum(
                np.where(buy >= price, self.middle_reserve, 0.0), np.where(middle & (buy > price), self.middle_need, 0.0)
            )
            if not np.array_equal(kept[first:], self.middle_reserve[first:]):
                middle_prices.append((at_price, first, kept))
        return middle_prices

    def _store_ceilings(self, export_beats_curtailing: np.ndarray) -> None:
        """Rule 2's ceilings for the surplus the grid would take: what the later intervals will draw
        (`priced_after`), over the target or soc_max (`store_base`)."""
        problem = self.problem
        T = problem.intervals
        bess = problem.bess
        eta_c, eta_d = bess.charge_efficiency, bess.discharge_efficiency
        e_min, e_final = problem.energy_min_kwh, problem.energy_final_kwh
        buy, sell, w = problem.buy, problem.sell, problem.weights
        surplus = self.surplus_kw
        # Rule 2: the surplus the grid takes at a non-negative price (kW), stored only for what the
        # later intervals will draw (kWh): rule 3's expensive and middle hours up to the last of
        # them whose buy price storing at t pays against (the export price it forgoes after
        # round-trip losses, and the wear the objective bills per kWh delivered), the hours before
        # it included, which draw first. Rule 9 draws what lies above the room it makes: where one
        # of its later hours pays, the surplus is stored up to soc_max.
        sell_t = np.broadcast_to(sell, (T,))
        gains = (w.cost > 0) & export_beats_curtailing & (sell_t >= 0)
        self.exportable = np.where(gains, np.minimum(surplus, problem.export_bound_kw), 0.0)
        draws = np.where(self.discharging, self.expensive_need, 0.0) + self.middle_need
        room_making = self.middle_reserve > 0
        self.priced_after, room_after = np.zeros(T), np.zeros(T, dtype=bool)
        if (gains & (surplus > 0)).any() and (draws.any() or room_making.any()):
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                value = sell_t / (eta_c * eta_d) + bess.cycle_cost_per_kwh
                hours = np.arange(T)
                # pays[t, u]: storing at t pays against a later draw at u.
                pays = (value[:, None] < buy[None, :]) & (hours[None, :] > hours[:, None])
                paying = pays & (draws > 0)
                last = np.where(paying.any(axis=1), T - 1 - np.argmax(paying[:, ::-1], axis=1), -1)
                drawn = np.concatenate([[0.0], np.cumsum(draws)])  # drawn[k]: draws of intervals < k
                self.priced_after = np.where(last > hours, drawn[last + 1] - drawn[hours + 1], 0.0)
                room_after = (pays & room_making).any(axis=1)
        # And the end-of-day target where buying it later (rule 6, whichever later hour it buys
        # in) may cost more than the export price it forgoes; with a demand charge, always.
        dearest_later = np.concatenate([np.maximum.accumulate(buy[::-1])[::-1][1:], [np.inf]])
        target = max(e_final, e_min)
        self.store_base = np.where((dearest_later > sell_t) | (problem.demand_charge_per_kw > 0), target, e_min)
        self.store_base[room_after] = np.inf
        self.store_priced = self.store_base + self.priced_after

    def _per_interval(
        self,
        needed_at_cap: np.ndarray,
        holding_floor: np.ndarray,
        lossy: np.ndarray,
        export_beats_curtailing: np.ndarray,
        exported_at: np.ndarray,
    ) -> None:
        """What the pass reads in each interval whatever the threshold (`per_interval`, on plain
        floats), and what it works the grid flows out from."""
        problem = self.problem
        T, dt = problem.intervals, problem.dt
        bess = problem.bess
        eta_c, eta_d = bess.charge_efficiency, bess.discharge_efficiency
        max_ch, max_dis = bess.max_charge_kw, bess.max_discharge_kw
        e_max = problem.energy_max_kwh
        sell, w = problem.sell, problem.weights
        surplus, deficit = self.surplus_kw, self.deficit_kw
        # The room the PV surplus of the hours after t will take, which rule 8 leaves.
        surplus_room_after = sum_after(np.minimum(surplus, max_ch) * eta_c * dt)
        export_beats_violating = export_beats_curtailing & (w.cost * -sell * eta_d < w.violation)

        # What the pass compares the battery's energy with, whatever the threshold: the level below
        # which rule 9's room is kept, the level rule 8 fills to (the room the later surplus will
        # take left), the surplus rule 2 stores beyond what the grid takes at a gain, the charging
        # rule 4's cap leaves, and what a discharge can deliver into the deficit.
        self.below_room = e_max - self.room_for
        paid_level = e_max - surplus_room_after
        spare_surplus = surplus - self.exportable
        headroom_at_cap = surplus + np.maximum(0.0, self.import_cap - deficit)
        deliverable = np.minimum(deficit, max_dis)
        # And for the grid flows the pass leaves.
        self.net_load_kw = problem.load_kw - problem.pv_kw
        self.export_bound_kw = problem.export_bound_kw
        self.export_beats_curtailing = export_beats_curtailing
        # What storing PV surplus forgoes, for rule 5: its export price, where it is exported.
        self.surplus_value = np.broadcast_to(exported_at, (T,))
        # The pass steps through the intervals once a day, and a few times with a demand charge:
        # on plain floats, a few times faster than on numpy scalars, with the same IEEE arithmetic.
        self.per_interval = tuple(
            values.tolist() for values in (
                surplus, deficit, needed_at_cap, self.export_bound_kw, export_beats_violating, holding_floor,
                lossy, self.below_room, spare_surplus, paid_level, headroom_at_cap, deliverable,
                self.making_room & (self.room_for > 0), self.paid_to_charge, self.middle,
            )
        )
        # Rule 3's hours beyond the peak that have a deficit to cover, without a threshold and with
        # one, and the first of them: the pass works out the levels only they read from there on.
        self.arbitrage_hours = tuple((hours & (deficit > 0)).tolist() for hours in self.arbitrage)
        self.arbitrage_from = tuple(int(np.argmax(hours)) if hours.any() else T for hours in self.arbitrage)

    def _room_for_gains(self, export_beats_curtailing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rule 9: (the PV surplus (kW) that would be spilt at a loss with the battery full, the room
        (kWh) the battery needs at the end of each interval to store what pays to store in the
        intervals after it, the intervals that discharge to make that room).

        Storing pays by itself where a full battery would export PV surplus at a negative price or
        curtail it, and where the site is paid to import (rule 8's hours). The room they need is
        worked backwards from the end of the day: each such interval needs what it can store, an
        expensive hour that rule 3 discharges in makes room of its own (up to what its deficit
        draws), and no room is needed beyond the SOC band. The room is made in the dearest hours
        with a deficit before those intervals that together can make it, where discharging pays
        after round-trip losses and wear against the priciest of the later intervals that refill
        it: what it delivers then is stored back for nothing, or less."""
        p = self.problem
        T, dt, w, bess = p.intervals, p.dt, p.weights, p.bess
        none = np.zeros(T)
        if w.cost <= 0:
            return none, none, np.zeros(T, dtype=bool)
        buy, sell, surplus, deficit = p.buy, p.sell, self.surplus_kw, self.deficit_kw
        # Per kWh spilt: the negative price it is exported at, else the curtailment weight.
        spill_value = np.where(export_beats_curtailing & (sell < 0), sell, -w.curtail / w.cost)
        exported_at_a_gain = np.where(export_beats_curtailing & (sell >= 0), p.export_bound_kw, 0.0)
        lossy = np.where(spill_value < 0, np.maximum(surplus - exported_at_a_gain, 0.0), 0.0)
        paid = self.paid_to_charge
        gain = np.where(
            paid, self.at_cap, np.minimum(lossy, bess.max_charge_kw) * bess.charge_efficiency * dt
        )
        if not (gain > EPS).any():
            return lossy, none, np.zeros(T, dtype=bool)
        # What a kWh stored there costs: the import price where paid (or what the surplus it stores
        # first is worth), else what spilling it costs.
        surplus_value = np.where(surplus <= 0, -np.inf, np.where(lossy >= surplus, spill_value, sell))
        value = np.where(gain > EPS, np.where(paid, np.maximum(buy, surplus_value), spill_value), -np.inf)
        value_after = np.concatenate([np.maximum.accumulate(value[::-1])[::-1][1:], [-np.inf]])
        with np.errstate(over="ignore"):
            drawable = np.minimum(deficit, bess.max_discharge_kw) * dt / bess.discharge_efficiency
        band = p.energy_max_kwh - p.energy_min_kwh

        def room_needed(draws: np.ndarray) -> np.ndarray:
            room, level = [], 0.0
            for added, taken in zip(reversed(gain.tolist()), reversed(draws.tolist()), strict=True):
                room.append(level)
                level = min(band, max(0.0, level + added - taken))
            room.reverse()
            return np.array(room, dtype=float)

        room = room_needed(self.expensive_need)
        pays = (room > EPS) & (deficit > 0) & self.pays_against(value_after, buy)
        eligible = pays & ~self.discharging
        making_room = np.zeros(T, dtype=bool)
        # Each run of intervals that needs room: its dearest hours that can make the most it needs.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (room > EPS).astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            run = np.zeros(T, dtype=bool)
            run[start:stop] = True
            making_room |= charging_hours(-buy, eligible & run, drawable, float(room[start:stop].max()))
        # The room still needed with those discharges made later on as well: how low each may go.
        room = room_needed(self.expensive_need + np.where(making_room, drawable, 0.0))
        return lossy, room, (making_room | self.discharging) & pays

    def chargeable(self, cap: float) -> np.ndarray:
        """Energy (kWh) each interval can put into the battery without importing above `cap`."""
        bess, dt = self.problem.bess, self.problem.dt
        return np.minimum(bess.max_charge_kw, np.maximum(cap - self.deficit_kw, 0.0) + self.surplus_kw) * (
            bess.charge_efficiency
        ) * dt

    def level_needed(self, gain: np.ndarray, loss: np.ndarray | None = None, since: int = 0) -> np.ndarray:
        """`levels.level_needed` to the day's target within its SOC band; `loss` rule 4's draws by default."""
        return level_needed(gain, self.forced if loss is None else loss, *self.target_band, since)

    def pays_against(self, price: np.ndarray, value: np.ndarray | float) -> np.ndarray:
        """Where storing a kWh bought at `price` costs less than `value` after round-trip losses and wear."""
        return self.storing_cost(price) < value  # NaN < x is False too

    def storing_cost(self, price: np.ndarray) -> np.ndarray:
        """What a kWh bought at `price` costs once delivered: round-trip losses and wear."""
        bess = self.problem.bess
        # The wear carries the discharge losses as a margin: the objective bills it per kWh
        # delivered, but a forward pass that counts it so stores slightly more than pays on the
        # whole (1,360 generated and spot-tariff days: 36 cheaper, 32 dearer, +0.003 % in sum).
        # Efficiencies near 0 (valid, if absurd) make the cost of storing infinite: it never pays.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            round_trip = bess.charge_efficiency * bess.discharge_efficiency
            return price / round_trip + bess.cycle_cost_per_kwh / bess.discharge_efficiency

    def shave_kw(self, threshold: float) -> np.ndarray:
        """Rule 3's discharges to hold every interval's import at `threshold` (kW)."""
        return np.minimum(np.maximum(self.deficit_kw - threshold, 0.0), self.problem.bess.max_discharge_kw)
