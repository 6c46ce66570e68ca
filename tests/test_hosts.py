"""One federation over several hosts: ``dsosim build --hosts``.

The two-host test runs the quickstart with the broker, ISO and recorder on
"host a" (127.0.0.2) and the utility and aggregators on "host b"
(127.0.0.3): two ``helics run`` processes, one per runner file, as on two
machines. Its results must be byte-identical to the single-host run's."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dsosim.runner.build.federation import build, free_port
from dsosim.runner.build.hosts import HostsError, assign, load_hosts
from dsosim.runner.launch import launch
from tests.federation import SCENARIOS, run_scenario

TWO_HOSTS = """
[broker]
host = "a"
port = {port}

[[hosts]]
name = "a"
address = "127.0.0.2"
federates = ["iso", "recorder"]

[[hosts]]
name = "b"
address = "127.0.0.3"
federates = ["*"]
"""


def _parts(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("part-*.parquet"))
    }


def _hosts_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_two_hosts_on_loopback_give_the_single_host_results(tmp_path: Path) -> None:
    single, outcome = run_scenario(SCENARIOS / "quickstart.toml", tmp_path / "one", hours=1)
    assert outcome.ok, outcome.failure

    hosts = _hosts_file(tmp_path, TWO_HOSTS.format(port=free_port("127.0.0.2")))
    built = build(SCENARIOS / "quickstart.toml", tmp_path / "two", hours=1, hosts=hosts)
    runners = {h: tmp_path / "two" / h / "runner.json" for h in ("a", "b")}
    names = {
        h: [e["name"] for e in json.loads(r.read_text())["federates"]] for h, r in runners.items()
    }
    assert names["a"] == ["dsosim-broker", "iso", "recorder"]
    assert names["b"] == ["lda5", "agg_solar", "agg_storage"]
    config = json.loads((tmp_path / "two" / "b" / "federation.json").read_text())["helics"]
    assert config["broker_address"].startswith("tcp://127.0.0.2:")
    assert config["interfaces"]["lda5"] == "127.0.0.3"
    assert config["interfaces"]["iso"] == "127.0.0.2"

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(launch, runners["a"], built.results_dir, timeout_s=240)
        b = pool.submit(launch, runners["b"], tmp_path / "two" / "b" / "results", timeout_s=240)
        on_a, on_b = a.result(), b.result()
    assert on_a.ok, on_a.failure
    assert on_b.returncode == 0, on_b.failure
    assert built.results_dir == tmp_path / "two" / "a" / "results"
    assert not (tmp_path / "two" / "b" / "results").exists()  # results land on one host
    federation = _parts(single.results_dir)
    assert len(federation) >= 10
    assert _parts(built.results_dir) == federation


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (TWO_HOSTS.format(port=23500).replace('"iso", ', '"isoo", '), "'isoo' matches no"),
        (TWO_HOSTS.format(port=23500).replace('["*"]', '["agg_*"]'), "on no host: \\['lda5'\\]"),
        (TWO_HOSTS.format(port=23500).replace("127.0.0.3", "hostb"), "not an IPv4"),
        (TWO_HOSTS.format(port=23500).replace('host = "a"', 'host = "c"'), "broker.host 'c'"),
        (TWO_HOSTS.format(port=23500).replace('name = "b"', 'name = "a"'), "names repeat"),
        ("[broker]\nhost = 1", "broker.host"),
    ],
)
def test_bad_hosts_files_are_named(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(HostsError, match=error):
        plan = load_hosts(_hosts_file(tmp_path, text))
        assign(plan, ["iso", "lda5", "agg_solar", "agg_storage", "recorder"])


def test_a_missing_hosts_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(HostsError, match="cannot read the hosts file"):
        load_hosts(tmp_path / "nope.toml")
