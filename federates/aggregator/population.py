"""Seeded populations of home devices: how many homes a bus has, which of
them own PV, a battery, an EV, an air conditioner or heat pump, a water
heater, and each device's parameters.

Homes per bus = the bus's peak load / ``home_peak_kw`` (the average peak of
a home's base load; the modelled devices come on top of the feeder's own
loads), times the share ``enrolled`` that this aggregator serves, unless
``counts`` gives them. Device counts per bus are the penetration share of
its homes, rounded. Every parameter is drawn per device from the
distributions below (``U(a, b)``: uniform), documented in ``docs/ders.md``:

======================  ===================================================
PV                      DC size ``U(pv_kw)``, DC/AC ratio U(1.1, 1.3),
                        60 % south, 20 % east, 20 % west; ``volt_var``
                        share with the IEEE 1547 cat. B curve
battery                 energy ``U(battery_kwh)``, 2-3 h of power,
                        round trip U(0.85, 0.92), self-discharge
                        U(0.1, 0.3) % a day, SOC 10-95 %, starts 30-70 %
EV                      U(40, 80) kWh, charger 3.6 / 7.2 / 11.5 kW
                        (15 / 60 / 25 %), ``U(ev_kwh_per_day)`` used a day,
                        arrives N(18:00, 1.5 h), leaves N(07:30, 1 h),
                        target SOC U(0.8, 0.9); ``v2g`` share can discharge
                        at its charger power down to 30 %, wear U(30, 60)
air conditioner         envelope R U(1.5, 3) degC/kW, C U(1.5, 3) kWh/degC,
                        COP U(2.8, 3.6), gains 0.3-0.8 kW inside and
                        0.5-2 kW of sun, setpoint U(22, 25) degC (heat
                        pump: U(19, 22)) +- U(0.75, 1.5), comfort price
                        ``U(comfort_price)``; sized 1.2-1.4 x the design
                        load (site's hottest hour + 2 degC, all gains on)
water heater            4.5 kW resistive (80 %) or 1 kW heat pump (COP 3),
                        150 / 190 / 270 l tank, U(100, 300) l a day,
                        setpoint U(50, 55) +- U(3, 5) degC, comfort price
                        U(10, 50)
======================  ===================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from dsosim.federates.aggregator.specs import (
    BatterySpec,
    EvSpec,
    Fraction,
    HvacSpec,
    Positive,
    PvSpec,
    SiteSpec,
    WaterHeaterSpec,
    fail,
    spec,
)

Range = tuple[float, float]

EV_CAPACITY_KWH: Range = (40.0, 80.0)
EV_CHARGERS_KW = (3.6, 7.2, 11.5)
EV_CHARGER_SHARES = (0.15, 0.6, 0.25)
EV_ARRIVAL_H = (18.0, 1.5)
"""Mean and standard deviation of the usual arrival hour (clipped to 14-23)."""
EV_DEPARTURE_H = (7.5, 1.0)
"""Mean and standard deviation of the usual departure hour (clipped to 5-10)."""
PV_ORIENTATIONS = ("south", "east", "west")
PV_ORIENTATION_SHARES = (0.6, 0.2, 0.2)


@spec
class HomeMix:
    """Penetration shares of homes and the size ranges of their devices."""

    home_peak_kw: Positive = 4.0
    enrolled: Fraction = 1.0
    counts: Mapping[str, Annotated[int, Field(strict=True, ge=0)]] = field(default_factory=dict)
    pv: Fraction = 0.0
    battery: Fraction = 0.0
    ev: Fraction = 0.0
    v2g: Fraction = 0.0
    """Share of the EVs that can discharge to the grid."""
    hvac: Fraction = 0.0
    water_heater: Fraction = 0.0
    volt_var: Fraction = 0.0
    """Share of the PV inverters running volt-var."""
    hvac_mode: Literal["cool", "heat"] = "cool"
    pv_kw: tuple[Positive, Positive] = (3.0, 8.0)
    battery_kwh: tuple[Positive, Positive] = (5.0, 15.0)
    ev_kwh_per_day: tuple[Positive, Positive] = (4.0, 16.0)
    comfort_price: tuple[Positive, Positive] = (20.0, 100.0)

    def __post_init__(self) -> None:
        for name in ("pv_kw", "battery_kwh", "ev_kwh_per_day", "comfort_price"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                fail("HomeMix", name, f"must be a range low <= high, got {(lo, hi)!r}")


def homes_per_bus(
    bus_peak_mw: Mapping[str, float], buses: Sequence[str], mix: HomeMix
) -> dict[str, int]:
    """Homes this aggregator serves at each bus (see module docstring)."""
    out = {}
    for b in buses:
        if b in mix.counts:
            out[b] = int(mix.counts[b])
        else:
            out[b] = round(bus_peak_mw[b] * 1000.0 / mix.home_peak_kw * mix.enrolled)
    return out


@dataclass
class HomeDevices:
    pvs: list[PvSpec] = field(default_factory=list)
    batteries: list[BatterySpec] = field(default_factory=list)
    evs: list[EvSpec] = field(default_factory=list)
    hvacs: list[HvacSpec] = field(default_factory=list)
    water_heaters: list[WaterHeaterSpec] = field(default_factory=list)


def home_devices(
    homes: Mapping[str, int], mix: HomeMix, site: SiteSpec, rng: np.random.Generator
) -> HomeDevices:
    """Draw every home device, bus by bus in sorted order (so the input order
    of ``homes`` does not matter)."""
    out = HomeDevices()
    for bus in sorted(homes):
        n = homes[bus]

        def count(share: float, n: int = n) -> int:
            return round(share * n)

        out.pvs += _pvs(bus, count(mix.pv), mix, rng)
        out.batteries += _batteries(bus, count(mix.battery), mix, rng)
        out.evs += _evs(bus, count(mix.ev), mix, rng)
        out.hvacs += _hvacs(bus, count(mix.hvac), mix, site, rng)
        out.water_heaters += _water_heaters(bus, count(mix.water_heater), mix, rng)
    return out


def _u(rng: np.random.Generator, r: Range, n: int) -> np.ndarray:
    return rng.uniform(r[0], r[1], n)


def _mw(kw: float) -> float:
    """kW -> MW, rounded to the watt (keeps the federation config short)."""
    return round(float(kw) / 1000.0, 6)


def _r(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


def _pvs(bus: str, n: int, mix: HomeMix, rng: np.random.Generator) -> list[PvSpec]:
    dc = _u(rng, mix.pv_kw, n)
    ratio = rng.uniform(1.1, 1.3, n)
    orient = rng.choice(len(PV_ORIENTATIONS), n, p=PV_ORIENTATION_SHARES)
    vv = rng.random(n) < mix.volt_var
    return [
        PvSpec(
            bus,
            _mw(dc[i] / ratio[i]),
            dc_ac_ratio=_r(ratio[i]),
            orientation=PV_ORIENTATIONS[orient[i]],
            volt_var=bool(vv[i]),
        )
        for i in range(n)
    ]


def _batteries(bus: str, n: int, mix: HomeMix, rng: np.random.Generator) -> list[BatterySpec]:
    energy = _u(rng, mix.battery_kwh, n)
    hours = rng.uniform(2.0, 3.0, n)
    eff = rng.uniform(0.85, 0.92, n)
    loss = rng.uniform(0.001, 0.003, n)
    soc = rng.uniform(0.3, 0.7, n)
    return [
        BatterySpec(
            bus,
            _mw(energy[i] / hours[i]),
            _mw(energy[i]),
            soc_init=_r(soc[i]),
            soc_min=0.1,
            soc_max=0.95,
            efficiency=_r(eff[i]),
            self_discharge=_r(loss[i], 5),
        )
        for i in range(n)
    ]


def _evs(bus: str, n: int, mix: HomeMix, rng: np.random.Generator) -> list[EvSpec]:
    cap = _u(rng, EV_CAPACITY_KWH, n)
    charger = np.array(EV_CHARGERS_KW)[rng.choice(len(EV_CHARGERS_KW), n, p=EV_CHARGER_SHARES)]
    use = _u(rng, mix.ev_kwh_per_day, n)
    arrive = np.clip(rng.normal(*EV_ARRIVAL_H, n), 14.0, 23.0)
    depart = np.clip(rng.normal(*EV_DEPARTURE_H, n), 5.0, 10.0)
    target = rng.uniform(0.8, 0.9, n)
    v2g = rng.random(n) < mix.v2g
    wear = rng.uniform(30.0, 60.0, n)
    return [
        EvSpec(
            bus,
            _mw(cap[i]),
            _mw(charger[i]),
            _mw(use[i]),
            arrival_h=_r(arrive[i]),
            departure_h=_r(depart[i]),
            target_soc=_r(target[i]),
            discharge_mw=_mw(charger[i]) if v2g[i] else 0.0,
            min_soc=0.3,
            wear_cost=_r(wear[i], 2),
        )
        for i in range(n)
    ]


def _hvacs(
    bus: str, n: int, mix: HomeMix, site: SiteSpec, rng: np.random.Generator
) -> list[HvacSpec]:
    r = rng.uniform(1.5, 3.0, n)
    c = rng.uniform(1.5, 3.0, n)
    cop = rng.uniform(2.8, 3.6, n)
    q_int = rng.uniform(0.3, 0.8, n)
    q_sun = rng.uniform(0.5, 2.0, n)
    band = rng.uniform(0.75, 1.5, n)
    comfort = _u(rng, mix.comfort_price, n)
    oversize = rng.uniform(1.2, 1.4, n)
    if mix.hvac_mode == "cool":
        setpoint = rng.uniform(22.0, 25.0, n)
        # design load: the hottest hour plus 2 degC, with every gain on
        design = (site.temp_max_c + 2.0 - setpoint) / r + q_int + q_sun
    else:
        setpoint = rng.uniform(19.0, 22.0, n)
        design = (setpoint - site.temp_min_c + 2.0) / r - q_int
    power_kw = np.maximum(oversize * design / cop, 1.0)
    return [
        HvacSpec(
            bus,
            _mw(power_kw[i]),
            cop=_r(cop[i]),
            mode=mix.hvac_mode,
            r_c_per_kw=_r(r[i]),
            c_kwh_per_c=_r(c[i]),
            setpoint_c=_r(setpoint[i], 2),
            band_c=_r(band[i], 2),
            comfort_price=_r(comfort[i], 2),
            internal_gain_kw=_r(q_int[i]),
            solar_gain_kw=_r(q_sun[i]),
        )
        for i in range(n)
    ]


def _water_heaters(
    bus: str, n: int, mix: HomeMix, rng: np.random.Generator
) -> list[WaterHeaterSpec]:
    heat_pump = rng.random(n) < 0.2
    tank = rng.choice([150.0, 190.0, 270.0], n)
    draw = rng.uniform(100.0, 300.0, n)
    shift = rng.uniform(-1.0, 1.0, n)
    setpoint = rng.uniform(50.0, 55.0, n)
    band = rng.uniform(3.0, 5.0, n)
    comfort = rng.uniform(10.0, 50.0, n)
    return [
        WaterHeaterSpec(
            bus,
            power_mw=0.001 if heat_pump[i] else 0.0045,
            cop=3.0 if heat_pump[i] else 0.98,
            tank_l=float(tank[i]),
            draw_l_per_day=_r(draw[i], 1),
            draw_shift_h=_r(shift[i], 2),
            setpoint_c=_r(setpoint[i], 2),
            band_c=_r(band[i], 2),
            comfort_price=_r(comfort[i], 2),
        )
        for i in range(n)
    ]
