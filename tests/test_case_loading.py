"""Reading MATPOWER cases: what is kept, what is refused, and how errors read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.iso.case import CaseError, load_case, pwl_cost
from dsosim.federates.iso.dcopf import DcOpf

Row = Sequence[float | str]

# Two buses joined by two parallel branches; G1 at bus 1 serves 100 MW at bus 2.
BUS = [
    [1, 3, 0, 0, 0, 0, 1, 1, 0, 230, 1, 1.1, 0.9],
    [2, 1, 100, 0, 0, 0, 1, 1, 0, 230, 1, 1.1, 0.9],
]
GEN = [[1, 0, 0, 100, -100, 1, 100, 1, 300, 0]]
BRANCH = [
    [1, 2, 0, 0.1, 0, 0, 0, 0, 0, 0, 1, -360, 360],
    [1, 2, 0, 0.1, 0, 0, 0, 0, 0, 0, 1, -360, 360],
]
GENCOST = [[2, 0, 0, 3, 0.01, 20, 0]]


def write_case(
    path: Path,
    *,
    bus: list[list[float]] = BUS,
    gen: list[list[float]] = GEN,
    branch: list[list[float]] = BRANCH,
    gencost: list[list[float]] | None = GENCOST,
    base_mva: str = "100",
) -> str:
    """Write a MATPOWER case file (rows padded with zeros, as MATLAB needs)."""

    def table(name: str, rows: Sequence[Row]) -> str:
        width = max(len(r) for r in rows)
        body = "\n".join(
            "\t" + "\t".join(str(v) for v in [*r, *[0] * (width - len(r))]) + ";" for r in rows
        )
        return f"mpc.{name} = [\n{body}\n];\n"

    text = f"function mpc = {path.stem}\nmpc.version = '2';\nmpc.baseMVA = {base_mva};\n"
    text += table("bus", bus) + table("gen", gen) + table("branch", branch)
    if gencost is not None:
        text += table("gencost", gencost)
    path.write_text(text)
    return str(path)


def modified(rows: list[list[float]], row: int, column: int, value: float) -> list[list[float]]:
    out = [list(r) for r in rows]
    out[row][column] = value
    return out


def test_library_case_by_name() -> None:
    case = load_case("case9")
    assert case.name == "case9"
    assert case.bus_ids.tolist() == list(range(1, 10))
    assert case.bus_pd_mw.sum() == pytest.approx(315.0)
    assert case.gen_bus.tolist() == [1, 2, 3]
    # case9 gen 1: 0.11 P^2 + 5 P + 150
    assert case.gen_cost_poly[0].tolist() == pytest.approx([0.11, 5.0, 150.0])
    assert case.generator_cost(np.array([100.0, 0.0, 0.0])) == pytest.approx(
        1100 + 500 + 150 + 600 + 335
    )
    with pytest.raises(ValueError):
        case.bus_pd_mw[0] = 1.0  # arrays are read-only


def test_user_file_round_trip(tmp_path: Path) -> None:
    case = load_case(write_case(tmp_path / "two_bus.m"))
    assert case.name == "two_bus"
    assert case.n_bus == 2 and case.n_branch == 2
    assert np.isinf(case.branch_rate_mw).all()  # RATE_A = 0 means unlimited
    result = DcOpf(case).clear(case.bus_pd_mw)
    assert result.status == "optimal"
    # MC = 20 + 2 * 0.01 * 100 = 22 $/MWh
    np.testing.assert_allclose(result.lmp, 22.0, atol=1e-6)
    np.testing.assert_allclose(result.branch_flow_mw, [50.0, 50.0], atol=1e-6)


def test_missing_file_is_a_case_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "grid.m"
    with pytest.raises(CaseError, match="file not found"):
        load_case(str(path))


def test_unknown_library_name_suggests_names() -> None:
    with pytest.raises(CaseError, match=r"case case_no_such_grid: no such file.*case118"):
        load_case("case_no_such_grid")


def test_cubic_cost_names_table_field_and_row(tmp_path: Path) -> None:
    gen = [GEN[0], [2, 0, 0, 100, -100, 1, 100, 1, 50, 0]]
    gencost = [GENCOST[0] + [0], [2, 0, 0, 4, 0.001, 0.01, 20, 0]]
    path = write_case(tmp_path / "cubic.m", gen=gen, gencost=gencost)
    with pytest.raises(CaseError, match=r"case cubic: gencost row 2: NCOST 4 .*order 3"):
        load_case(path)


def test_cubic_with_zero_leading_coefficient_is_quadratic(tmp_path: Path) -> None:
    path = write_case(tmp_path / "padded.m", gencost=[[2, 0, 0, 4, 0, 0.01, 20, 0]])
    assert load_case(path).gen_cost_poly[0].tolist() == pytest.approx([0.01, 20.0, 0.0])


def test_concave_quadratic_is_refused(tmp_path: Path) -> None:
    path = write_case(tmp_path / "concave.m", gencost=[[2, 0, 0, 3, -0.01, 20, 0]])
    with pytest.raises(CaseError, match="gencost row 1: quadratic coefficient -0.01 < 0"):
        load_case(path)


def test_zero_reactance_names_branch_row(tmp_path: Path) -> None:
    path = write_case(tmp_path / "short.m", branch=modified(BRANCH, 1, 3, 0.0))
    with pytest.raises(CaseError, match="case short: branch row 2: BR_X is 0"):
        load_case(path)


def test_generator_on_unknown_bus(tmp_path: Path) -> None:
    path = write_case(tmp_path / "stray.m", gen=modified(GEN, 0, 0, 7))
    with pytest.raises(CaseError, match="gen row 1: GEN_BUS 7 is not a bus"):
        load_case(path)


def test_missing_gencost_table(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="table gencost is missing"):
        load_case(write_case(tmp_path / "nocost.m", gencost=None))


def test_non_numeric_cell_is_located(tmp_path: Path) -> None:
    bus = [list(BUS[0]), [*BUS[1][:9], "135/sqrt(3)", *BUS[1][10:]]]
    with pytest.raises(CaseError, match=r"bus row 2 column 10: '135/sqrt\(3\)' is not a number"):
        load_case(write_case(tmp_path / "expr.m", bus=bus))


def test_base_mva_may_be_a_quotient(tmp_path: Path) -> None:
    assert load_case(write_case(tmp_path / "third.m", base_mva="50/3")).base_mva == pytest.approx(
        50 / 3
    )


def test_out_of_service_rows_are_ignored(tmp_path: Path) -> None:
    # A second, cheaper generator that is out of service (and whose cost row
    # would be refused if it were in service), and one branch out of service.
    gen = [GEN[0], [2, 0, 0, 100, -100, 1, 100, 0, 300, 0]]
    gencost = [GENCOST[0] + [0], [2, 0, 0, 4, 1.0, 0, 1, 0]]
    branch = modified(BRANCH, 1, 10, 0)
    case = load_case(write_case(tmp_path / "outage.m", gen=gen, branch=branch, gencost=gencost))
    assert case.gen_status.tolist() == [True, False]
    assert case.branch_status.tolist() == [True, False]
    result = DcOpf(case).clear(case.bus_pd_mw)
    np.testing.assert_allclose(result.gen_mw, [100.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(result.branch_flow_mw, [100.0, 0.0], atol=1e-6)
    assert result.total_cost == pytest.approx(0.01 * 100**2 + 20 * 100)


def test_isolated_bus_takes_its_branches_and_generators_out(tmp_path: Path) -> None:
    bus = [*BUS, [3, 4, 0, 0, 0, 0, 1, 1, 0, 230, 1, 1.1, 0.9]]
    branch = [*BRANCH, [2, 3, 0, 0.1, 0, 0, 0, 0, 0, 0, 1, -360, 360]]
    gen = [GEN[0], [3, 0, 0, 100, -100, 1, 100, 1, 300, 0]]
    gencost = [GENCOST[0], [2, 0, 0, 3, 0, 1, 0]]
    case = load_case(
        write_case(tmp_path / "iso4.m", bus=bus, branch=branch, gen=gen, gencost=gencost)
    )
    assert case.branch_status.tolist() == [True, True, False]
    assert case.gen_status.tolist() == [True, False]


def test_tap_scales_the_reactance(tmp_path: Path) -> None:
    # Branch 2 is a transformer with tap 0.5: DC susceptance 1/(0.1*0.5) = 20
    # against 10 for the plain line, so it carries 2/3 of the 100 MW.
    case = load_case(write_case(tmp_path / "tap.m", branch=modified(BRANCH, 1, 8, 0.5)))
    assert case.branch_tap.tolist() == [1.0, 0.5]
    result = DcOpf(case).clear(case.bus_pd_mw)
    np.testing.assert_allclose(result.branch_flow_mw, [100 / 3, 200 / 3], atol=1e-6)


def test_phase_shifter_drives_a_loop_flow(tmp_path: Path) -> None:
    # No load: a 2 degree shift on branch 2 (b = 10 pu, both branches) makes a
    # loop flow f2 = -b1*b2/(b1+b2) * shift = -5 pu/rad * 0.0349 rad * 100 MVA.
    bus = modified(BUS, 1, 2, 0.0)
    case = load_case(write_case(tmp_path / "shift.m", bus=bus, branch=modified(BRANCH, 1, 9, 2.0)))
    result = DcOpf(case).clear(case.bus_pd_mw)
    loop = 5.0 * np.deg2rad(2.0) * 100.0
    np.testing.assert_allclose(result.branch_flow_mw, [loop, -loop], atol=1e-6)
    np.testing.assert_allclose(result.gen_mw, [0.0], atol=1e-6)


def test_piecewise_linear_costs(tmp_path: Path) -> None:
    # Convex PWL through (0, 0), (50, 1000), (200, 5500): 20 $/MWh up to 50 MW,
    # 30 $/MWh above. 100 MW of load => the second segment is marginal.
    gencost = [[1, 0, 0, 3, 0, 0, 50, 1000, 200, 5500]]
    case = load_case(write_case(tmp_path / "pwl.m", gencost=gencost))
    assert case.gen_cost_model.tolist() == [1]
    assert pwl_cost(case.gen_cost_pwl[0], 100.0) == pytest.approx(2500.0)
    result = DcOpf(case).clear(case.bus_pd_mw)
    np.testing.assert_allclose(result.lmp, 30.0, atol=1e-6)
    assert result.total_cost == pytest.approx(2500.0)


def test_non_convex_piecewise_linear_cost_is_refused(tmp_path: Path) -> None:
    gencost = [[1, 0, 0, 3, 0, 0, 50, 1500, 200, 5500]]  # 30 then 26.7 $/MWh
    with pytest.raises(CaseError, match="gencost row 1: piecewise-linear cost is not convex"):
        load_case(write_case(tmp_path / "concave_pwl.m", gencost=gencost))


def test_mixed_cost_models_in_one_table(tmp_path: Path) -> None:
    gen = [GEN[0], [2, 0, 0, 100, -100, 1, 100, 1, 300, 0]]
    gencost = [[2, 0, 0, 3, 0.01, 20, 0], [1, 0, 0, 2, 0, 0, 100, 2500]]
    case = load_case(write_case(tmp_path / "mixed.m", gen=gen, gencost=gencost))
    assert case.gen_cost_model.tolist() == [2, 1]
    assert case.gen_cost_pwl[1].tolist() == [[0.0, 0.0], [100.0, 2500.0]]


def test_angle_difference_limits_are_enforced(tmp_path: Path) -> None:
    # ANGMIN/ANGMAX of +-0.5 degree on both branches: each carries at most
    # b * 0.5 deg = 10 pu * 0.008727 rad * 100 MVA = 8.73 MW, so of the 100 MW
    # load 17.45 MW are served and the rest is shed.
    branch = [[*row[:11], -0.5, 0.5] for row in BRANCH]
    case = load_case(write_case(tmp_path / "angles.m", branch=branch))
    assert case.branch_angmax_deg.tolist() == [0.5, 0.5]
    result = DcOpf(case).clear(case.bus_pd_mw)
    limit = 10.0 * np.deg2rad(0.5) * 100.0
    assert result.status == "load_shed"
    np.testing.assert_allclose(result.branch_flow_mw, [limit, limit], atol=1e-6)
    assert result.shed_mw.sum() == pytest.approx(100.0 - 2 * limit)


def test_zero_angle_limits_mean_unlimited(tmp_path: Path) -> None:
    branch = [[*row[:11], 0, 0] for row in BRANCH]
    case = load_case(write_case(tmp_path / "no_angles.m", branch=branch))
    assert np.isinf(case.branch_angmin_deg).all() and np.isinf(case.branch_angmax_deg).all()
