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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import opendssdirect
from scipy import sparse

from dsosim.federates.dso import controls, linearise
from dsosim.federates.dso.batch import LoadBatch
from dsosim.federates.dso.casefold import (
    CaseInsensitiveView,
    case_variant,
    holder_file,
    missing_file,
)

VoltageBasis = Literal["ln", "ll"]
SensitivityMethod = Literal["auto", "factorised", "fd"]

_DER_PREFIX = "der_"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_MAX_CONTROL_ITER_ERROR = 485
_CONTROL_STATIC, _CONTROL_OFF = 0, -1
_CONTROL_NAMES = {0: "static", 1: "event", 2: "time", 3: "multirate", -1: "off"}
# Iteration limits a base case that does not converge is tried again with
# (OpenDSS's defaults are 15 and 10).
_RAISED_ITERATIONS = 100
_RAISED_CONTROL_ITERATIONS = 100
# A bus whose solved voltage is outside this range of its base has a wrong base.
_PLAUSIBLE_PU = (0.5, 1.5)
# The step of the one finite-difference check of the factorised linearisation.
_CHECK_DELTA_MW = 0.01


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
    nodes: tuple[int, ...] = ()
    """The bus nodes it connects to, as written (``(1, 2)`` for ``bus.1.2``;
    empty when the bus is given without nodes: all phases)."""
    phases: int = 3
    delta: bool = False
    kv: float = 0.0
    """Its rated voltage, kV (line-to-line for two- and three-phase loads,
    across its terminals for a single-phase one)."""

    @property
    def line_to_line(self) -> bool:
        """A single-phase load across two phase conductors: a 240 V customer
        of a split-phase (centre-tapped) service, or a 1-phase delta load."""
        phase_nodes = [n for n in self.nodes if 1 <= n <= 3]
        return self.phases == 1 and (self.delta or len(phase_nodes) == 2)


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
        given = Path(master).resolve()
        if not given.is_file():
            raise FeederError(f"feeder {name}: master file {given} does not exist")
        self.master, script_note = resolve_master(given)
        self._dss: Any = opendssdirect.NewContext()
        self._dss.Basic.AllowChangeDir(False)
        # The same engine through DSS-Python, whose array reads are numpy arrays.
        self._circuit: Any = self._dss.to_dss_python().ActiveCircuit
        self._compile()
        if script_note:
            self.notes.insert(0, script_note)
        self._index_loads()
        self._index_nodes()
        self._index_branches()
        self._index_existing_ders()
        self._factorised_ok: bool | None = None
        self._factorised_why = ""
        self._jacobian_cache: _JacobianModel | None = None
        self._der_rows_cache: (
            tuple[_JacobianModel, tuple[int, ...], np.ndarray, np.ndarray, linearise.PhaseBranches]
            | None
        ) = None
        self._der_names: list[str] = []
        self._der_buses: list[str] = []
        self._der_idx: list[int] = []
        self._der_mw = np.zeros(0)
        self._controls_moved = False
        self._refresh_due = False
        self._factorisation: _Factorisation | None = None
        self._headroom_v0 = np.zeros(0)
        """The voltage readings of the last :meth:`sensitivities`."""
        self._flow: tuple[bool, bool, str, bool] = (False, False, "not solved", False)
        self._der_kvar: dict[int, float] = {}
        """kvar drawn by DER elements (load index -> kvar), volt-var only."""
        self._batches: dict[tuple[int, ...], LoadBatch] = {}
        base = self.solve()
        if not base.converged:
            raise FeederError(
                f"feeder {name}: base case of {self.master} does not converge: {base.message}"
            )
        self._check_branch_currents()

    # ------------------------------------------------------------------ setup

    def _compile(self) -> None:
        """Compile the master and solve it once in snapshot mode with the
        feeder's own control settings (many masters only compile and leave the
        solve to a run script: OpenDSS's node arrays exist only after one).
        Monitors are switched off (they would sample every one of the DSO's
        power flows); a time-series mode the master sets becomes snapshot."""
        dss = self._dss
        dss.Basic.AllowEditor(False)  # Show/Plot in a run script must not start an editor
        renamed = self._compile_master()
        try:
            empty = dss.Circuit.NumBuses() == 0 or dss.Vsources.Count() == 0
        except opendssdirect.DSSException:  # "#8888 There is no active circuit"
            empty = True
        if empty:
            raise FeederError(f"feeder {self.name}: {self.master} defines no circuit with a source")
        notes: list[str] = []
        dss.Text.Command("get mode")
        mode = dss.Text.Result() or ""
        if mode.strip().lower() not in ("", "snap", "snapshot"):
            notes.append(f"the master sets mode={mode.strip()}: solved in snapshot mode instead")
        dss.Text.Command("set mode=snapshot")
        control = dss.Solution.ControlMode()
        if control not in (_CONTROL_STATIC, _CONTROL_OFF):
            notes.append(
                f"the master sets controlmode {_CONTROL_NAMES.get(control, control)}: "
                "static instead (each market interval is one snapshot)"
            )
            dss.Text.Command("set controlmode=static")
        if dss.Monitors.Count():
            notes.append(f"{dss.Monitors.Count()} monitor(s) switched off (nothing reads them)")
            dss.Text.Command("batchedit monitor..* enabled=no")
        if renamed:
            shown = ", ".join(f"{a} -> {Path(b).name}" for a, b in renamed[:5])
            notes.append(
                f"{len(renamed)} file name(s) differ in case from the feeder's references "
                f"({shown}{', ...' if len(renamed) > 5 else ''}): read through a "
                "case-insensitive view of its folder"
            )
        self.notes: list[str] = notes
        self.compiled_controls = controls.read(self)
        """Regulator taps and capacitor states as compiled, before any solve."""
        self._first_solve()
        self._fill_voltage_bases()

    def _compile_master(self) -> list[tuple[str, str]]:
        """Compile the master; where OpenDSS cannot find a file whose name
        differs only in case (feeders made on Windows), compile again through a
        case-insensitive view of the folder (:mod:`.casefold`): the master's
        folder, or the folder of the file holding the reference when the master
        reaches it by an absolute path (as dsosim's own hand-over masters do;
        the master is then compiled from a copy pointing into the view).
        Returns the names so resolved."""
        dss = self._dss
        view: CaseInsensitiveView | None = None
        path = self.master
        try:
            while True:
                try:
                    dss.Text.Command(f'compile "{path}"')
                    return view.fixed if view is not None else []
                except opendssdirect.DSSException as exc:
                    message = str(exc.args[1])
                    if view is None:
                        view, path = self._case_insensitive_view(message)
                        if view is not None:
                            message = message.replace(str(view.real), str(view.mirror))
                    if view is None or not view.fix(message):
                        if view is not None:
                            message = message.replace(str(view.mirror), str(view.real))
                        raise FeederError(
                            f"feeder {self.name}: OpenDSS cannot compile {self.master}: {message}"
                        ) from exc
        finally:
            if view is not None:
                view.close()

    def _case_insensitive_view(self, message: str) -> tuple[CaseInsensitiveView | None, Path]:
        """A view for the missing file ``message`` names, if a file whose name
        differs only in case exists, and the master to compile through it."""
        missing = missing_file(message)
        if missing is None or case_variant(missing) is None:
            return None, self.master
        holder = holder_file(message) or self.master
        inside = self.master.parent in holder.resolve().parents
        try:
            view = CaseInsensitiveView(self.master.parent if inside else holder.parent)
            if inside:
                return view, view.path_of(self.master)
            copy = view.root / f"_{self.master.name}"
            text = self.master.read_text(encoding="utf-8", errors="replace")
            copy.write_text(text.replace(str(view.real), str(view.mirror)), encoding="utf-8")
            return view, copy
        except OSError:
            return None, self.master

    def _first_solve(self) -> None:
        """Solve the compiled circuit once; if it does not converge with the
        feeder's own iteration limits, raise them (at least
        ``_RAISED_ITERATIONS`` / ``_RAISED_CONTROL_ITERATIONS``) and try again,
        keeping them raised for the run if that helps."""
        dss = self._dss
        own = (dss.Solution.MaxIterations(), dss.Solution.MaxControlIterations())
        message = self._try_solve()
        if message is None:
            return
        raised = (max(own[0], _RAISED_ITERATIONS), max(own[1], _RAISED_CONTROL_ITERATIONS))
        if raised != own:
            dss.Solution.MaxIterations(raised[0])
            dss.Solution.MaxControlIterations(raised[1])
            second = self._try_solve()
            if second is None:
                self.notes.append(
                    f"the base case needs more iterations than the feeder's own limits "
                    f"(MaxIterations {own[0]}, MaxControlIter {own[1]}: {message}); "
                    f"run with {raised[0]} and {raised[1]}"
                )
                return
            message = second
        raise FeederError(
            f"feeder {self.name}: the base case of {self.master} does not converge. "
            f"OpenDSS reported: {message} (snapshot solve with the feeder's own controls, "
            f"MaxIterations {raised[0]} and MaxControlIter {raised[1]}; the feeder sets "
            f"{own[0]} and {own[1]}). What to try: solve it in OpenDSS and look at "
            "'Show Convergence' and 'Show Voltages LN Nodes' for the nodes that do not "
            "settle; check the source voltage (pu) and 'Set VoltageBases'; if the regulators "
            "or capacitor controls hunt (#485), widen their bands or try 'Set ControlMode=Off' "
            "in a copy of the master; a load or DER with a constant-power model far below "
            "its vminpu often diverges: give it model=1 vminpu=0.85."
        )

    def _bus_bases(self) -> dict[str, float]:
        """Line-to-neutral kV base of every bus (0: none)."""
        dss = self._dss
        bases = {}
        for bus in dss.Circuit.AllBusNames():
            dss.Circuit.SetActiveBus(bus)
            bases[bus] = dss.Bus.kVBase()
        return bases

    def _plausible(self, bus: str) -> bool:
        """The bus's solved voltage is near its base (a wrong base, e.g. a 120 V
        secondary on a 7.2 kV base when VoltageBases omits its level, reads
        as 0.017 pu)."""
        dss = self._dss
        dss.Circuit.SetActiveBus(bus)
        pu = np.asarray(dss.Bus.puVmagAngle(), dtype=float)[0::2]
        pu = pu[pu > 0.0]
        return pu.size == 0 or bool(
            _PLAUSIBLE_PU[0] <= float(pu.max()) and float(pu.min()) <= _PLAUSIBLE_PU[1]
        )

    def _fill_voltage_bases(self) -> None:
        """Buses the feeder's ``Set VoltageBases`` leaves without a base, or
        with a wrong one (a voltage level it forgot, often the secondaries,
        gets the nearest listed level) get one: the feeder's
        own bases plus its transformers' winding ratings (line-to-line; for a
        single-phase winding both its rating and that times sqrt 3, since it may
        sit line to neutral) go to OpenDSS's CalcVoltageBases, and the buses
        that had a base keep it."""
        dss = self._dss
        before = self._bus_bases()
        missing = [b for b, kv in before.items() if kv <= 0.0 or not self._plausible(b)]
        if not missing:
            return
        own = [float(v) for v in dss.Settings.VoltageBases()]
        candidates = set(own)
        i = dss.Transformers.First()
        while i:
            single = dss.CktElement.NumPhases() == 1
            for w in range(1, dss.Transformers.NumWindings() + 1):
                dss.Transformers.Wdg(w)
                kv = dss.Transformers.kV()
                if kv > 0.0:
                    candidates.add(round(kv, 4))
                    if single:
                        candidates.add(round(kv * math.sqrt(3.0), 4))
            i = dss.Transformers.Next()
        i = dss.Vsources.First()
        while i:
            candidates.add(round(dss.Vsources.BasekV(), 4))
            i = dss.Vsources.Next()
        bases = sorted(candidates, reverse=True)
        dss.Text.Command(f"set voltagebases=[{', '.join(f'{v:g}' for v in bases)}]")
        dss.Text.Command("calcvoltagebases")
        after = self._bus_bases()
        wrong = set(missing)
        for bus, kv in before.items():
            if bus in wrong:
                continue
            if kv > 0.0 and not math.isclose(after.get(bus, 0.0), kv, rel_tol=1e-9):
                dss.Text.Command(f"setkvbase bus={bus} kvln={kv!r}")
        filled = {b: round(after[b] * math.sqrt(3.0), 3) for b in missing if after.get(b, 0.0) > 0}
        levels = sorted(set(filled.values()), reverse=True)
        still = len(missing) - len(filled)
        self.notes.append(
            f"{len(missing)} bus(es) had no voltage base or a wrong one (solved at under "
            f"{_PLAUSIBLE_PU[0]:g} or over {_PLAUSIBLE_PU[1]:g} pu of it; "
            "the feeder's VoltageBases: "
            f"{', '.join(f'{v:g}' for v in own) or 'none'} kV): {len(filled)} got one from "
            f"its transformer ratings ({', '.join(f'{v:g}' for v in levels)} kV line-to-line)"
            + (f"; {still} still have none and are not monitored" if still else "")
        )
        message = self._try_solve()
        if message is not None:
            raise FeederError(
                f"feeder {self.name}: {self.master} no longer solves after its voltage bases "
                f"were completed: {message}"
            )

    def _try_solve(self) -> str | None:
        """One snapshot solve; None if it converged, else OpenDSS's message."""
        dss = self._dss
        try:
            dss.Solution.Solve()
        except opendssdirect.DSSException as exc:
            self._recover()
            return f"#{exc.args[0]} {exc.args[1]}".strip()
        if not dss.Solution.Converged():
            return (
                f"power flow did not converge in {dss.Solution.Iterations()} iterations "
                f"(MaxIterations {dss.Solution.MaxIterations()})"
            )
        return None

    def _index_loads(self) -> None:
        dss = self._dss
        loads: list[LoadInfo] = []
        for i in range(1, dss.Loads.Count() + 1):
            dss.Loads.Idx(i)
            spec = dss.CktElement.BusNames()[0].split(".")
            loads.append(
                LoadInfo(
                    dss.Loads.Name(),
                    spec[0],
                    dss.Loads.kW(),
                    dss.Loads.kvar(),
                    nodes=tuple(int(n) for n in spec[1:] if n.isdigit()),
                    phases=dss.CktElement.NumPhases(),
                    delta=bool(dss.Loads.IsDelta()),
                    kv=dss.Loads.kV(),
                )
            )
        self._loads = tuple(loads)
        self._base_kw = np.array([ld.kw for ld in loads])
        self._base_kvar = np.array([ld.kvar for ld in loads])
        self._kw_now = self._base_kw.copy()
        self._kvar_now = self._base_kvar.copy()
        self._load_batch = LoadBatch(dss, range(1, len(loads) + 1))
        self._factors_set: np.ndarray | None = None
        """The multipliers of the last :meth:`set_load_multipliers` (the
        loads are set only through it)."""

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
            # A disabled element (an open tie, a line out of service) has no
            # nodes and carries nothing: it is not a branch of this circuit.
            if cls in ("line", "transformer") and dss.CktElement.Enabled():
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
        self._groups: _Groups | None = None

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
        if self._factors_set is not None and np.array_equal(factors, self._factors_set):
            return  # set already (the DSO's dispatch point is at its forecast's load)
        self._kw_now = self._base_kw * factors
        self._kvar_now = self._base_kvar * factors
        # every load in one call per property (thousands of loads); kW first:
        # it sets kvar from the power factor, so kvar is set second
        self._load_batch.set("kW", self._kw_now)
        self._load_batch.set("kvar", self._kvar_now)
        self._factors_set = factors.copy()

    def load_shapes(self, times_s: np.ndarray, span_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The feeder's own load shapes as multipliers of each load's compiled
        kW and kvar (:attr:`loads` order), one row per start time: each load's
        daily shape, else its yearly one, else its duty one, averaged over
        ``[t, t + span_s)`` for each ``t`` of ``times_s`` (seconds from the
        shape's start: midnight, and January 1 for a yearly shape; a shape
        repeats after its last point, as OpenDSS wraps it); and whether each
        load has one. Read as OpenDSS reads a shape: a fixed-interval shape's
        point ``i`` (from 1) holds at ``i`` intervals, rounded to the nearest
        point; one with an hour array is interpolated linearly; with
        ``useactual`` its values are kW (the multiplier is then value over the
        compiled kW). Loads of status ``fixed`` follow no shape in OpenDSS and
        have none here; a shape's ``qmult`` is not used (kvar keeps the
        load's power factor)."""
        dss = self._dss
        times = np.asarray(times_s, dtype=float)
        out = np.ones((len(times), len(self._loads)))
        has = np.zeros(len(self._loads), dtype=bool)
        cache: dict[str, tuple[np.ndarray, bool]] = {}
        for j, load in enumerate(self._loads):
            dss.Loads.Name(load.name)
            if dss.Loads.Status() == 1:  # fixed
                continue
            name = next(
                (n for n in (dss.Loads.Daily(), dss.Loads.Yearly(), dss.Loads.Duty()) if n), ""
            )
            if not name or name.lower() == "default":
                continue
            key = name.lower()
            if key not in cache:
                cache[key] = self._shape_means(name, times, span_s)
            values, actual = cache[key]
            if actual:
                if load.kw <= 0.0:
                    continue
                values = values / load.kw
            out[:, j] = values
            has[j] = True
        return out, has

    def _shape_means(self, name: str, times: np.ndarray, span_s: float) -> tuple[np.ndarray, bool]:
        """One load shape's mean multiplier over each ``[t, t + span_s)``, and
        whether its values are actual kW (``useactual``)."""
        shape = self._dss.LoadShape
        shape.Name(name)
        mult = np.asarray(shape.PMult(), dtype=float)
        step_h = float(shape.HrInterval())
        if not len(mult):
            return np.ones(len(times)), False
        if step_h > 0.0:
            samples = max(1, math.ceil(span_s / (step_h * 3600.0) - 1e-9))
            at_h = (times[:, None] + np.arange(samples) * (span_s / samples)) / 3600.0
            index = np.rint(at_h / step_h).astype(np.int64)  # OpenDSS: round(hr / interval)
            values = mult[(index - 1) % len(mult)]  # point N also at time 0 (wrapped)
        else:
            hours = np.asarray(shape.TimeArray(), dtype=float)[: len(mult)]
            samples = max(1, math.ceil(span_s / 60.0))
            at_h = (times[:, None] + np.arange(samples) * (span_s / samples)) / 3600.0
            period = hours[-1] if len(hours) and hours[-1] > 0.0 else 24.0
            values = np.interp(np.mod(at_h, period), hours, mult)
        return values.mean(axis=1), bool(shape.UseActual())

    def attach_der(self, name: str, bus: str) -> None:
        """Create a DER injection element at ``bus`` on all its phases (an equal
        share per phase), constant power, unity power factor, at 0 MW.

        It is an OpenDSS load ``der_<name>`` whose kW may be negative (injection),
        with vminpu/vmaxpu 0.85/1.15 so the power set is the power injected over
        the whole operating range. It is wye-connected (phase to neutral), except
        at a split-phase service whose customers are single-phase loads across
        both legs (``bus.1.2``, 240 V), where it connects across the legs as
        they do, and on feeders read line-to-line (``voltage_basis="ll"``: three-wire delta
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
        across = self._line_to_line_customers(key)
        if across is not None:  # a split-phase service: the DER is a 240 V customer too
            nodes, n_phases, delta = ".".join(map(str, across.nodes)), 1, across.delta
            kv = self._kv_across(key, across.nodes, kv_ln)
        self._dss.Text.Command(
            f"New Load.{element} bus1={bus}.{nodes} phases={n_phases} "
            f"conn={'delta' if delta else 'wye'} kv={kv:.6g} "
            "kw=0 pf=1 model=1 vminpu=0.85 vmaxpu=1.15"
        )
        self._der_names.append(name)
        self._der_buses.append(key)
        self._der_idx.append(self._dss.Loads.Count())
        self._der_mw = np.zeros(len(self._der_names))

    def _kv_across(self, bus: str, nodes: tuple[int, ...], kv_ln: float) -> float:
        """Nominal kV between two nodes of a bus from their solved angles: twice
        the phase base across the legs of a split-phase service (180 degrees),
        sqrt 3 times it between phases of a three-phase system (120). Customer
        loads there are often rated 0.208 kV on a 240 V service (IEEE 8500);
        a DER rated so would leave its constant-power range."""
        dss = self._dss
        dss.Circuit.SetActiveBus(bus)
        order = list(dss.Bus.Nodes())
        angles = np.radians(np.asarray(dss.Bus.puVmagAngle(), dtype=float)[1::2])
        a, b = (angles[order.index(n)] for n in nodes[:2])
        return float(kv_ln * abs(np.exp(1j * a) - np.exp(1j * b)))

    def _line_to_line_customers(self, bus: str) -> LoadInfo | None:
        """The largest load at ``bus`` if the bus is a split-phase service (two
        phase nodes in opposition: the 120/240 V secondary of a centre-tapped
        transformer) and every load there is a customer across both legs;
        else None. A DER there connects the same way, across both legs."""
        phases = self._bus_phases.get(bus, [])
        if len(phases) != 2:
            return None
        here = [ld for ld in self._loads if ld.bus.lower() == bus]
        if not here or not all(ld.line_to_line and ld.nodes for ld in here):
            return None
        first = here[0].nodes
        if any(ld.nodes != first for ld in here) or sorted(first[:2]) != sorted(phases):
            return None
        # Split phase: the two legs are in opposition. A two-phase primary
        # lateral (legs 120 degrees apart) keeps the wye connection.
        kv_ln = self._bus_kv_ln.get(bus, 0.0)
        if kv_ln <= 0.0 or self._kv_across(bus, first, kv_ln) < 1.9 * kv_ln:
            return None
        return max(here, key=lambda ld: ld.kw)

    def set_der_mw(self, values: np.ndarray | Sequence[float]) -> None:
        """Set every DER's net demand, MW (positive = consumption), attach order."""
        mw = np.asarray(values, dtype=float)
        if mw.shape != (len(self._der_names),):
            raise FeederError(
                f"feeder {self.name}: {mw.shape} DER values for {len(self._der_names)} DERs"
            )
        if not np.all(np.isfinite(mw)):
            raise FeederError(f"feeder {self.name}: DER set-points must be finite")
        # one call for every DER's kW (it resets kvar from the power factor),
        # then one for the volt-var reactive powers set (as _set_der_kw does)
        self._batch(self._der_idx).set("kW", mw * 1000.0)
        if self._der_kvar:
            with_q = [idx for idx in self._der_idx if idx in self._der_kvar]
            self._batch(with_q).set("kvar", np.array([self._der_kvar[i] for i in with_q]))
        self._der_mw = mw.copy()

    def _batch(self, indices: Sequence[int]) -> LoadBatch:
        """The loads of ``indices`` as one batch (a few sets are kept: the
        DERs, those with a reactive power set)."""
        key = tuple(indices)
        batch = self._batches.get(key)
        if batch is None:
            if len(self._batches) >= 8:
                self._batches.clear()
            batch = self._batches[key] = LoadBatch(self._dss, key)
        return batch

    def set_der_mvar(self, values: np.ndarray | Sequence[float]) -> None:
        """Set every DER's reactive power, Mvar drawn (positive = absorbed,
        load convention; a volt-var inverter injecting is negative), attach
        order. It stays set while the active power changes."""
        mvar = np.asarray(values, dtype=float)
        if mvar.shape != (len(self._der_names),):
            raise FeederError(
                f"feeder {self.name}: {mvar.shape} DER values for {len(self._der_names)} DERs"
            )
        if not np.all(np.isfinite(mvar)):
            raise FeederError(f"feeder {self.name}: DER reactive powers must be finite")
        # the engine's own calls (a few DERs move; a batch of every one with a
        # reactive power costs more), its error state checked once at the end
        loads = self._circuit.Loads
        lib = loads._lib
        for idx, value in zip(self._der_idx, mvar.tolist()):
            kvar = value * 1000.0
            if kvar:
                if self._der_kvar.get(idx) == kvar:
                    continue  # set already (a volt-var iteration moves a few)
                lib.Loads_Set_idx(idx)
                lib.Loads_Set_kvar(kvar)
                self._der_kvar[idx] = kvar
            elif self._der_kvar.pop(idx, None) is not None:
                lib.Loads_Set_idx(idx)
                lib.Loads_Set_PF(1.0)  # kvar 0; setting kvar=0 at kW=0 would leave pf=0
        loads._check_for_error(None)

    def _set_der_kw(self, idx: int, kw: float) -> None:
        loads = self._dss.Loads
        loads.Idx(idx)
        loads.kW(float(kw))  # resets kvar from the element's power factor ...
        kvar = self._der_kvar.get(idx)
        if kvar is not None:
            loads.kvar(kvar)  # ... so a volt-var reactive power is set again

    # ---------------------------------------------------------------- solving

    def solve(self, *, controls: bool = True) -> FeederState:
        """Solve the power flow (snapshot), with regulator and capacitor controls
        acting, or with them frozen where they are (``controls=False``: the
        response within one interval, what :meth:`sensitivities` linearises).

        Non-convergence, including OpenDSS #485 (control iterations exceeded), is
        recorded in the state, never raised; the engine is left ready for the
        next solve."""
        self.solve_flow(controls=controls)
        return self.solved_state()

    def solve_flow(self, *, controls: bool = True) -> bool:
        """:meth:`solve` without reading the solution back: whether the power
        flow converged (as ``FeederState.power_flow_converged``). Read what is
        needed with :meth:`solved_voltages`, :meth:`solved_flows` or
        :meth:`solved_state` (the state :meth:`solve` returns), before the
        next solve: an iteration that needs only voltages (the volt-var fixed
        point) then pays for no loadings or metering."""
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
        # the tap-changing transformers' admittances (branch loadings) are re-read
        # at the first use after the solve: it builds Yprim
        self._factorisation = None
        self._refresh_due = self._refresh_due or controls or self._controls_moved
        self._controls_moved = False
        self._flow = (converged, hunting, message, flow_ok)
        return flow_ok

    def solved_voltages(self) -> np.ndarray:
        """The voltage readings (pu) of the last solve (``FeederState.v_pu``)."""
        return self._read_voltages()

    def solved_losses_mw(self) -> float:
        """The losses (MW) of the last solve (``FeederState.losses_mw``)."""
        return self._dss.Circuit.Losses()[0] / 1.0e6

    def solved_flow_ok(self) -> bool:
        """Whether the last solve's power flow converged
        (``FeederState.power_flow_converged``)."""
        return self._flow[3]

    def solved_flows(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Voltage readings (pu), branch loadings and substation MW of the last
        solve (as in :meth:`solved_state`)."""
        return self._read_voltages(), self._read_loading(), self._substation_mw()

    def solved_state(self) -> FeederState:
        """The state of the last solve (what :meth:`solve` returns)."""
        return self._state(*self._flow)

    def _fresh_currents(self) -> _BranchCurrents | None:
        """The branch-current product with the tap-changing transformers'
        admittances of the last solve."""
        if self._refresh_due and self._currents is not None and self._currents.needs_refresh:
            self._currents.refresh(self._element_yprim)
        self._refresh_due = False
        return self._currents

    def controls_moved(self) -> None:
        """Regulator taps were set from outside (``dso.controls.apply``): re-read
        the tap-changing transformers' admittances, which branch loadings are
        computed with (a solve with controls does it by itself; one at frozen
        controls would otherwise use the taps of the last solve with them)."""
        self._controls_moved = True

    def _recover(self) -> None:
        """After an error every Solve fails (#99) until a command is parsed: parse
        a harmless one so the next interval starts from a usable engine."""
        self._dss.Text.Command("get mode")

    def _state(
        self, converged: bool, hunting: bool, message: str, flow_ok: bool = True
    ) -> FeederState:
        volts = self._complex_volts()
        v = self._magnitudes(volts)
        loading = self._loading_of(volts) if self._currents is not None else self._read_loading()
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
            load_mw=self._metered_load_mw(substation_mw, losses_mw),
            der_names=tuple(self._der_names),
            der_mw=_frozen(self._der_mw.copy()),
            vmin=self.vmin,
            vmax=self.vmax,
            n_voltage_violations=n_v,
            n_thermal_violations=int(np.count_nonzero(loading > 1.0)),
            power_flow_converged=flow_ok,
        )
        return self._last_state

    def _metered_load_mw(self, substation_mw: float, losses_mw: float) -> float:
        """Active power the inflexible loads actually draw, MW (differs from
        the set kW for constant-current or constant-impedance loads, and when a
        load leaves its vminpu/vmaxpu range), plus that of the feeder's own
        DERs still in the circuit: by the power balance of the solution (what
        the sources deliver is what every power-conversion element draws plus
        the losses of every delivery element), less the DER elements' metered
        power. One read per DER instead of one per load (thousands on a large
        feeder); :meth:`_metered_load_mw_by_element` is the element-by-element
        sum, and the tests hold the two equal."""
        der_kw = 0.0
        for kw in self._batch(self._der_idx).total_kw():  # summed in order, as one by one
            der_kw += kw
        return substation_mw - losses_mw - der_kw / 1000.0

    def _metered_load_mw_by_element(self) -> float:
        """The same, summed over the loads' and own DERs' terminals."""
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
        currents = self._fresh_currents()
        assert currents is not None
        ratio = currents.magnitudes(volts) / self._branch_ratings
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
        self,
        vmin: float | None = None,
        vmax: float | None = None,
        *,
        delta_mw: float = 0.1,
        method: SensitivityMethod = "auto",
        headrooms: bool = True,
    ) -> Sensitivities:
        """Linearise around the current operating point (the last :meth:`solve`)
        for every attached DER, at frozen controls. ``vmin``/``vmax`` (default:
        the feeder's) are the band the headrooms are measured against;
        ``headrooms=False`` leaves them NaN, for a caller that replaces the
        voltage derivatives (:meth:`with_headrooms` fills them in).

        ``method``: ``"factorised"`` solves the power flow's Jacobian once
        (:mod:`.linearise`; one sparse LU for all DERs, no extra power flow);
        ``"fd"`` runs 2 OpenDSS power flows per bus with DERs (``+-delta_mw``,
        central differences; the operating point is restored after);
        ``"auto"`` (default) is the factorised one, checked against finite
        differences at the first DER bus the first time, and finite
        differences from then on if the two disagree (``notes`` says so).

        Why two flows and not one with the other side extrapolated: measured on
        IEEE 13 and 123, a forward difference at 0.1 MW is off by ~5 % in dV/dP
        and 10-25 % in the marginal loss factor (the power flow is that curved
        at this scale), the central one by ~0.2 % and ~2 %."""
        lo = self.vmin if vmin is None else float(vmin)
        hi = self.vmax if vmax is None else float(vmax)
        if not delta_mw > 0.0:
            raise FeederError(f"feeder {self.name}: delta_mw must be > 0, got {delta_mw}")
        if method not in ("auto", "factorised", "fd"):
            raise FeederError(f"feeder {self.name}: unknown sensitivity method {method!r}")
        self._factorisation = None
        if method == "auto" and self._factorised_ok is None and self._der_names:
            self._factorised_ok = self._check_factorised(delta_mw)
        factorised = method == "factorised" or (
            method == "auto" and self._factorised_ok is not False
        )
        columns = None
        if factorised and self._der_names:
            columns = self._factorised_columns(delta_mw)
            if columns is None and method == "factorised":
                raise FeederError(
                    f"feeder {self.name}: the factorised linearisation is not available "
                    f"({self._factorised_why})"
                )
        if columns is None:
            columns = self._fd_columns(delta_mw)
        v0, dv, dl_up, dl_down, dp = columns
        self._headroom_v0 = v0
        if headrooms:
            up, down = self._headrooms_of(v0, dv, lo, hi)
        else:
            up = down = np.full(len(self._der_names), np.nan)
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

    def _headrooms_of(
        self, v0: np.ndarray, dv: np.ndarray, lo: float, hi: float
    ) -> tuple[np.ndarray, np.ndarray]:
        mon = self._monitored
        return _headrooms(v0, dv, lo, hi) if mon.all() else _headrooms(v0[mon], dv[mon], lo, hi)

    def with_headrooms(self, sens: Sensitivities) -> Sensitivities:
        """``sens`` (from the last :meth:`sensitivities`, ``headrooms=False``)
        with its headrooms, from its own voltage derivatives and that
        linearisation's voltages (the numbers :meth:`sensitivities` would have
        given)."""
        up, down = self._headrooms_of(
            self._headroom_v0, np.asarray(sens.dv_dp), sens.vmin, sens.vmax
        )
        return replace(
            sens, injection_headroom_mw=_frozen(up), consumption_headroom_mw=_frozen(down)
        )

    _Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

    def _fd_columns(self, delta_mw: float) -> _Columns:
        """Finite differences: 2 power flows per DER bus."""
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
        return v0, dv, dl_up, dl_down, dp

    def _check_factorised(self, delta_mw: float) -> bool:
        """The factorised linearisation against OpenDSS finite differences at
        the first DER bus, once: with OpenDSS's convergence tolerance tightened
        to 1e-9 and steps of 0.01 MW (the finite differences are then exact to
        ~1e-6), voltage derivatives within 0.1 % of the largest and the
        marginal loss factor within 1e-4. An element the Jacobian does not
        reproduce (errors of several per cent and more) fails it."""
        dss = self._dss
        dss.Text.Command("get tolerance")
        tolerance = dss.Text.Result()
        members = next(iter(self._ders_by_bus().values()))
        saved = (self._der_names, self._der_buses, self._der_idx, self._der_mw)
        j = members[0]
        try:
            dss.Text.Command("set tolerance=1e-9")
            dss.Solution.SolveNoControl()
            columns = self._factorised_columns(delta_mw)
            if columns is None:
                self.notes.append(f"sensitivities by finite differences ({self._factorised_why})")
                return False
            self._der_names, self._der_buses = [saved[0][j]], [saved[1][j]]
            self._der_idx, self._der_mw = [saved[2][j]], saved[3][[j]]
            _, dv_fd, _, _, dp_fd = self._fd_columns(_CHECK_DELTA_MW)
        finally:
            self._der_names, self._der_buses, self._der_idx, self._der_mw = saved
            dss.Text.Command(f"set tolerance={tolerance}")
            dss.Solution.SolveNoControl()
        _, dv, _, _, dp = columns
        scale = float(np.abs(dv_fd[:, 0]).max())
        v_err = float(np.abs(dv[:, j] - dv_fd[:, 0]).max())
        p_err = abs(float(dp[j] - dp_fd[0]))
        ok = v_err <= 1e-3 * scale + 1e-7 and p_err <= 1e-4
        if not ok:
            self.notes.append(
                "sensitivities by finite differences: the factorised linearisation disagrees "
                f"with OpenDSS at DER bus {saved[1][j]} (dV/dP off by {v_err:.2e} pu/MW of "
                f"{scale:.2e}, dPsub/dP by {p_err:.2e}): an element the Jacobian does not "
                "model as OpenDSS does"
            )
        return ok

    def _factorised_columns(self, delta_mw: float) -> _Columns | None:
        """dV by one sparse LU of the power flow's Jacobian (:mod:`.linearise`)."""
        try:
            model = self._jacobian_model()
        except _NotLinearisable as exc:
            self._factorised_why = str(exc)
            return None
        volts = self._complex_volts()
        br = model.branches
        vb = volts[br.a] - np.where(br.b >= 0, volts[np.maximum(br.b, 0)], 0.0)
        p_w, q_var = self._load_powers_w()
        blocks = linearise.load_jacobian(vb, br, p_w, q_var)
        # the other power-conversion elements: constant power per conductor
        extra_a, extra_s = self._other_pc_elements(volts)
        ea = np.concatenate([br.a, extra_a])
        eb = np.concatenate([br.b, np.full(len(extra_a), linearise.GROUND)])
        if len(extra_a):
            ve = volts[extra_a]
            eblocks = linearise.current_jacobian(linearise.constant_power_current, ve, extra_s)
            blocks = tuple(np.concatenate([x, y]) for x, y in zip(blocks, eblocks, strict=True))
        groups = list(self._ders_by_bus().values())
        rhs = np.zeros((len(ea), len(groups)), dtype=complex)
        rows, group_of, twice = self._der_branch_rows(model, groups)
        # per W, then per var, of each DER bus's load element, in one call (the
        # branches twice over: the second time their loads draw 1 var)
        n_loads = len(p_w)
        ones, zeros = np.ones(n_loads), np.zeros(n_loads)
        units = linearise.branch_currents(
            np.concatenate([vb[rows], vb[rows]]),
            twice,
            np.concatenate([ones, zeros]),
            np.concatenate([zeros, ones]),
        )
        unit, unit_q = units[: len(rows)], units[len(rows) :]
        rhs[rows, group_of] = unit * 1.0e6
        try:
            y_rows, y_cols, y_vals = model.real_entries(self)
            solver = model.assembly(y_rows, y_cols, ea, eb).factor(y_vals, blocks)
            dvx = solver.solve(rhs)  # V per MW, real form
        except RuntimeError as exc:  # singular: an island, a floating node
            self._factorised_why = f"the network matrix is singular ({exc})"
            return None
        dv_read = self._reading_derivative(volts, dvx)
        loading = self._loading_base(volts)
        dl_up, dl_down = self._loading_derivative(loading, dvx, delta_mw)
        sources = model.source_terms_real(self)
        dp = self._source_derivative(volts, dvx, sources)
        column = np.empty(len(self._der_names), dtype=np.intp)
        for g, members in enumerate(groups):
            column[members] = g
        self._factorisation = _Factorisation(
            solver, volts, len(ea), model, column, unit_q, loading, sources
        )
        if np.array_equal(column, np.arange(len(groups))):  # one DER per bus, in order
            dv, up, down, dps = dv_read, dl_up, dl_down, dp
        else:
            dv, up, down, dps = dv_read[:, column], dl_up[:, column], dl_down[:, column], dp[column]
        return self._magnitudes(volts), dv, up, down, dps

    def reactive_sensitivities(
        self, ders: np.ndarray, delta_mvar: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Derivatives per Mvar *drawn* by each DER of ``ders`` (attach order)
        at the operating point of the last :meth:`sensitivities`, at frozen
        controls: of every voltage reading (pu), of every branch loading (the
        mean of its slopes over ``delta_mvar`` each way on the linearised
        currents: a central difference) and of the head power (MW). From that
        linearisation's own factorisation (one more solve of it, no power
        flow); None if it was not factorised or a power flow was solved since
        (take finite differences then)."""
        f = self._factorisation
        if f is None or not len(ders):
            return None
        groups = list(self._ders_by_bus().values())
        rows, group_of, _ = self._der_branch_rows(f.model, groups)
        unit = f.unit_q  # per var of each DER bus's load element
        wanted = f.column[np.asarray(ders, dtype=np.intp)]
        pick = np.isin(group_of, wanted)
        where = {int(g): c for c, g in enumerate(wanted.tolist())}
        rhs = np.zeros((f.n_branches, len(wanted)), dtype=complex)
        rhs[rows[pick], [where[int(g)] for g in group_of[pick]]] = unit[pick] * 1.0e6
        dvx = f.solver.solve(rhs)  # V per Mvar drawn, real form
        dl_up, dl_down = self._loading_derivative(f.loading, dvx, delta_mvar)
        return (
            self._reading_derivative(f.volts, dvx),
            (dl_up + dl_down) / 2.0,
            self._source_derivative(f.volts, dvx, f.sources),
        )

    def _der_branch_rows(
        self, model: _JacobianModel, groups: list[list[int]]
    ) -> tuple[np.ndarray, np.ndarray, linearise.PhaseBranches]:
        """The phase branches of the first DER element of every DER bus (one
        per group of ``groups``): their rows, the group of each, and the
        branches themselves twice over, the second time with their loads
        numbered after every load (fixed while no DER is attached: cached)."""
        key = tuple(self._der_idx[m[0]] for m in groups)
        cached = self._der_rows_cache
        if cached is None or cached[0] is not model or cached[1] != key:
            br = model.branches
            per_group = [np.flatnonzero(br.load == self._der_idx[m[0]] - 1) for m in groups]
            rows = np.concatenate(per_group) if per_group else np.zeros(0, dtype=np.intp)
            group_of = np.repeat(np.arange(len(groups)), [len(r) for r in per_group])
            twice = br.take(np.concatenate([rows, rows]))
            twice.load[len(rows) :] += model.n_loads
            cached = (model, key, rows, group_of, twice)
            self._der_rows_cache = cached
        return cached[2], cached[3], cached[4]

    def _reading_derivative(self, volts: np.ndarray, dvx: np.ndarray) -> np.ndarray:
        """d|reading| (pu per MW) of every voltage reading, from dV in real
        form (:func:`.linearise.solve_dv_real`): Re(conj(V) dV) / |V|."""
        first = volts[self._node_first]
        d_re = dvx[2 * self._node_first]
        d_im = dvx[2 * self._node_first + 1]
        if self._ll_rows.any():
            ll = self._ll_rows
            second = np.where(ll, volts[self._node_second], 0.0)
            first = first - second
            d_re -= np.where(ll[:, None], dvx[2 * self._node_second], 0.0)
            d_im -= np.where(ll[:, None], dvx[2 * self._node_second + 1], 0.0)
        mag = np.abs(first)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(mag > 0.0, self._node_scale / mag, 0.0)
        d_re *= (first.real * scale)[:, None]
        d_im *= (first.imag * scale)[:, None]
        d_re += d_im
        return d_re

    def _loading_base(self, volts: np.ndarray) -> _LoadingBase | None:
        """The conductor currents at ``volts`` :meth:`_loading_derivative`
        starts from (None: no branches, or no admittance product)."""
        currents = self._fresh_currents()
        if not len(self._branch_names) or currents is None:
            return None
        inv = 1.0 / self._branch_ratings
        current = currents.product(volts) * inv
        base = current.real**2 + current.imag**2
        l0 = np.sqrt(self._branch_groups().maximum(base))[:, None]
        return _LoadingBase(currents, inv, current, base, l0)

    def _loading_derivative(
        self, start: _LoadingBase | None, dvx: np.ndarray, delta_mw: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """One-sided slopes of each branch's loading (its largest conductor
        current over rating) over steps of ``delta_mw`` each way, on the
        linearised currents ``I + dI/dP * P``: the secants finite differences
        would take, without their power flows. Loading is a maximum of
        magnitudes, convex in the currents: where a current passes through
        zero (a lateral feeding mostly a DER) or two conductors tie, the
        forward and backward slopes differ, and the market uses both."""
        n_br = len(self._branch_names)
        if start is None:
            return np.zeros((n_br, dvx.shape[1])), np.zeros((n_br, dvx.shape[1]))
        currents, inv, current = start.currents, start.inv, start.current
        # In units of each conductor's rating, |I + dI|^2 = |I|^2 + 2 Re(conj(I) dI)
        # + |dI|^2, on contiguous real arrays (the real-form product gives dI's
        # real and imaginary parts as blocks; those of a complex array are
        # strided views, slower in every operation); the square root once per
        # branch (the maximum commutes with it).
        dcur = currents.product_real(dvx)
        step = (delta_mw * inv)[:, None]
        rows = len(inv)
        re, im = dcur[:rows], dcur[rows:]
        re *= step
        im *= step
        twice = 2.0 * current
        cross = re * twice.real[:, None]
        cross += im * twice.imag[:, None]
        re *= re
        im *= im
        re += im  # |dI|^2
        del im
        re += start.base[:, None]
        up = re + cross
        re -= cross  # |I - dI|^2 (>= 0 but for rounding: clipped after the maximum)
        groups = self._branch_groups()
        l0 = start.l0
        l_up = np.sqrt(groups.maximum(up))
        l_dn = np.sqrt(np.maximum(groups.maximum(re), 0.0))
        return (l_up - l0) / delta_mw, (l0 - l_dn) / delta_mw

    def _branch_groups(self) -> _Groups:
        if self._groups is None:
            self._groups = _Groups.of(self._branch_starts, len(self._branch_picks))
        return self._groups

    def _source_derivative(
        self,
        volts: np.ndarray,
        dvx: np.ndarray,
        sources: list[tuple[np.ndarray, Any, np.ndarray]],
    ) -> np.ndarray:
        """MW at the sources per MW at each DER column: the change of
        -Re(sum V conj(I)) over every source's terminal conductors (dV in real
        form; ``sources``: :meth:`_JacobianModel.source_terms_real`)."""
        total = np.zeros(dvx.shape[1])
        for cols, yrows_real, current in sources:
            v = volts[cols]
            parts = yrows_real @ dvx
            di = parts[: len(cols)] + 1j * parts[len(cols) :]
            dv = linearise.complex_rows(dvx, cols)
            total -= (dv * np.conj(current)[:, None] + v[:, None] * np.conj(di)).real.sum(0)
        return total / 1.0e6

    def load_powers(self) -> tuple[np.ndarray, np.ndarray]:
        """P (W) and Q (var) of every load, the feeder's own and then the DERs
        in attach order, as OpenDSS applies them and as :meth:`sensitivities`
        takes them at the operating point."""
        return self._load_powers_w()

    def _load_powers_w(self) -> tuple[np.ndarray, np.ndarray]:
        """P (W) and Q (var) of every load as OpenDSS applies them in a snapshot:
        the kW and kvar set, times the global load multiplier for loads of
        status ``variable``."""
        kw = np.concatenate([self._kw_now, self._der_mw * 1000.0])
        der_kvar = np.array([self._der_kvar.get(idx, 0.0) for idx in self._der_idx])
        kvar = np.concatenate([self._kvar_now, der_kvar])
        mult = np.where(self._jacobian.variable, self._dss.Solution.LoadMult(), 1.0)
        return kw * 1000.0 * mult, kvar * 1000.0 * mult

    def _other_pc_elements(self, volts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(node, complex power drawn) per conductor of the enabled PV systems,
        storage elements and generators: taken as constant power."""
        nodes: list[np.ndarray] = []
        powers: list[np.ndarray] = []
        position = self._jacobian.position
        for der in self._existing:
            if not der.enabled:
                continue
            self._dss.Circuit.SetActiveElement(der.element)
            cols = self._element_columns(position)
            raw = np.asarray(self._dss.CktElement.Currents(), dtype=float)
            current = raw[0::2] + 1j * raw[1::2]
            n = len(cols) // max(self._dss.CktElement.NumTerminals(), 1)
            cols, current = cols[:n], current[:n]
            live = cols >= 0
            nodes.append(cols[live])
            powers.append(volts[cols[live]] * np.conj(current[live]))
        if not nodes:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=complex)
        return np.concatenate(nodes), np.concatenate(powers)

    @property
    def _jacobian(self) -> _JacobianModel:
        return self._jacobian_model()

    def _jacobian_model(self) -> _JacobianModel:
        """The static parts of the Jacobian (built once, again after a DER is
        attached): the network's admittances and every load's phase branches."""
        if self._jacobian_cache is None or self._jacobian_cache.n_loads != self._dss.Loads.Count():
            self._jacobian_cache = _JacobianModel.build(self)
        return self._jacobian_cache


@dataclass(frozen=True)
class _Factorisation:
    """The last factorised linearisation's LU and operating point, for more
    right-hand sides (:meth:`Feeder.reactive_sensitivities`)."""

    solver: linearise.DvSolver
    volts: np.ndarray
    n_branches: int
    """Rows of the right-hand side (phase branches and other elements)."""
    model: _JacobianModel
    column: np.ndarray
    """The right-hand-side column (DER bus) of every DER."""
    unit_q: np.ndarray
    """Currents of the DER buses' phase branches per var drawn."""
    loading: _LoadingBase | None
    sources: list[tuple[np.ndarray, Any, np.ndarray]]
    """:meth:`_JacobianModel.source_terms_real` at this operating point."""


@dataclass(frozen=True)
class _LoadingBase:
    """Conductor currents at an operating point, in units of their ratings,
    their squared magnitudes and the branches' loadings
    (:meth:`Feeder._loading_derivative`)."""

    currents: _BranchCurrents
    inv: np.ndarray
    current: np.ndarray
    base: np.ndarray
    l0: np.ndarray


@dataclass(frozen=True)
class _Groups:
    """Consecutive runs of rows (a branch's conductor rows, from ``starts``),
    by run length: the maximum over each run is one reshape per length, much
    faster than ``np.maximum.reduceat`` over the rows of a 2-D array."""

    n: int
    by_length: tuple[tuple[np.ndarray, np.ndarray, int], ...]
    """Per run length: the runs (their positions) and their rows, in run order."""

    @classmethod
    def of(cls, starts: np.ndarray, n_rows: int) -> _Groups:
        lengths = np.diff(np.append(starts, n_rows))
        parts = []
        for length in np.unique(lengths):
            runs = np.flatnonzero(lengths == length)
            rows = (starts[runs][:, None] + np.arange(length)).ravel()
            parts.append((runs, rows, int(length)))
        return cls(len(starts), tuple(parts))

    def maximum(self, a: np.ndarray) -> np.ndarray:
        """Maximum of ``a`` (rows first) over each run."""
        out = np.empty((self.n, *a.shape[1:]))
        for runs, rows, length in self.by_length:
            out[runs] = a[rows].reshape(len(runs), length, *a.shape[1:]).max(axis=1)
        return out


_TAP_STATES_KEPT = 32
"""Tap states whose current matrices :class:`_BranchCurrents` keeps."""


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
        self._moving_key: bytes | None = None
        """The moving elements' primitive admittances the matrices were built of."""
        self._moving_rows = np.zeros(0, dtype=np.intp)
        self._by_taps: dict[bytes, tuple[np.ndarray, Any, Any]] = {}
        """Matrices of other tap states met before, by their admittances (the
        ex-post check and the re-linearisation move the taps back and forth)."""
        self._matrix_real: Any = None
        self._moving_real: Any = None

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
        self._moving_key = None
        self._by_taps = {}
        self._matrix_real = None
        self._moving_real = None
        return self

    def refresh(self, yprim_of: Any) -> None:
        """Re-read the admittances of the tap-changing transformers (kept as
        a matrix over their own rows only: ``_moving_rows``)."""
        if self._moving:
            raw = [yprim_of(element) for element, _, _, _ in self._moving]
            key = b"".join(y.tobytes() for y in raw)
            if key == self._moving_key:
                return  # the taps did not move: the same matrices
            if self._moving_key is not None:
                self._by_taps[self._moving_key] = (
                    self._moving_rows,
                    self._moving_matrix,
                    self._moving_real,
                )
            self._moving_key = key
            known = self._by_taps.pop(key, None)
            if known is not None:  # a tap state seen before (the controls come and go)
                self._moving_rows, self._moving_matrix, self._moving_real = known
                return
            while len(self._by_taps) >= _TAP_STATES_KEPT:
                del self._by_taps[next(iter(self._by_taps))]  # the oldest
            parts = [
                _entries(row0, rows, cols, yprim)
                for (_, row0, rows, cols), yprim in zip(self._moving, raw, strict=True)
            ]
            rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
            self._moving_rows, local = np.unique(rows, return_inverse=True)
            self._moving_matrix = sparse.csr_matrix(
                (vals, (local, cols)), shape=(len(self._moving_rows), self._n_nodes)
            )
            self._moving_real = None

    @property
    def needs_refresh(self) -> bool:
        return bool(self._moving)

    def magnitudes(self, volts: np.ndarray) -> np.ndarray:
        return np.abs(self.product(volts))

    def product_real(self, x: np.ndarray) -> np.ndarray:
        """Conductor current changes of node voltage changes in real form
        (:func:`.linearise.solve_dv_real`, one column per case): their real
        parts in the first rows, their imaginary parts in as many below."""
        if self._matrix_real is None:
            self._matrix_real = linearise.real_rows(self._matrix)
        out = self._matrix_real @ x
        if self._moving_matrix is not None:
            if self._moving_real is None:
                self._moving_real = linearise.real_rows(self._moving_matrix)
            moved = self._moving_real @ x
            m = len(self._moving_rows)
            out[self._moving_rows] += moved[:m]
            out[self._n_rows + self._moving_rows] += moved[m:]
        return out

    def product(self, volts: np.ndarray) -> np.ndarray:
        """Conductor currents (complex) of node voltages (a vector, or one
        column per case)."""
        currents = self._matrix @ volts
        if self._moving_matrix is not None:
            currents[self._moving_rows] += self._moving_matrix @ volts
        return currents

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
    block = yprim[np.ix_(np.asarray(local_rows, dtype=np.intp), live)]
    rows = np.repeat(np.arange(row0, row0 + len(local_rows)), len(live))
    return rows, np.tile(cols[live], len(local_rows)), block.ravel()


def _headrooms(
    v0: np.ndarray, dv: np.ndarray, vmin: float, vmax: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per DER, MW of injection to the first vmax crossing and of consumption to
    the first vmin crossing (linear, one DER at a time).

    Net demand up by x moves node k by dv[k] * x: consumption reaches vmax
    after (vmax - v0) / dv where dv > 0 and vmin after (v0 - vmin) / -dv where
    dv < 0; injection the other way round. One division per entry, by |dv|."""
    above = (vmax - v0)[:, None]
    below = (v0 - vmin)[:, None]
    size = np.abs(dv)
    moves = size > 1e-12
    rising = dv > 0.0
    room = np.where(rising, above, below)  # for consumption
    with np.errstate(divide="ignore"):
        inv = np.divide(1.0, size, out=np.zeros_like(size), where=moves)
    consumption = np.where(moves, room * inv, math.inf).min(axis=0, initial=math.inf)
    room = (vmax - vmin) - room  # the other side, for injection
    injection = np.where(moves, room * inv, math.inf).min(axis=0, initial=math.inf)
    return np.maximum(injection, 0.0), np.maximum(consumption, 0.0)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


_COMMENT = re.compile(r"(!|//).*$")
_COMPILE = re.compile(r"^\s*compile\s+(?:file(?:name)?\s*=\s*)?(.+?)\s*$", re.I)
_FOLLOWING = re.compile(r"^\s*(new|edit|redirect|batchedit|more|~|\w+\.\w+)", re.I)


def resolve_master(path: Path) -> tuple[Path, str | None]:
    """The master file to compile for ``path``: ``path`` itself, or, when it
    is a run script (a file that ``Compile``s another and then solves, plots
    and exports, as utilities ship next to a master that only compiles), the
    file it compiles, with a note saying what of the script is left out."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return path, None
    target: Path | None = None
    after: list[str] = []
    for raw in lines:
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        if target is None:
            match = _COMPILE.match(line)
            if match:
                name = match.group(1).strip().strip("[]()\"'{}").strip()
                candidate = (path.parent / name.replace("\\", "/")).resolve()
                if candidate.is_file() and candidate != path:
                    target = candidate
            continue
        after.append(line)
    if target is None:
        return path, None
    defines = [a for a in after if _FOLLOWING.match(a) and not _is_instrument(a)]
    note = (
        f"{path.name} is a run script: it compiles {target.name} and then "
        f"{len(after)} command(s) for an OpenDSS session (solve, plots, reports, exports); "
        f"dsosim uses {target.name}"
    )
    if defines:
        note += (
            f". The script also changes the circuit after compiling ({defines[0][:60]!r}"
            f"{f' and {len(defines) - 1} more' if len(defines) > 1 else ''}): those changes "
            "are left out; put them in a master of your own that redirects to "
            f"{target.name} if they matter"
        )
    return target, note


def _is_instrument(line: str) -> bool:
    """Monitors and energy meters: for an OpenDSS session, not the circuit."""
    word = line.lower().split()
    return (
        len(word) >= 2
        and word[0] == "new"
        and word[1].split(".")[0]
        in (
            "monitor",
            "energymeter",
        )
    )


# OpenDSS load models the factorised linearisation reproduces (Load.pas): constant
# PQ, Z, motor (P, Z for Q), CVR exponents, constant I, ZIP. Models 6 and 7
# (fixed Q) fall back to finite differences.
_MODELLED_LOADS = frozenset({1, 2, 3, 4, 5, 8})


class _NotLinearisable(Exception):
    """The circuit has an element the factorised linearisation does not model."""


@dataclass
class _JacobianModel:
    """What the factorised linearisation needs that does not change between
    intervals: the network's fixed admittances (lines, transformers without a
    tap changer, sources), the elements whose admittance moves with controls
    (re-read every time), and every load's phase branches."""

    n_loads: int
    n_nodes: int
    position: dict[str, int]
    fixed: Any
    moving: list[str]
    sources: Any
    branches: linearise.PhaseBranches
    variable: np.ndarray
    fixed_real: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    _entries_cache: tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    """The last :meth:`real_entries`, by the moving elements' admittances."""
    _source_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]] = field(
        default_factory=dict
    )
    """Per source: its admittance, columns, live first-terminal conductors and
    admittance rows (complex and real form) made of them."""
    _columns: dict[str, np.ndarray] = field(default_factory=dict)
    """Node columns of the moving elements and sources, by element."""
    _assembly: linearise.Assembly | None = None
    """The Jacobian's assembly: its pattern and ordering (this feeder's own)."""

    @classmethod
    def build(cls, feeder: Feeder) -> _JacobianModel:
        dss = feeder._dss
        position = {n.lower(): i for i, n in enumerate(dss.Circuit.AllNodeNames())}
        n = len(position)
        regulated = feeder._regulated_transformers()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        moving: list[str] = []
        names = list(dss.PDElements.AllNames()) + [f"Vsource.{v}" for v in dss.Vsources.AllNames()]
        for full in names:
            dss.Circuit.SetActiveElement(full)
            if not dss.CktElement.Enabled():
                continue
            if full.lower() in regulated or full.lower().startswith("capacitor."):
                moving.append(full)
                continue
            cols = feeder._element_columns(position)
            parts.append(_square(cols, feeder._element_yprim(full)))
        fixed = _sum_csr(parts, n)
        branches, variable = _load_branches(feeder, position)
        model = cls(
            n_loads=dss.Loads.Count(),
            n_nodes=n,
            position=position,
            fixed=fixed,
            moving=moving,
            sources=[f"Vsource.{v}" for v in dss.Vsources.AllNames()],
            branches=branches,
            variable=variable,
        )
        return model

    def _moving_y(self, feeder: Feeder) -> Any:
        parts = []
        for full in self.moving:
            feeder._dss.Circuit.SetActiveElement(full)
            cols = feeder._element_columns(self.position)
            parts.append(_square(cols, feeder._element_yprim(full)))
        return _sum_csr(parts, self.n_nodes)

    def y_net(self, feeder: Feeder) -> Any:
        """The network's admittance matrix at the present taps and states."""
        return self.fixed + self._moving_y(feeder)

    def real_entries(self, feeder: Feeder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """COO entries of the real form of :meth:`y_net` (the fixed part's
        computed once)."""
        if self.fixed_real is None:
            self.fixed_real = linearise.real_form(self.fixed)
        parts = [
            (self.columns_of(feeder, full), feeder._element_yprim(full)) for full in self.moving
        ]
        # taps and capacitors mostly stay: the same admittances give the same entries
        key = np.concatenate([y.ravel() for _, y in parts]) if parts else np.zeros(0)
        cached = self._entries_cache
        if cached is not None and np.array_equal(cached[0], key):
            return cached[1]
        moving = linearise.real_form(_sum_csr([_square(c, y) for c, y in parts], self.n_nodes))
        entries: tuple[np.ndarray, np.ndarray, np.ndarray] = tuple(  # type: ignore[assignment]
            np.concatenate([a, b]) for a, b in zip(self.fixed_real, moving, strict=True)
        )
        self._entries_cache = (key, entries)
        return entries

    def columns_of(self, feeder: Feeder, full: str) -> np.ndarray:
        """:meth:`Feeder._element_columns` of the element ``full`` (its buses
        do not change: read once)."""
        cols = self._columns.get(full)
        if cols is None:
            feeder._dss.Circuit.SetActiveElement(full)
            cols = self._columns[full] = feeder._element_columns(self.position)
        return cols

    def assembly(
        self, rows: np.ndarray, cols: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> linearise.Assembly:
        """The assembly of the Jacobian of the network's entries at ``rows``,
        ``cols`` (:meth:`real_entries`) and branches ``a`` -> ``b`` (made again
        only if an index array changed)."""
        made = self._assembly
        if made is None or not made.fits(rows, cols, self.n_nodes, a, b):
            made = self._assembly = linearise.Assembly(rows, cols, self.n_nodes, a, b)
        return made

    def source_terms(self, feeder: Feeder) -> list[tuple[np.ndarray, Any, np.ndarray]]:
        """Per source: node columns of its first terminal's live conductors,
        the rows of its admittance for them (over all its live columns, as a
        matrix over all nodes) and its present currents there."""
        return [(cols, rows, current) for cols, rows, _, current in self._sources(feeder)]

    def source_terms_real(self, feeder: Feeder) -> list[tuple[np.ndarray, Any, np.ndarray]]:
        """:meth:`source_terms` with the admittance rows in real form
        (:func:`.linearise.real_rows`)."""
        return [(cols, real, current) for cols, _, real, current in self._sources(feeder)]

    def _sources(self, feeder: Feeder) -> list[tuple[np.ndarray, Any, Any, np.ndarray]]:
        """(columns, admittance rows, the same in real form, currents) per
        source; the rows made again only when its admittance changed."""
        out = []
        dss = feeder._dss
        for full in self.sources:
            cols = self.columns_of(feeder, full)
            dss.Circuit.SetActiveElement(full)
            raw = np.asarray(dss.CktElement.Currents(), dtype=float)
            current = raw[0::2] + 1j * raw[1::2]
            y = feeder._element_yprim(full)
            cached = self._source_cache.get(full)
            if cached is None or not (
                np.array_equal(cached[0], y) and np.array_equal(cached[1], cols)
            ):
                n_cond = dss.CktElement.NumConductors()
                first = np.arange(n_cond)
                live_first = first[cols[first] >= 0]
                live = np.flatnonzero(cols >= 0)
                rows = sparse.csr_matrix(
                    (
                        y[np.ix_(live_first, live)].ravel(),
                        (
                            np.repeat(np.arange(len(live_first)), len(live)),
                            np.tile(cols[live], len(live_first)),
                        ),
                    ),
                    shape=(len(live_first), self.n_nodes),
                )
                cached = (y, cols, live_first, rows, linearise.real_rows(rows))
                self._source_cache[full] = cached
            live_first = cached[2]
            out.append((cols[live_first], cached[3], cached[4], current[live_first]))
        return out


def _square(cols: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    live = np.flatnonzero(cols >= 0)
    block = y[np.ix_(live, live)]
    return (
        np.repeat(cols[live], len(live)),
        np.tile(cols[live], len(live)),
        block.ravel(),
    )


def _sum_csr(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> Any:
    if not parts:
        return sparse.csr_matrix((n, n), dtype=complex)
    rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n, n))


def _load_branches(
    feeder: Feeder, position: dict[str, int]
) -> tuple[linearise.PhaseBranches, np.ndarray]:
    """Every load's phase branches from its conductors' nodes: wye phases to
    its neutral conductor's node (ground when 0), delta phases pairwise."""
    dss = feeder._dss
    loads = dss.Loads
    fields: dict[str, list[Any]] = {k: [] for k in ("a", "b", "load", "share", "v0")}
    per_load: list[tuple[int, float, float, float, float, list[float], float]] = []
    variable: list[bool] = []
    for i in range(1, loads.Count() + 1):
        loads.Idx(i)
        element = dss.CktElement
        cols = feeder._element_columns(position)
        nph = element.NumPhases()
        delta = bool(loads.IsDelta())
        kv = loads.kV() * 1000.0
        if delta:
            if nph == 3:
                pairs = [(cols[0], cols[1]), (cols[1], cols[2]), (cols[2], cols[0])]
            elif nph == 1:
                pairs = [(cols[0], cols[1])]
            else:
                raise _NotLinearisable(f"load {loads.Name()}: {nph}-phase delta")
            v0 = kv
        else:
            neutral = cols[nph] if len(cols) > nph else linearise.GROUND
            pairs = [(cols[k], neutral) for k in range(nph)]
            v0 = kv / math.sqrt(3.0) if nph > 1 else kv
        for a, b in pairs:
            fields["a"].append(a)
            fields["b"].append(b)
            fields["load"].append(i - 1)
            fields["share"].append(1.0 / len(pairs))
            fields["v0"].append(v0)
        if loads.Model() not in _MODELLED_LOADS:
            raise _NotLinearisable(
                f"load {loads.Name()} has model={loads.Model()}, which the Jacobian does not "
                f"model (it does {sorted(_MODELLED_LOADS)})"
            )
        zipv = list(loads.ZipV()) if loads.Model() == 8 else [0.0] * 7
        dss.Text.Command(f"? load.{loads.Name()}.vlowpu")
        try:
            vlow = float(dss.Text.Result())
        except ValueError:
            vlow = 0.5
        per_load.append(
            (
                loads.Model(),
                loads.Vminpu(),
                loads.Vmaxpu(),
                loads.CVRwatts(),
                loads.CVRvars(),
                zipv,
                vlow,
            )
        )
        variable.append(loads.Status() == 0)
    idx = np.asarray(fields["load"], dtype=np.intp)
    model = np.array([p[0] for p in per_load], dtype=np.intp)
    zips = np.array([(list(p[5]) + [0.0] * 7)[:7] for p in per_load], dtype=float).reshape(-1, 7)
    if not len(per_load):
        zips = np.zeros((0, 7))
    branches = linearise.PhaseBranches(
        a=np.asarray(fields["a"], dtype=np.intp),
        b=np.asarray(fields["b"], dtype=np.intp),
        load=idx,
        share=np.asarray(fields["share"], dtype=float),
        v0=np.asarray(fields["v0"], dtype=float),
        model=model[idx],
        vmin=np.array([p[1] for p in per_load])[idx],
        vmax=np.array([p[2] for p in per_load])[idx],
        exp_p=np.array([p[3] for p in per_load])[idx],
        exp_q=np.array([p[4] for p in per_load])[idx],
        zip_p=zips[idx][:, 0:3],
        zip_q=zips[idx][:, 3:6],
        zip_cutoff=zips[idx][:, 6],
        vlow=np.array([p[6] for p in per_load])[idx],
    )
    return branches, np.asarray(variable, dtype=bool)
