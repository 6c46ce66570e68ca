"""The six DSO organisational models and the baseline, read from ``configs/models``.

Each model is a small TOML file saying who holds the DMO and DERM roles and
which market runs inside the LDA; the federation follows from that alone.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from dsosim.federates.common.config import OrgModel

MODELS_DIR = Path(__file__).resolve().parents[2] / "configs" / "models"
MODEL_NAMES = ("baseline", "1", "2", "3", "4", "5", "6")
ALIASES = {"layered": "3"}


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model``: override a scenario's organisational model on the command line."""
    parser.add_argument(
        "--model",
        default=None,
        choices=(*MODEL_NAMES, *ALIASES),
        help="override the scenario's organisational model",
    )


def canonical_model(name: str) -> str:
    """A model's name as ``MODEL_NAMES`` spells it (``layered`` is ``3``)."""
    return ALIASES.get(name, name)


def load_model(name: str) -> OrgModel:
    """The organisational model ``name`` (baseline, 1-6, or layered = 3)."""
    key = ALIASES.get(str(name), str(name))
    path = MODELS_DIR / f"{key}.toml"
    if key not in MODEL_NAMES or not path.is_file():
        raise ValueError(
            f"model {name!r}: unknown; choose one of {', '.join(MODEL_NAMES)} (or 'layered')"
        )
    return OrgModel(name=key, **tomllib.loads(path.read_text()))
