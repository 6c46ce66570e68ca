"""The ISO's market clearing: a DC optimal power flow with bid curves, on HiGHS.

Split as PYPOWER splits an OPF: ``clearing`` sets up the model and re-clears
it (:class:`DcOpf`), ``solver`` runs HiGHS, ``result`` holds what a clear
returns; ``status`` the statuses and tolerances they share. See
``clearing``'s docstring for the formulation.
"""

from dsosim.federates.iso.dcopf.clearing import DcOpf
from dsosim.federates.iso.dcopf.result import BusCurve, OpfResult, congestion_rent, lmp_is_unique
from dsosim.federates.iso.dcopf.status import (
    STATUS_APPROXIMATE,
    STATUS_FAILED,
    STATUS_LOAD_SHED,
    STATUS_OPTIMAL,
    STATUS_OVER_SUPPLY,
)

__all__ = [
    "STATUS_APPROXIMATE",
    "STATUS_FAILED",
    "STATUS_LOAD_SHED",
    "STATUS_OPTIMAL",
    "STATUS_OVER_SUPPLY",
    "BusCurve",
    "DcOpf",
    "OpfResult",
    "congestion_rent",
    "lmp_is_unique",
]
