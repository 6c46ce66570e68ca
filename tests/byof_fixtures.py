"""Feeders as utilities deliver them, written into a test's folder: a master
file in a folder tree with relative redirects, Windows line endings, load
shapes read from CSV, bus coordinates, regulators and capacitors with controls, the
feeder's own PV and storage; and deliberately broken ones."""

from __future__ import annotations

from pathlib import Path

CRLF = "\r\n"

_MASTER = """\
Clear
Set DefaultBaseFrequency=60
! Utility U, feeder 12F3 as exported from the planning tool
New Circuit.U12F3 basekv=69 pu=1.02 phases=3 bus1=SourceBus MVAsc3=1500 MVAsc1=1200
Redirect Substation/Substation.dss
Redirect Library/LineCodes.dss
Redirect Network/Lines.dss
Redirect Network/Devices.dss
Set VoltageBases=[69, 12.47, 0.48]
CalcVoltageBases
Buscoords Network/BusCoords.csv
Solve
"""

_SUBSTATION = """\
New Transformer.SUB phases=3 windings=2 buses=[SourceBus SUB_LV] conns=[delta wye]
~ kvs=[69 12.47] kvas=[10000 10000] xhl=7 %r=0.5
New RegControl.LTC transformer=SUB winding=2 vreg=123 band=2 ptratio=60
"""

_LINECODES = """\
New LineCode.ABC336 nphases=3 r1=0.19 x1=0.41 r0=0.53 x0=1.45 c1=10 c0=4 units=km normamps=530
New LineCode.ABC1/0 nphases=3 r1=0.61 x1=0.48 r0=0.95 x0=1.55 c1=9 c0=4 units=km normamps=230
New LineCode.AC2 nphases=2 rmatrix=[0.95 | 0.25 0.95] xmatrix=[0.85 | 0.35 0.85]
~ units=km normamps=180
New LineCode.B2 nphases=1 rmatrix=[0.96] xmatrix=[0.80] units=km normamps=180
"""

_LINES = """\
! Trunk
New Line.L01 bus1=SUB_LV bus2=T1 linecode=ABC336 length=0.8 units=km
New Line.L02 bus1=T1 bus2=T2 linecode=ABC336 length=0.6 units=km
New Line.L03 bus1=T2 bus2=T3 linecode=ABC336 length=0.7 units=km
New Line.L04 bus1=T3 bus2=T4 linecode=ABC1/0 length=0.5 units=km
New Line.L05 bus1=T4 bus2=T5 linecode=ABC1/0 length=0.6 units=km
! Single-phase lateral behind a regulator, two-phase lateral
New Line.L06 phases=1 bus1=T2R.2 bus2=B1.2 linecode=B2 length=0.4 units=km
New Line.L07 phases=1 bus1=B1.2 bus2=B2.2 linecode=B2 length=0.3 units=km
New Line.L08 phases=2 bus1=T3.1.3 bus2=C1.1.3 linecode=AC2 length=0.3 units=km
! Service transformer
New Transformer.SVC phases=3 windings=2 buses=[T5 T5LV] conns=[delta wye] kvs=[12.47 0.48]
~ kvas=[500 500] xhl=4 %r=1
Redirect ../Loads/LoadShapes.dss
Redirect ../Loads/Loads.dss
"""

_DEVICES = """\
New Transformer.LREG phases=1 windings=2 buses=[T2.2 T2R.2] kvs=[7.2 7.2] kvas=[1000 1000] xhl=0.01
New RegControl.LREG transformer=LREG winding=2 vreg=122 band=2 ptratio=60
New Capacitor.C4 bus1=T4 phases=3 kvar=300 kv=12.47
New CapControl.C4 capacitor=C4 element=Line.L04 terminal=2 type=voltage ptratio=60
~ onsetting=118 offsetting=126 delay=30 delayoff=30
New PVSystem.PV_B2 bus1=B2.2 phases=1 kv=7.2 kva=55 pmpp=50 irradiance=1 pf=1
New Storage.BESS_T4 bus1=T4 phases=3 kv=12.47 kwrated=200 kwhrated=800 %stored=60 %reserve=20
"""

_LOADSHAPES = """\
New LoadShape.RES npts=24 interval=1 mult=(file=Residential.csv)
"""

_SHAPE = (
    "\n".join(
        str(x)
        for x in (
            0.4,
            0.35,
            0.33,
            0.33,
            0.35,
            0.45,
            0.6,
            0.7,
            0.65,
            0.6,
            0.6,
            0.62,
            0.63,
            0.62,
            0.62,
            0.65,
            0.75,
            0.9,
            1.0,
            1.0,
            0.95,
            0.8,
            0.6,
            0.5,
        )
    )
    + "\n"
)

_LOADS = """\
New Load.T1 bus1=T1 phases=3 kv=12.47 kw=600 kvar=200 model=1 daily=RES
New Load.T3 bus1=T3 phases=3 kv=12.47 kw=450 kvar=150 model=2 daily=RES
New Load.T4 bus1=T4 phases=3 kv=12.47 kw=500 kvar=180 model=1 daily=RES
New Load.B1 bus1=B1.2 phases=1 kv=7.2 kw=120 kvar=40 model=1 daily=RES
New Load.B2 bus1=B2.2 phases=1 kv=7.2 kw=90 kvar=30 model=5 daily=RES
New Load.C1 bus1=C1.1.3 phases=1 conn=delta kv=12.47 kw=150 kvar=50 model=1 daily=RES
New Load.T5LV bus1=T5LV phases=3 kv=0.48 kw=300 kvar=100 model=1 daily=RES
"""

_COORDS = """\
SourceBus,0,0
SUB_LV,100,0
T1,200,0
T2,300,0
T2R,300,50
B1,300,150
B2,300,250
T3,400,0
C1,400,-100
T4,500,0
T5,600,0
T5LV,650,0
"""

UTILITY_FILES = {
    "Master.dss": _MASTER,
    "Substation/Substation.dss": _SUBSTATION,
    "Library/LineCodes.dss": _LINECODES,
    "Network/Lines.dss": _LINES,
    "Network/Devices.dss": _DEVICES,
    "Network/BusCoords.csv": _COORDS,
    "Loads/LoadShapes.dss": _LOADSHAPES,
    "Loads/Residential.csv": _SHAPE,
    "Loads/Loads.dss": _LOADS,
}
UTILITY_LOAD_BUSES = ("b1", "b2", "c1", "t1", "t3", "t4", "t5lv")
UTILITY_LOAD_KW = 2210.0


def utility_feeder(folder: Path, files: dict[str, str] | None = None) -> Path:
    """Write the utility's feeder folder (CRLF line endings); returns its master."""
    for name, text in (files or UTILITY_FILES).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="ascii", newline="") as f:
            f.write(text.replace("\n", CRLF))
    return folder / "Master.dss"


def broken_feeder(folder: Path, kind: str) -> Path:
    """The utility's feeder with one problem: ``missing_redirect`` (a redirected
    file is absent), ``compile_error`` (a line refers to an unknown line code)
    or ``no_convergence`` (a load far beyond what the feeder can carry)."""
    files = dict(UTILITY_FILES)
    if kind == "missing_redirect":
        del files["Loads/LoadShapes.dss"]
    elif kind == "compile_error":
        files["Network/Lines.dss"] = files["Network/Lines.dss"].replace(
            "linecode=ABC1/0 length=0.5", "linecode=ABC4/0 length=0.5"
        )
    elif kind == "no_convergence":
        # Constant power down to any voltage (vminpu=0): beyond the nose of the
        # P-V curve there is no solution.
        files["Loads/Loads.dss"] += (
            "New Load.HUGE bus1=T5 phases=3 kv=12.47 kw=60000 kvar=20000 "
            "model=1 vminpu=0.0 vmaxpu=10\n"
        )
    else:
        raise ValueError(kind)
    return utility_feeder(folder, files)


HUNTING = """\
Clear
! One bus whose switched capacitor (about 3 V on 120 V) is wider than its
! control deadband (118-119 V): between about 35 % and 80 % of the peak load
! it switches on and off until OpenDSS gives up (#485); at the peak and at
! light load it settles.
New Circuit.hunt basekv=12.47 pu=1.0 phases=3 bus1=src MVAsc3=20000 MVAsc1=21000
New Line.l1 phases=3 bus1=src bus2=b2 r1=0.3 x1=0.6 r0=0.6 x0=1.2 units=km length=3 normamps=400
New Load.ld bus1=b2 phases=3 kv=12.47 kw=5000 kvar=1667 model=1 vminpu=0.85 vmaxpu=1.15
New Capacitor.c1 bus1=b2 phases=3 kv=12.47 kvar=3000
New CapControl.cc capacitor=c1 element=Line.l1 terminal=2 type=voltage ptratio=60
~ ONsetting=118 OFFsetting=119 delay=1 delayoff=1
Set VoltageBases=[12.47]
CalcVoltageBases
"""


def hunting_feeder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Master.dss"
    path.write_text(HUNTING)
    return path


# A feeder with the quirks of models as utilities export them that no shared
# test feeder has together: split-phase (centre-tapped) service transformers
# with 120/240 V triplex customers, a voltage level missing from VoltageBases,
# a second source (a tie to a neighbouring substation), load shapes from CSV
# and from a binary file of doubles, yearly mode and time control mode set by
# the master, monitors, an energy meter, BatchEdit, coordinates after
# CalcVoltageBases, its own PV system, storage and generator, and file names
# whose case differs from the references (written on Windows).
_QUIRKY_MASTER = """\
Clear
Set DefaultBaseFrequency=60
New Circuit.Q1 basekv=12.47 pu=1.03 phases=3 bus1=SUB MVAsc3=800 MVAsc1=700
Redirect library/linecodes.DSS
Redirect Network/LINES.dss
Redirect Network/Services.dss
Redirect loads/Shapes.dss
Redirect loads/Loads.dss
New Vsource.TIE bus1=FAR basekv=12.47 pu=1.0 phases=3 MVAsc3=200 MVAsc1=180
New PVSystem.PV1 bus1=N3 phases=3 kv=12.47 kva=300 pmpp=280 irradiance=0.8
New Storage.ST1 bus1=N2 phases=3 kv=12.47 kwrated=200 kwhrated=800 %stored=50
New Generator.G1 bus1=N4 phases=3 kv=12.47 kw=150 pf=1 model=1
New Energymeter.M1 element=Line.L1 terminal=1
New Monitor.HEAD element=Line.L1 terminal=1 mode=1
New Monitor.TAIL element=Line.L4 terminal=2 mode=0
BatchEdit Load..* vminpu=0.85
Set VoltageBases=[12.47]
CalcVoltageBases
Buscoords network/Coords.CSV
Set mode=yearly number=1 controlmode=time
"""

_QUIRKY_LINECODES = """\
New LineCode.MAIN nphases=3 r1=0.19 x1=0.41 r0=0.53 x0=1.45 units=km normamps=450
New LineCode.TPX nphases=2 rmatrix=[0.55 | 0.17 0.55] xmatrix=[0.25 | 0.20 0.25]
~ units=kft normamps=200
"""

_QUIRKY_LINES = """\
New Line.L1 bus1=SUB bus2=N1 linecode=main length=1.2
New Line.L2 bus1=N1 bus2=N2 linecode=MAIN length=0.8
New Line.L3 bus1=N2 bus2=N3 linecode=Main length=1.0
New Line.L4 bus1=N3 bus2=N4 linecode=MAIN length=0.9
New Line.TIE bus1=N4 bus2=FAR linecode=MAIN length=2.0
New Line.OPEN bus1=N1 bus2=N3 linecode=MAIN length=1.5 enabled=no
"""

_SERVICE = """\
New Transformer.XF{k} phases=1 windings=3 buses=[N{k}.{ph} S{k}.1.0 S{k}.0.2]
~ conns=[wye wye wye] kvs=[7.2 0.12 0.12] kvas=[50 50 50] %loadloss=0.6
~ xhl=2.04 xht=2.04 xlt=1.36 %noloadloss=0.2
New Line.TPX{k}a bus1=S{k}.1.2 bus2=C{k}a.1.2 phases=2 linecode=TPX length=0.1
New Line.TPX{k}b bus1=S{k}.1.2 bus2=C{k}b.1.2 phases=2 linecode=TPX length=0.08
"""

_QUIRKY_LOADS = """\
New Load.P2 bus1=N2 phases=3 kv=12.47 kw=900 kvar=300 yearly=Commercial
New Load.P4 bus1=N4 phases=3 kv=12.47 kw=700 kvar=250 yearly=Commercial
New Load.C1a bus1=C1a.1.2 phases=1 kv=0.208 kw=6 kvar=2 yearly=Home
New Load.C1b bus1=C1b.1.2 phases=1 kv=0.208 kw=5 kvar=2 yearly=Home
New Load.C2a bus1=C2a.1.2 phases=1 kv=0.208 kw=7 kvar=2 yearly=Home
New Load.C2b bus1=C2b.1.2 phases=1 kv=0.208 kw=4 kvar=1 yearly=Home
New Load.C3a bus1=C3a.1.2 phases=1 kv=0.208 kw=8 kvar=3 yearly=Home
New Load.C3b bus1=C3b.1.2 phases=1 kv=0.208 kw=6 kvar=2 yearly=Home
"""

_QUIRKY_SHAPES = """\
New Loadshape.Home npts=24 interval=1 mult=(file=Home.csv)
New Loadshape.Commercial npts=24 interval=1 mult=(dblfile=commercial.DBL)
"""

_QUIRKY_COORDS = "SUB,0,0\nN1,1,0\nN2,2,0\nN3,3,0\nN4,4,0\nFAR,6,0\n"

# Where every file really is (the master refers to some in another case).
QUIRKY_FILES = {
    "Master.DSS": _QUIRKY_MASTER,
    "Library/LineCodes.dss": _QUIRKY_LINECODES,
    "Network/Lines.dss": _QUIRKY_LINES,
    "Network/Services.dss": "".join(
        _SERVICE.format(k=k, ph=ph) for k, ph in ((1, 1), (2, 2), (3, 3))
    ),
    "Network/coords.csv": _QUIRKY_COORDS,
    "Loads/Shapes.dss": _QUIRKY_SHAPES,
    "Loads/Loads.dss": _QUIRKY_LOADS,
    "Loads/home.CSV": "\n".join(f"{0.4 + 0.5 * (h in range(17, 22)):.2f}" for h in range(24)),
}
QUIRKY_CUSTOMER_BUSES = ("c1a", "c1b", "c2a", "c2b", "c3a", "c3b")


def quirky_feeder(folder: Path) -> Path:
    """Write the quirky feeder's folder; returns its master (``Master.DSS``)."""
    import struct

    for name, text in QUIRKY_FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="ascii", newline="") as f:
            f.write(text.replace("\n", CRLF))
    shape = [0.5 + 0.5 * (8 <= h < 18) for h in range(24)]
    (folder / "Loads" / "Commercial.dbl").write_bytes(struct.pack("<24d", *shape))
    return folder / "Master.DSS"


def run_script_feeder(folder: Path) -> Path:
    """The utility feeder with a run script beside its master (which only
    compiles): the script compiles it, solves, plots, reports, exports and
    starts a yearly simulation. Returns the run script."""
    master = utility_feeder(folder)
    master.write_text(master.read_text().replace("Solve\n", ""))
    script = folder / "RunFeeder.dss"
    script.write_text(
        "! run script\r\n"
        "Compile [Master.dss]\r\n"
        "solve\r\n"
        "New monitor.head element=Line.L01 terminal=1 mode=1\r\n"
        "plot circuit Power Max=2000 dots=n labels=n\r\n"
        "show voltages ln nodes\r\n"
        "Export Capacity\r\n"
        "set mode=yearly number=8760\r\n"
        "solve\r\n"
    )
    return script
