"""Many OpenDSS loads set or read in one call each.

The classic API (``Loads.Idx``, ``Loads.kW``, ``CktElement.TotalPowers``)
costs a call per load and property, each through the Python bindings: at the
study's feeders (a few hundred loads, fifty DER elements) setting every load
and reading every DER's power was more time than a power flow. DSS C-API,
the engine under OpenDSSDirect.py and DSS-Python, has a batch interface for
this (``Batch_*``, the one AltDSS-Python builds on; DSS-Python 0.15 does not
wrap it, so it is called here through the bindings' own cffi library): one
call sets a property of every element of a batch from an array, one reads
every element's total power.

Set with ``AvoidFullRecalc`` (what the classic ``Loads`` API does: a new kW
or kvar does not rebuild the load's admittance), a batch gives the same
element state, and therefore the same power flow to the bit, as the classic
calls one load at a time (``tests/test_batch.py`` holds the two equal).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Property = Literal["kW", "kvar"]
_PROPERTIES = ("kW", "kvar")

# dss_python_backend.enums.SetterFlags.AvoidFullRecalc: as the classic Loads API
_AVOID_FULL_RECALC = 2


class LoadBatch:
    """Loads of one engine, by their index (from 1, ``Loads.Idx`` order)."""

    def __init__(self, dss: Any, indices: Sequence[int]) -> None:
        """``dss``: an OpenDSSDirect.py context (``Feeder.engine``)."""
        util = dss.to_dss_python()._api_util
        self._ffi, self._lib, self._checked = util.ffi, util.lib_unpatched, util.lib
        self._size = len(indices)
        self._batch: Any = self._ffi.NULL
        if self._size:
            out, count = self._ffi.new("void***"), self._ffi.new("int32_t[4]")
            wanted = self._ffi.new("int32_t[]", [int(i) for i in indices])
            self._lib.Batch_CreateByIndexS(util.ctx, out, count, b"Load", wanted, self._size)
            self._check()
            if count[0] != self._size:
                raise ValueError(f"OpenDSS batch of {self._size} loads has {count[0]}")
            self._batch = out[0]
            weakref.finalize(self, self._lib.Batch_Dispose, self._batch)

    def __len__(self) -> int:
        return self._size

    def _check(self) -> None:
        number = self._checked.Error_Get_Number()
        if number:
            text = self._ffi.string(self._checked.Error_Get_Description()).decode()
            raise RuntimeError(f"OpenDSS #{number}: {text}")

    def set(self, prop: Property, values: np.ndarray) -> None:
        """Set the property ``prop`` (``"kW"``, ``"kvar"``) of every load, in
        order, as the classic API's setter does."""
        if prop not in _PROPERTIES:  # the engine ignores a name it does not know
            raise ValueError(f"a batch sets {' or '.join(_PROPERTIES)} of loads, not {prop!r}")
        data = np.ascontiguousarray(values, dtype=np.float64)
        if data.shape != (self._size,):
            raise ValueError(f"{data.shape} values for a batch of {self._size} loads")
        if not self._size:
            return
        self._lib.Batch_SetFloat64ArrayS(
            self._batch,
            self._size,
            prop.encode(),
            self._ffi.cast("double *", data.ctypes.data),
            _AVOID_FULL_RECALC,
        )
        self._check()

    def total_kw(self) -> list[float]:
        """Every load's total active power drawn at the last solution, kW
        (``CktElement.TotalPowers()[0]``, the same numbers)."""
        if not self._size:
            return []
        out, count = self._ffi.new("double**"), self._ffi.new("int32_t[4]")
        self._lib.Alt_CEBatch_Get_TotalPowers(out, count, self._batch, self._size)
        try:
            self._check()
            values = self._ffi.unpack(out[0], count[0])
        finally:
            self._lib.DSS_Dispose_PDouble(out)
        return values[0::2]
