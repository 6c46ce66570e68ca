"""Which federates share a process (``dsosim build --processes N``).

The ISO, the utilities, the independent operators and the aggregators are
spread over ``N`` processes (``federates.pack``), an LDA's federates (its
utility, its independent operator, its aggregators) always together, LDAs
dealt out in turn and the ISO with the first: the LDAs' work in a market
phase runs side by side in different processes, as it does when every
federate has its own. The recorder, the broker and a HIL gateway keep a
process of their own. Every federate stays a HELICS federate of its own.
"""

from __future__ import annotations

from dsosim.federates.common.config import FederationConfig, independent_name

PACK_PREFIX = "federates."
"""Process names are ``federates.1`` ...: no federate name has a dot."""


def groups(config: FederationConfig, processes: int) -> list[list[str]]:
    """The federates of each packed process, in a fixed order; empty processes dropped."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    out: list[list[str]] = [[] for _ in range(processes)]
    out[0].append(config.iso.name)
    independent = set(config.independent_names())
    for i, dso in enumerate(config.dsos):
        group = out[i % processes]
        group.append(dso.name)
        if independent_name(dso.name) in independent:
            group.append(independent_name(dso.name))
        group.extend(a.name for a in config.aggregators if a.dso == dso.name)
    placed = {n for g in out for n in g}
    # aggregators of no LDA in this federation (none today) still get a process
    out[0].extend(a.name for a in config.aggregators if a.name not in placed)
    return [g for g in out if g]


def process_name(index: int) -> str:
    return f"{PACK_PREFIX}{index + 1}"
