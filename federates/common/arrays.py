"""Array type aliases shared by the roles (numpy's typing, one place)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating[Any]]
"""Real-valued arrays (float64 in practice; typed loosely so that numpy's
arithmetic results need no casts)."""
IntArray = NDArray[np.intp]
"""Index arrays."""
