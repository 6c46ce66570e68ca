"""The federation config: what the runner generates and every federate reads.

One JSON file per run holds the whole resolved federation (paths absolute or
relative to the file, devices placed, ports chosen); each federate picks its
own section by name. Validated with pydantic, unknown keys are errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HelicsSettings(Strict):
    core_type: Literal["zmq", "tcp", "tcp_ss", "ipc"] = "zmq"
    broker_address: str = Field(description="e.g. tcp://127.0.0.1:23500")
    broker_port: int = Field(ge=1024, le=65535)
    broker_key: str = ""
    connect_timeout_s: PositiveInt = 30
    max_cosim_duration_s: PositiveInt = Field(
        3600, description="broker wall-clock limit: a hung federation ends after this"
    )


class TimeSettings(Strict):
    interval_s: float = Field(gt=7, description="market interval length, seconds")
    n_intervals: PositiveInt


class IsoInterface(Strict):
    dso: str
    td_bus: int


class IsoConfig(Strict):
    name: str
    case: str
    load_scale: PositiveFloat = 1.0
    line_limit_mw: PositiveFloat | None = None
    load_profile: str = "system"
    interfaces: tuple[IsoInterface, ...]


class LimitsConfig(Strict):
    vmin_pu: PositiveFloat = 0.95
    vmax_pu: PositiveFloat = 1.05
    max_loading: PositiveFloat = 1.0
    operating_margin_pu: float = Field(0.005, ge=0, lt=0.05)

    def planning(self) -> tuple[float, float, float]:
        """(vmin, vmax, max_loading) a market operator plans within: the
        voltage band narrowed by the operating margin."""
        return self.vmin_pu + self.operating_margin_pu, self.vmax_pu - self.operating_margin_pu, self.max_loading


class DsoConfig(Strict):
    name: str
    iso: str
    feeder: str
    td_bus: int
    scale: PositiveFloat
    load_profile: str = "residential"
    load_scale: PositiveFloat = 1.0
    load_forecast_error: float = Field(0.02, ge=0, lt=0.5)
    voltage_basis: Literal["ln", "ll"] = "ln"
    limits: LimitsConfig = LimitsConfig()
    aggregators: tuple[str, ...]


class AggregatorConfig(Strict):
    name: str
    dso: str
    buses: tuple[str, ...] = Field(description="feeder buses where its fleet sits (its locations)")
    fleet: dict[str, Any]
    response_error: float = Field(0.0, ge=0, lt=1)
    utility_owned: bool = Field(False, description="owned by the utility (DMO rule applies)")


class OrgModel(Strict):
    """A DSO organisational model: which role holder runs what (see
    ``configs/models/``). Everything model-specific in the federation follows
    from these fields through :mod:`dsosim.federates.common.routes`."""

    name: str = Field(description="baseline, 1 ... 6")
    title: str
    vision: Literal["none", "grand_central", "layered"]
    dmo: Literal["none", "iso", "utility", "independent"]
    derm: Literal["none", "iso", "utility", "independent", "automatic"]
    local_market: Literal["none", "nodal", "p2p"]
    utility_ders_may_bid: bool
    tariff: float = Field(25.0, description="flat retail tariff passive DERs see, $/MWh")


class RecorderConfig(Strict):
    name: str
    results_dir: str
    flush_every: PositiveInt = 12


class FederationConfig(Strict):
    name: str
    seed: int
    model: OrgModel
    helics: HelicsSettings
    time: TimeSettings
    iso: IsoConfig
    dsos: tuple[DsoConfig, ...]
    aggregators: tuple[AggregatorConfig, ...]
    recorder: RecorderConfig

    def federate_names(self) -> list[str]:
        return [self.iso.name, *(d.name for d in self.dsos), *self.independent_names(),
                *(a.name for a in self.aggregators), self.recorder.name]

    def independent_names(self) -> list[str]:
        """Independent market operator federates (one per LDA) if the model has them."""
        if "independent" not in (self.model.dmo, self.model.derm):
            return []
        return [independent_name(d.name) for d in self.dsos]

    def dso(self, name: str) -> DsoConfig:
        return next(d for d in self.dsos if d.name == name)

    def aggregator(self, name: str) -> AggregatorConfig:
        return next(a for a in self.aggregators if a.name == name)


def independent_name(lda: str) -> str:
    """Federate name of the independent operator of an LDA."""
    return f"{lda}_imo"


def load_federation(path: str | Path) -> tuple[FederationConfig, Path]:
    """Read a federation config; returns it and the folder relative paths
    inside it are resolved against."""
    path = Path(path).resolve()
    return FederationConfig.model_validate(json.loads(path.read_text())), path.parent
