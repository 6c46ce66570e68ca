"""Statuses and tolerances shared by the DC-OPF's set-up, solver and result."""

from __future__ import annotations

import highspy

STATUS_OPTIMAL = "optimal"
STATUS_LOAD_SHED = "load_shed"
STATUS_OVER_SUPPLY = "over_supply"
STATUS_APPROXIMATE = "approximate"
STATUS_FAILED = "failed"

SLACK_TOL_MW = 1e-6
"""Shed or spill above this many MW changes the status."""

QP_REGULARIZATION = 1e-10
"""Hessian regularisation of HiGHS's QP solver (see DcOpf._build_highs)."""

QP_FEASIBILITY_TOL = 1e-6
"""Primal and dual feasibility tolerance of the QP instance (MW, $/MWh)."""

_INF = highspy.kHighsInf
Statuses = list[highspy.HighsBasisStatus]
