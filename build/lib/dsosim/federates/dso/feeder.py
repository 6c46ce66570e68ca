"""The DSO's feeder model: an OpenDSS circuit behind a small, typed adaptor.

One :class:`Feeder` owns one OpenDSS engine context, so several feeders can live
in one process (one per LDA). Everything the market roles need goes through four
calls: :meth:`Feeder.set_load_multipliers` (inflexible load), :meth:`Feeder.attach_der`
and :meth:`Feeder.set_der_mw` (DER set-points), :meth:`Feeder.solve` (a
:class:`FeederState`) and :meth:`Feeder.sensitivities` (a :class:`Sensitivities`).

Conventions
-----------
* Power is **net demand** in MW, as in :mod:`dsosim.federates.common.curves`:
  positive = consumption. ``substation_p_mw`` is the power drawn from the source
  (positive = import into the feeder).
* Voltages are magnitudes in pu. With ``voltage_basis="ln"`` (default) every node
  is read line-to-neutral on its bus's line-to-neutral base: right for feeders
  with a neutral (IEEE 13, 34, 123). With ``voltage_basis="ll"`` every bus with two
  or more of the phases 1-3 is read line-to-line (pairs 1-2, 2-3, 3-1; node names
  ``"bus.1.2"``) on the line-to-line base, and single-phase nodes stay
  line-to-neutral: right for delta feeders such as IEEE 37, whose loads see
  line-to-line voltages.
* Branches are the lines and transformers. Loading is the largest phase-conductor
  current over all terminals divided by that terminal's normal rating (lines:
  ``normamps``; transformers: the winding's rated current at ``normhkva``, so a
  1.0 loading is the nameplate when ``normhkva = kva``). Neutral conductors are
  not rated.
* Voltage limits apply to the *monitored* nodes: all nodes with a voltage base
  except those of the source bus and of buses on the regulated winding of a
  regulator (that terminal is boosted on purpose for line-drop compensation and
  serves no customer).
* The feeder's own PV systems, storage elements and generators (``existing_ders``)
  stay in the circuit as the utility modelled them unless :meth:`Feeder.disable`
  takes them out (to hand them to an aggregator); while in, their output counts
  in ``FeederState.load_mw`` (as negative demand when they inject).

Speed
-----
The per-interval cost on feeders of thousands of buses is the OpenDSS solves:
voltages are read as one numpy array, and branch currents come from one sparse
product of the branch admittances with those voltages (``_BranchCurrents``)
instead of OpenDSS's per-element current report, which costs more than a solve.
:meth:`Feeder.sensitivities` perturbs each *bus* that carries DERs once, not each
DER.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import opendssdirect
from scipy import sparse

VoltageBasis = Literal["ln", "ll"]

_DER_PREFIX = "der_"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_MAX_CONTROL_ITER_ERROR = 485


class FeederError(ValueError):
    """The feeder model cannot be used: compile error, missing file, base case
    that does not converge, or a call that does not fit the model."""


@dataclass(frozen=True, slots=True, eq=False)
class FeederState:
    """One solved operating point of the feeder.

    ``converged`` is False when the power flow did not converge *or* the control
    loop (regulators, capacitor controls) gave up; ``control_iterations_exceeded``
    tells the second case apart (OpenDSS error #485: controls hunting). The
    numbers are then those of the last iteration and must be read as such.
    """

    feeder: str
    converged: bool
    control_iterations_exceeded: bool
    message: str
    """OpenDSS's message when not converged, else empty."""
    node_names: tuple[str, ...]
    v_pu: np.ndarray
    """Voltage magnitude per node, pu (see the module doc for the basis)."""
    monitored: np.ndarray
    """Bool per node: the node is subject to the voltage band."""
    branch_names: tuple[str, ...]
    loading: np.ndarray
    """Per branch: largest phase current / normal rating (1.0 = at rating)."""
    losses_mw: float
    substation_p_mw: float
    substation_q_mvar: float
    load_mw: float
    """Power drawn by the inflexible loads (voltage-dependent models included),
    metered at their terminals, net of the feeder's own PV systems, storage
    and generators still in the circuit (see ``Feeder.existing_ders``)."""
    der_names: tuple[str, ...]
    der_mw: np.ndarray
    """DER net demand set-points, MW, in attach order."""
    vmin: float
    vmax: float
    n_voltage_violations: int
    """Monitored nodes outside [vmin, vmax]."""
    n_thermal_violations: int
    """Branches with loading > 1."""
    power_flow_converged: bool = True
    """The last power flow converged. With ``control_iterations_exceeded`` this
    is the power flow at the controls' last positions: a consistent operating
    point (balances hold) even though ``converged`` is False. False: the power
    flow itself diverged and the numbers mean nothing."""


@dataclass(frozen=True, slots=True, eq=False)
class Sensitivities:
    """Linearisation of the feeder around an operating point, per attached DER.

    Derivatives are with respect to the DER's net demand in MW (positive =
    more consumption), taken by finite differences of full OpenDSS power flows
    (``delta_mw`` each way; 2 flows per bus with DERs: DERs at one bus share
    them) with regulator taps and capacitor states frozen at the operating
    point: central differences for voltages and substation power, both
    one-sided slopes for loadings. Within a control interval the taps do not
    move, so this is the short-term response; a later tap change shifts the operating
    point, and the next linearisation takes it in.

    Accuracy: voltages and losses are smooth in the injections, so the error of
    the linear prediction grows with the square of the change. On IEEE 13 with
    its base load, 0.5 MW injected at 675 is predicted to ~2e-4 pu (actual change
    ~0.009 pu), 0.5 + 0.3 MW at 675 and 680 to ~6e-4 pu (change ~0.013 pu),
    twice that to ~2.4e-3 pu; see ``tests/test_feeder.py``. The OpenDSS
    convergence tolerance (1e-4) puts a noise floor of ~1e-5/``delta_mw`` on the
    derivatives: keep ``delta_mw`` around 0.1 MW for MW-size DERs.
    """

    der_names: tuple[str, ...]
    node_names: tuple[str, ...]
    branch_names: tuple[str, ...]
    dv_dp: np.ndarray
    """pu per MW, shape (nodes, DERs)."""
    dloading_dp: np.ndarray
    """Loading (fraction of rating) per MW, shape (branches, DERs): central."""
    dloading_dp_up: np.ndarray
    """One-sided (forward) derivative: the slope for more consumption."""
    dloading_dp_down: np.ndarray
    """One-sided (backward) derivative: the slope for more injection. Where a
    branch current is near zero (a lateral feeding only a DER) loading is
    ``|current|``, with a kink: ``up`` and ``down`` then differ in sign and the
    central value means nothing; ``max(L0 + up.dP, L0 + down.dP)`` is the
    convex model to use (two linear rows)."""
    dpsub_dp: np.ndarray
    """MW at the substation per MW at the DER: 1 + marginal loss factor."""
    delta_mw: float
    vmin: float
    vmax: float
    injection_headroom_mw: np.ndarray
    """Per DER, alone: extra injection (MW) before a monitored node leaves
    [vmin, vmax], by the linearisation (inf if none moves toward a limit; 0 if
    one already outside moves further out)."""
    consumption_headroom_mw: np.ndarray
    """Per DER, alone: the same for extra consumption."""


@dataclass(frozen=True, slots=True)
class ExistingDer:
    """A PV system, storage element or generator the feeder model already has."""

    kind: Literal["pv", "storage", "generator"]
    element: str
    """OpenDSS name with its class, e.g. ``"PVSystem.pv1"``."""
    bus: str
    phases: int
    kw: float
    """PV: ``Pmpp`` (kW at 1 kW/m2); storage: ``kWrated``; generator: ``kW``."""
    kva: float
    kwh: float
    """Storage: ``kWhrated``; 0 otherwise."""
    soc: float
    """Storage: state of charge as compiled (0-1); 0 otherwise."""
    reserve: float
    """Storage: the reserve it keeps (``%reserve``, 0-1); 0 otherwise."""
    efficiency: float
    """Storage: round trip (``%EffCharge`` x ``%EffDischarge``); 1 otherwise."""
    enabled: bool


@dataclass(frozen=True, slots=True)
class LoadInfo:
    """One inflexible load as compiled (its base for the multipliers)."""

    name: str
    bus: str
    kw: float
    kvar: float


class Feeder:
    """An OpenDSS feeder in its own engine context.

    Parameters
    ----------
    master
        The master file; ``Redirect``s inside it resolve relative to it.
    name
        Name used in messages and results.
    vmin, vmax
        Voltage band for the violation counts and the headrooms, pu.
    voltage_basis
        ``"ln"`` or ``"ll"`` (see the module doc).

    Raises
    ------
    FeederError
        Missing file, OpenDSS compile error (with OpenDSS's message and file),
        no circuit, or a base case that does not converge.
    """

    def __init__(
        self,
        master: Path,
        *,
        name: str,
        vmin: float = 0.95,
        vmax: float = 1.05,
        voltage_basis: VoltageBasis = "ln",
    ) -> None:
        if voltage_basis not in ("ln", "ll"):
            raise FeederError(
                f"feeder {name}: voltage_basis must be 'ln' or 'll', got {voltage_basis!r}"
            )
        if not vmin < vmax:
            raise FeederError(f"feeder {name}: vmin {vmin} must be below vmax {vmax}")
        self.name = name
        self.vmin = float(vmin)
        self.vmax = float(vmax)
        self.voltage_basis: VoltageBasis = voltage_basis
        self.master = Path(master).resolve()
        if not self.master.is_file():
            raise FeederError(f"feeder {name}: master file {self.master} does not exist")
        self._dss: Any = opendssdirect.NewContext()
        self._dss.Basic.AllowChangeDir(False)
        # The same engine through DSS-Python, whose array reads are numpy arrays.
        self._circuit: Any = self._dss.to_dss_python().ActiveCircuit
        self._compile()
        self._index_loads()
        self._index_nodes()
        self._index_branches()
        self._index_existing_ders()
        self._der_names: list[str] = []
        self._der_buses: list[str] = []
        self._der_idx: list[int] = []
        self._der_mw = np.zeros(0)
        base = self.solve()
        if not base.converged:
            raise FeederError(
                f"feeder {name}: base case of {self.master} does not converge: {base.message}"
            )
        self._check_branch_currents()

    # ------------------------------------------------------------------ setup

    def _compile(self) -> None:
        dss = self._dss
        try:
            dss.Text.Command(f'compile "{self.master}"')
        except opendssdirect.DSSException as exc:
            raise FeederError(
                f"feeder {self.name}: OpenDSS cannot compile {self.master}: {exc.args[1]}"
            ) from exc
        try:
            empty = dss.Circuit.NumBuses() == 0 or dss.Vsources.Count() == 0
        except opendssdirect.DSSException:  # "#8888 There is no active circuit"
            empty = True
        if empty:
            raise FeederError(f"feeder {self.name}: {self.master} defines no circuit with a source")
        # A master file may end with its own Solve or mode settings: snapshot it is.
        dss.Text.Command("set mode=snapshot")
        dss.Text.Command("set controlmode=static")

    def _index_loads(self) -> None:
        dss = self._dss
        loads: list[LoadInfo] = []
        for i in range(1, dss.Loads.Count() + 1):
            dss.Loads.Idx(i)
            bus = dss.CktElement.BusNames()[0].split(".")[0]
            loads.append(LoadInfo(dss.Loads.Name(), bus, dss.Loads.kW(), dss.Loads.kvar()))
        self._loads = tuple(loads)
        self._base_kw = np.array([ld.kw for ld in loads])
        self._base_kvar = np.array([ld.kvar for ld in loads])

    def _index_nodes(self) -> None:
        """Node order, voltage bases, monitored mask and the LL pairs if needed."""
        dss = self._dss
        all_nodes = [n.lower() for n in dss.Circuit.AllNodeNames()]
        position = {n: i for i, n in enumerate(all_nodes)}
        excluded = self._unmonitored_buses()
        names: list[str] = []
        first: list[int] = []
        second: list[int] = []
        scale: list[float] = []
        monitored: list[bool] = []
        self._bus_kv_ln: dict[str, float] = {}
        self._bus_phases: dict[str, list[int]] = {}
        for bus in dss.Circuit.AllBusNames():
            dss.Circuit.SetActiveBus(bus)
            kv_ln = dss.Bus.kVBase()
            phases = [n for n in dss.Bus.Nodes() if 1 <= n <= 3]
            self._bus_kv_ln[bus.lower()] = kv_ln
            self._bus_phases[bus.lower()] = phases
            watch = kv_ln > 0.0 and bus.lower() not in excluded
            base_v = kv_ln * 1000.0 if kv_ln > 0.0 else math.nan
            if self.voltage_basis == "ll" and len(phases) >= 2:
                pairs = [(1, 2), (2, 3), (3, 1)] if len(phases) == 3 else [tuple(phases)]
                for a, b in pairs:
                    names.append(f"{bus}.{a}.{b}")
                    first.append(position[f"{bus}.{a}".lower()])
                    second.append(position[f"{bus}.{b}".lower()])
                    scale.append(1.0 / (base_v * math.sqrt(3.0)))
                    monitored.append(watch)
            else:
                for p in phases:
                    names.append(f"{bus}.{p}")
                    first.append(position[f"{bus}.{p}".lower()])
                    second.append(-1)
                    scale.append(1.0 / base_v)
                    monitored.append(watch)
        self._node_names = tuple(names)
        self._node_first = np.array(first, dtype=np.intp)
        self._node_second = np.array(second, dtype=np.intp)
        self._node_scale = np.array(scale)
        self._monitored = np.array(monitored, dtype=bool)
        self._monitored.flags.writeable = False
        self._ll_rows = self._node_second >= 0

    def _unmonitored_buses(self) -> set[str]:
        dss = self._dss
        buses: set[str] = set()
        for name in dss.Vsources.AllNames():
            dss.Circuit.SetActiveElement(f"Vsource.{name}")
            buses.add(dss.CktElement.BusNames()[0].split(".")[0].lower())
        if dss.RegControls.Count():
            dss.RegControls.First()
            while True:
                winding = dss.RegControls.Winding()
                dss.Circuit.SetActiveElement(f"Transformer.{dss.RegControls.Transformer()}")
                bus_names = dss.CktElement.BusNames()
                if 1 <= winding <= len(bus_names):
                    buses.add(bus_names[winding - 1].split(".")[0].lower())
                if not dss.RegControls.Next():
                    break
        return buses

    def _index_branches(self) -> None:
        """Branches (lines and transformers with a rating), the phase conductors
        whose current sets their loading and the rating each is compared with,
        and the sparse admittances that give those currents from the node
        voltages (:class:`_BranchCurrents`), so loading is one vectorised pass."""
        dss = self._dss
        position = {n.lower(): i for i, n in enumerate(dss.Circuit.AllNodeNames())}
        regulated = self._regulated_transformers()
        names: list[str] = []
        picks: list[int] = []
        ratings: list[float] = []
        starts: list[int] = []
        offset = 0
        currents = _BranchCurrents(len(position))
        for full in dss.PDElements.AllNames():
            dss.Circuit.SetActiveElement(full)
            n_cond = dss.CktElement.NumConductors()
            n_term = dss.CktElement.NumTerminals()
            cls = full.split(".", 1)[0].lower()
            if cls in ("line", "transformer"):
                per_terminal = self._terminal_ratings(full, cls, n_term)
                n_ph = dss.CktElement.NumPhases()
                if all(r > 0.0 for r in per_terminal):
                    names.append(full)
                    starts.append(len(picks))
                    local = [t * n_cond + c for t in range(n_term) for c in range(n_ph)]
                    currents.add(
                        full,
                        len(picks),
                        local,
                        self._element_columns(position),
                        self._element_yprim(full),
                        moving=full.lower() in regulated,
                    )
                    for t in range(n_term):
                        for c in range(n_ph):
                            picks.append(offset + t * n_cond + c)
                            ratings.append(per_terminal[t])
            offset += n_cond * n_term
        self._branch_names = tuple(names)
        self._branch_picks = np.array(picks, dtype=np.intp)
        self._branch_ratings = np.array(ratings)
        self._branch_starts = np.array(starts, dtype=np.intp)
        self._currents: _BranchCurrents | None = currents.finish(len(picks))

    def _element_columns(self, position: dict[str, int]) -> np.ndarray:
        """Node index (in ``AllNodeNames`` order) of each conductor of the active
        element, -1 for ground."""
        element = self._dss.CktElement
        n_cond = element.NumConductors()
        order = element.NodeOrder()
        cols = []
        for t, bus in enumerate(element.BusNames()):
            root = bus.split(".")[0].lower()
            for c in range(n_cond):
                node = order[t * n_cond + c]
                cols.append(position[f"{root}.{node}"] if node > 0 else -1)
        return np.array(cols, dtype=np.intp)

    def _element_yprim(self, full: str) -> np.ndarray:
        """The primitive admittance matrix of an element, complex, square."""
        self._dss.Circuit.SetActiveElement(full)
        flat = np.asarray(self._circuit.ActiveCktElement.Yprim, dtype=float)
        y = flat[0::2] + 1j * flat[1::2]
        n = math.isqrt(len(y))
        return y.reshape(n, n)

    def _regulated_transformers(self) -> set[str]:
        """Transformers whose taps a RegControl moves (their admittance changes)."""
        dss = self._dss
        found: set[str] = set()
        if dss.RegControls.Count():
            dss.RegControls.First()
            while True:
                found.add(f"transformer.{dss.RegControls.Transformer()}".lower())
                if not dss.RegControls.Next():
                    break
        return found

    def _check_branch_currents(self) -> None:
        """Compare the sparse branch currents with OpenDSS's own report once, at
        the base case; an element the admittance product does not reproduce
        (an exotic model) makes the feeder use OpenDSS's report throughout."""
        if self._currents is None or not self._branch_names:
            return
        fast = self._read_loading()
        mags = np.asarray(self._circuit.PDElements.AllCurrentsMagAng)[0::2]
        ratio = mags[self._branch_picks] / self._branch_ratings
        slow = np.maximum.reduceat(ratio, self._branch_starts)
        if not np.allclose(fast, slow, rtol=1e-6, atol=1e-6):
            self._currents = None

    def _index_existing_ders(self) -> None:
        """The feeder's own PV systems, storage elements and generators."""
        dss = self._dss
        found: list[ExistingDer] = []
        for kind, cls, names in (
            ("pv", "PVSystem", dss.PVsystems.AllNames()),
            ("storage", "Storage", dss.Storages.AllNames()),
            ("generator", "Generator", dss.Generators.AllNames()),
        ):
            for name in names:
                if name.lower() == "none":  # the API's answer for an empty class
                    continue
                full = f"{cls}.{name}"
                dss.Circuit.SetActiveElement(full)
                bus = dss.CktElement.BusNames()[0].split(".")[0]
                prop = {"pv": "pmpp", "storage": "kwrated", "generator": "kw"}[kind]
                storage = kind == "storage"
                found.append(
                    ExistingDer(
                        kind=kind,  # type: ignore[arg-type]
                        element=full,
                        bus=bus,
                        phases=dss.CktElement.NumPhases(),
                        kw=self._property(full, prop),
                        kva=self._property(full, "kva"),
                        kwh=self._property(full, "kwhrated") if storage else 0.0,
                        soc=self._property(full, "%stored") / 100.0 if storage else 0.0,
                        reserve=self._property(full, "%reserve") / 100.0 if storage else 0.0,
                        efficiency=(
                            self._property(full, "%effcharge")
                            * self._property(full, "%effdischarge")
                            / 1.0e4
                        )
                        if storage
                        else 1.0,
                        enabled=bool(dss.CktElement.Enabled()),
                    )
                )
        self._existing = tuple(found)

    def _property(self, full: str, prop: str) -> float:
        self._dss.Text.Command(f"? {full}.{prop}")
        try:
            return float(self._dss.Text.Result())
        except ValueError:
            return 0.0

    def _terminal_ratings(self, full: str, cls: str, n_term: int) -> list[float]:
        dss = self._dss
        norm = dss.CktElement.NormalAmps()
        if cls == "line":
            return [norm] * n_term
        dss.Transformers.Name(full.split(".", 1)[1])
        kva: list[float] = []
        kv: list[float] = []
        for w in range(1, dss.Transformers.NumWindings() + 1):
            dss.Transformers.Wdg(w)
            kva.append(dss.Transformers.kVA())
            kv.append(dss.Transformers.kV())
        # NormalAmps is for winding 1; the others scale with their kVA and kV.
        return [norm * (kva[w] / kva[0]) * (kv[0] / kv[w]) for w in range(len(kv))]

    # ---------------------------------------------------------- introspection

    @property
    def engine(self) -> Any:
        """The OpenDSS engine (an ``opendssdirect`` context) holding this circuit,
        for read-only inspection (``runner.feeder_inspect``). Changing the circuit
        through it bypasses this adaptor's indexes."""
        return self._dss

    def bus_phases(self, bus: str) -> tuple[int, ...]:
        """Phase nodes (1-3) of a bus."""
        try:
            return tuple(self._bus_phases[bus.lower()])
        except KeyError:
            raise FeederError(f"feeder {self.name}: no bus {bus!r}") from None

    @property
    def buses(self) -> tuple[str, ...]:
        return tuple(self._dss.Circuit.AllBusNames())

    @property
    def node_names(self) -> tuple[str, ...]:
        """Names of the voltage readings, in the order of ``FeederState.v_pu``."""
        return self._node_names

    @property
    def monitored(self) -> np.ndarray:
        return self._monitored

    def bus_kv_base(self, bus: str) -> float:
        """Line-to-neutral voltage base of a bus, kV (0 if it has none)."""
        try:
            return self._bus_kv_ln[bus.lower()]
        except KeyError:
            raise FeederError(f"feeder {self.name}: no bus {bus!r}") from None

    @property
    def node_kv_base(self) -> np.ndarray:
        """Base of each voltage reading, kV (line-to-line for LL readings)."""
        return 1.0 / (self._node_scale * 1000.0)

    @property
    def loads(self) -> tuple[LoadInfo, ...]:
        """The inflexible loads as compiled (DER elements are not listed)."""
        return self._loads

    @property
    def branch_names(self) -> tuple[str, ...]:
        return self._branch_names

    @property
    def branch_ratings(self) -> dict[str, float]:
        """Normal amps of terminal 1 of each branch."""
        return {
            name: float(self._branch_ratings[start])
            for name, start in zip(self._branch_names, self._branch_starts, strict=True)
        }

    @property
    def der_names(self) -> tuple[str, ...]:
        return tuple(self._der_names)

    @property
    def existing_ders(self) -> tuple[ExistingDer, ...]:
        """The PV systems, storage elements and generators the model itself
        defines (``enabled`` tells whether they are still in the circuit)."""
        return self._existing

    def disable(self, elements: Sequence[str]) -> tuple[ExistingDer, ...]:
        """Take some of the feeder's own DERs out of the circuit (e.g. to hand
        them to an aggregator, which then bids and runs them as DERs of its
        fleet at the same buses). ``elements`` are names as in
        :attr:`existing_ders` (``"PVSystem.pv1"``; case-insensitive). Returns
        what was disabled."""
        by_name = {d.element.lower(): d for d in self._existing}
        unknown = [e for e in elements if e.lower() not in by_name]
        if unknown:
            raise FeederError(
                f"feeder {self.name}: no PV system, storage or generator named {unknown}; "
                f"the feeder has {[d.element for d in self._existing]}"
            )
        chosen = {e.lower() for e in elements}
        for e in chosen:
            self._dss.Text.Command(f"Edit {by_name[e].element} enabled=no")
        self._existing = tuple(
            replace(d, enabled=False) if d.element.lower() in chosen else d for d in self._existing
        )
        return tuple(d for d in self._existing if d.element.lower() in chosen)

    def load_mw(self) -> float:
        """Inflexible load drawn at the last :meth:`solve` (``FeederState.load_mw``)."""
        return self._last_state.load_mw

    # ----------------------------------------------------------------- inputs

    def set_load_multipliers(self, m: np.ndarray | float) -> None:
        """Scale every inflexible load's compiled kW and kvar by ``m`` (one
        factor, or one per load in the order of :attr:`loads`)."""
        given = np.asarray(m, dtype=float)
        if given.ndim > 1 or (given.ndim == 1 and given.shape != self._base_kw.shape):
            raise FeederError(
                f"feeder {self.name}: {given.shape} multipliers for {len(self._loads)} loads"
            )
        factors = np.broadcast_to(given, self._base_kw.shape)
        if not np.all(np.isfinite(factors)) or np.any(factors < 0.0):
            raise FeederError(f"feeder {self.name}: load multipliers must be finite and >= 0")
        loads = self._dss.Loads
        for i, (kw, kvar) in enumerate(zip(self._base_kw * factors, self._base_kvar * factors)):
            loads.Idx(i + 1)
            loads.kW(float(kw))  # sets kvar from the power factor ...
            loads.kvar(float(kvar))  # ... so kvar is set second

    def attach_der(self, name: str, bus: str) -> None:
        """Create a DER injection element at ``bus`` on all its phases (an equal
        share per phase), constant power, unity power factor, at 0 MW.

        It is an OpenDSS load ``der_<name>`` whose kW may be negative (injection),
        with vminpu/vmaxpu 0.85/1.15 so the power set is the power injected over
        the whole operating range. It is wye-connected (phase to neutral), except
        on feeders read line-to-line (``voltage_basis="ll"``: three-wire delta
        feeders), where it is connected across the phases (delta; line to line
        on a two-phase bus) as the customers there are: a phase-to-ground
        constant-power element on an ungrounded system makes the power flow
        diverge.
        """
        if not _NAME_RE.match(name):
            raise FeederError(
                f"feeder {self.name}: DER name {name!r} must match {_NAME_RE.pattern}"
            )
        if name.lower() in (n.lower() for n in self._der_names):
            raise FeederError(f"feeder {self.name}: DER {name!r} is already attached")
        key = bus.lower()
        if key not in self._bus_phases:
            raise FeederError(f"feeder {self.name}: DER {name!r}: no bus {bus!r}")
        phases = self._bus_phases[key]
        kv_ln = self._bus_kv_ln[key]
        if not phases or kv_ln <= 0.0:
            raise FeederError(
                f"feeder {self.name}: DER {name!r}: bus {bus!r} has no phase nodes "
                "or no voltage base"
            )
        element = f"{_DER_PREFIX}{name}"
        if element.lower() in (ld.name.lower() for ld in self._loads):
            raise FeederError(f"feeder {self.name}: DER {name!r} clashes with load {element!r}")
        kv = kv_ln if len(phases) == 1 else kv_ln * math.sqrt(3.0)
        nodes = ".".join(str(p) for p in phases)
        delta = self.voltage_basis == "ll" and len(phases) >= 2
        n_phases = 1 if delta and len(phases) == 2 else len(phases)
        self._dss.Text.Command(
            f"New Load.{element} bus1={bus}.{nodes} phases={n_phases} "
            f"conn={'delta' if delta else 'wye'} kv={kv:.6g} "
            "kw=0 pf=1 model=1 vminpu=0.85 vmaxpu=1.15"
        )
        self._der_names.append(name)
        self._der_buses.append(key)
        self._der_idx.append(self._dss.Loads.Count())
        self._der_mw = np.zeros(len(self._der_names))

    def set_der_mw(self, values: np.ndarray | Sequence[float]) -> None:
        """Set every DER's net demand, MW (positive = consumption), attach order."""
        mw = np.asarray(values, dtype=float)
        if mw.shape != (len(self._der_names),):
            raise FeederError(
                f"feeder {self.name}: {mw.shape} DER values for {len(self._der_names)} DERs"
            )
        if not np.all(np.isfinite(mw)):
            raise FeederError(f"feeder {self.name}: DER set-points must be finite")
        for idx, value in zip(self._der_idx, mw):
            self._set_der_kw(idx, value * 1000.0)
        self._der_mw = mw.copy()

    def _set_der_kw(self, idx: int, kw: float) -> None:
        loads = self._dss.Loads
        loads.Idx(idx)
        loads.kW(float(kw))

    # ---------------------------------------------------------------- solving

    def solve(self, *, controls: bool = True) -> FeederState:
        """Solve the power flow (snapshot), with regulator and capacitor controls
        acting, or with them frozen where they are (``controls=False``: the
        response within one interval, what :meth:`sensitivities` linearises).

        Non-convergence, including OpenDSS #485 (control iterations exceeded), is
        recorded in the state, never raised; the engine is left ready for the
        next solve."""
        dss = self._dss
        message = ""
        hunting = False
        try:
            if controls:
                dss.Solution.Solve()
            else:
                dss.Solution.SolveNoControl()
            converged = bool(dss.Solution.Converged())
            if not converged:
                message = "power flow did not converge"
        except opendssdirect.DSSException as exc:
            converged = False
            hunting = exc.args[0] == _MAX_CONTROL_ITER_ERROR
            message = f"OpenDSS #{exc.args[0]}: {exc.args[1]}".strip()
            self._recover()
        flow_ok = converged or (hunting and bool(dss.Solution.Converged()))
        if controls and self._currents is not None and self._currents.needs_refresh:
            self._currents.refresh(self._element_yprim)
        return self._state(converged, hunting, message, flow_ok)

    def _recover(self) -> None:
        """After an error every Solve fails (#99) until a command is parsed: parse
        a harmless one so the next interval starts from a usable engine."""
        self._dss.Text.Command("get mode")

    def _state(
        self, converged: bool, hunting: bool, message: str, flow_ok: bool = True
    ) -> FeederState:
        v = self._read_voltages()
        loading = self._read_loading()
        p_kw, q_kvar = self._dss.Circuit.TotalPower()
        losses_w = self._dss.Circuit.Losses()[0]
        watched = v[self._monitored]
        n_v = int(np.count_nonzero((watched < self.vmin) | (watched > self.vmax)))
        substation_mw = -p_kw / 1000.0
        losses_mw = losses_w / 1.0e6
        self._last_state = FeederState(
            feeder=self.name,
            converged=converged,
            control_iterations_exceeded=hunting,
            message=message,
            node_names=self._node_names,
            v_pu=_frozen(v),
            monitored=self._monitored,
            branch_names=self._branch_names,
            loading=_frozen(loading),
            losses_mw=losses_mw,
            substation_p_mw=substation_mw,
            substation_q_mvar=-q_kvar / 1000.0,
            load_mw=self._metered_load_mw(),
            der_names=tuple(self._der_names),
            der_mw=_frozen(self._der_mw.copy()),
            vmin=self.vmin,
            vmax=self.vmax,
            n_voltage_violations=n_v,
            n_thermal_violations=int(np.count_nonzero(loading > 1.0)),
            power_flow_converged=flow_ok,
        )
        return self._last_state

    def _metered_load_mw(self) -> float:
        """Active power the inflexible loads actually draw, MW, read from their
        terminals (differs from the set kW for constant-current or constant-
        impedance loads, and when a load leaves its vminpu/vmaxpu range), plus
        that of the feeder's own DERs still in the circuit."""
        loads = self._dss.Loads
        element = self._dss.CktElement
        total_kw = 0.0
        for i in range(1, len(self._loads) + 1):
            loads.Idx(i)
            total_kw += element.TotalPowers()[0]
        for der in self._existing:
            if der.enabled:
                self._dss.Circuit.SetActiveElement(der.element)
                total_kw += element.TotalPowers()[0]
        return total_kw / 1000.0

    def _complex_volts(self) -> np.ndarray:
        """Node voltages, V, complex, in ``AllNodeNames`` order."""
        raw = self._circuit.AllBusVolts
        return raw[0::2] + 1j * raw[1::2]

    def _magnitudes(self, volts: np.ndarray) -> np.ndarray:
        """The voltage readings (pu, see the module doc) of complex node voltages."""
        first = volts[self._node_first]
        if self._ll_rows.any():
            second = np.where(self._ll_rows, volts[self._node_second], 0.0)
            first = first - second
        return np.abs(first) * self._node_scale

    def _loading_of(self, volts: np.ndarray) -> np.ndarray:
        """Branch loadings of complex node voltages (needs the admittance product)."""
        if not self._branch_names:
            return np.zeros(0)
        assert self._currents is not None
        ratio = self._currents.magnitudes(volts) / self._branch_ratings
        return np.maximum.reduceat(ratio, self._branch_starts)

    def _read_voltages(self) -> np.ndarray:
        return self._magnitudes(self._complex_volts())

    def _read_loading(self) -> np.ndarray:
        if not self._branch_names:
            return np.zeros(0)
        if self._currents is not None:
            return self._loading_of(self._complex_volts())
        mags = np.asarray(self._circuit.PDElements.AllCurrentsMagAng)[0::2]
        ratio = mags[self._branch_picks] / self._branch_ratings
        return np.maximum.reduceat(ratio, self._branch_starts)

    def _substation_mw(self) -> float:
        return -self._dss.Circuit.TotalPower()[0] / 1000.0

    def _ders_by_bus(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for j, bus in enumerate(self._der_buses):
            groups.setdefault(bus, []).append(j)
        return groups

    def _flow_snapshot(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Power flow at frozen controls; voltages, loadings, substation MW."""
        self._dss.Solution.SolveNoControl()
        return self._read_voltages(), self._read_loading(), self._substation_mw()

    def sensitivities(
        self, vmin: float | None = None, vmax: float | None = None, *, delta_mw: float = 0.1
    ) -> Sensitivities:
        """Linearise around the current operating point (the last :meth:`solve`)
        for every attached DER: 2 power flows per bus with DERs (``+-delta_mw``),
        at frozen controls, then the operating point is restored.
        ``vmin``/``vmax`` (default: the feeder's) are the band the headrooms are
        measured against.

        Why two flows and not one with the other side extrapolated: measured on
        IEEE 13 and 123, a forward difference at 0.1 MW is off by ~5 % in dV/dP
        and 10-25 % in the marginal loss factor (the power flow is that curved
        at this scale), the central one by ~0.2 % and ~2 %."""
        lo = self.vmin if vmin is None else float(vmin)
        hi = self.vmax if vmax is None else float(vmax)
        if not delta_mw > 0.0:
            raise FeederError(f"feeder {self.name}: delta_mw must be > 0, got {delta_mw}")
        n = len(self._der_names)
        dv = np.zeros((len(self._node_names), n))
        dl_up = np.zeros((len(self._branch_names), n))
        dl_down = np.zeros((len(self._branch_names), n))
        dp = np.zeros(n)
        try:
            v0, l0, _ = self._flow_snapshot()
            # DERs at one bus are the same injection on the same phases: one
            # perturbation (of the first of them) serves them all.
            for members in self._ders_by_bus().values():
                j = members[0]
                idx = self._der_idx[j]
                kw0 = self._der_mw[j] * 1000.0
                self._set_der_kw(idx, kw0 + delta_mw * 1000.0)
                v_up, l_up, p_up = self._flow_snapshot()
                self._set_der_kw(idx, kw0 - delta_mw * 1000.0)
                v_dn, l_dn, p_dn = self._flow_snapshot()
                self._set_der_kw(idx, kw0)
                dv[:, members] = ((v_up - v_dn) / (2.0 * delta_mw))[:, None]
                dl_up[:, members] = ((l_up - l0) / delta_mw)[:, None]
                dl_down[:, members] = ((l0 - l_dn) / delta_mw)[:, None]
                dp[members] = (p_up - p_dn) / (2.0 * delta_mw)
            self._flow_snapshot()
        except opendssdirect.DSSException as exc:
            self._recover()
            raise FeederError(
                f"feeder {self.name}: power flow failed while linearising: {exc.args[1]}"
            ) from exc
        up, down = _headrooms(v0[self._monitored], dv[self._monitored], lo, hi)
        return Sensitivities(
            der_names=tuple(self._der_names),
            node_names=self._node_names,
            branch_names=self._branch_names,
            dv_dp=_frozen(dv),
            dloading_dp=_frozen((dl_up + dl_down) / 2.0),
            dloading_dp_up=_frozen(dl_up),
            dloading_dp_down=_frozen(dl_down),
            dpsub_dp=_frozen(dp),
            delta_mw=float(delta_mw),
            vmin=lo,
            vmax=hi,
            injection_headroom_mw=_frozen(up),
            consumption_headroom_mw=_frozen(down),
        )


class _BranchCurrents:
    """Phase-conductor currents of the branches from the node voltages,
    ``I = Y_b V``: ``Y_b`` stacks the rows of each branch's primitive admittance
    that belong to its phase conductors (what OpenDSS itself multiplies). Line
    admittances are fixed; transformers driven by a RegControl are kept apart
    and re-read after every solve with controls, since their taps move."""

    def __init__(self, n_nodes: int) -> None:
        self._n_nodes = n_nodes
        self._n_rows = 0
        self._fixed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._moving: list[tuple[str, int, list[int], np.ndarray]] = []
        self._matrix: Any = None
        self._moving_matrix: Any = None

    def add(
        self,
        element: str,
        row0: int,
        local_rows: list[int],
        cols: np.ndarray,
        yprim: np.ndarray,
        *,
        moving: bool,
    ) -> None:
        if moving:
            self._moving.append((element, row0, local_rows, cols))
        else:
            self._fixed.append(_entries(row0, local_rows, cols, yprim))

    def finish(self, n_rows: int) -> _BranchCurrents:
        self._n_rows = n_rows
        self._matrix = self._csr(self._fixed)
        self._fixed = []
        self._moving_matrix = None
        return self

    def refresh(self, yprim_of: Any) -> None:
        """Re-read the admittances of the tap-changing transformers."""
        if self._moving:
            self._moving_matrix = self._csr(
                [
                    _entries(row0, rows, cols, yprim_of(element))
                    for element, row0, rows, cols in self._moving
                ]
            )

    @property
    def needs_refresh(self) -> bool:
        return bool(self._moving)

    def magnitudes(self, volts: np.ndarray) -> np.ndarray:
        currents = self._matrix @ volts
        if self._moving_matrix is not None:
            currents = currents + self._moving_matrix @ volts
        return np.abs(currents)

    def _csr(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Any:
        if not parts:
            return sparse.csr_matrix((self._n_rows, self._n_nodes), dtype=complex)
        rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
        return sparse.csr_matrix((vals, (rows, cols)), shape=(self._n_rows, self._n_nodes))


def _entries(
    row0: int, local_rows: list[int], cols: np.ndarray, yprim: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO entries of the rows ``local_rows`` of ``yprim``, placed from global
    row ``row0``, over the non-ground node columns ``cols``."""
    live = np.flatnonzero(cols >= 0)
    block = yprim[np.ix_(local_rows, live)]
    rows = np.repeat(np.arange(row0, row0 + len(local_rows)), len(live))
    return rows, np.tile(cols[live], len(local_rows)), block.ravel()


def _headrooms(
    v0: np.ndarray, dv: np.ndarray, vmin: float, vmax: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per DER, MW of injection to the first vmax crossing and of consumption to
    the first vmin crossing (linear, one DER at a time)."""
    with np.errstate(divide="ignore"):
        # Net demand up by x moves node k by dv[k] * x.
        to_vmax = np.where(dv > 1e-12, (vmax - v0)[:, None] / dv, math.inf)
        to_vmin = np.where(dv < -1e-12, (v0 - vmin)[:, None] / -dv, math.inf)
        from_vmax = np.where(dv < -1e-12, (vmax - v0)[:, None] / -dv, math.inf)
        from_vmin = np.where(dv > 1e-12, (v0 - vmin)[:, None] / dv, math.inf)
    consumption = np.minimum(to_vmax, to_vmin).min(axis=0, initial=math.inf)
    injection = np.minimum(from_vmax, from_vmin).min(axis=0, initial=math.inf)
    return np.maximum(injection, 0.0), np.maximum(consumption, 0.0)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
