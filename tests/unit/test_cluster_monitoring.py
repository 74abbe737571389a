"""Dask's self-monitoring is slowed for the server's own LocalCluster, unless the operator set it."""

from __future__ import annotations

import copy
import pathlib

import distributed
import yaml

from server import cluster


def _fresh() -> tuple[dict, list]:
    """Dask's own defaults, as a config and a defaults list (this process's global
    ones may already hold the server's, from a server started earlier)."""
    own = yaml.safe_load(
        (pathlib.Path(distributed.__file__).parent / "distributed.yaml").read_text()
    )
    return copy.deepcopy(own), [copy.deepcopy(own)]


def test_dask_defaults_give_way_to_slower_monitoring() -> None:
    config, defaults = _fresh()
    config["distributed"]["worker"]["memory"]["monitor-interval"] = "100ms"  # Dask's default
    cluster.quiet_monitoring(config, defaults)
    assert config["distributed"]["worker"]["memory"]["monitor-interval"] == "250ms"
    assert config["distributed"]["admin"]["system-monitor"]["interval"] == "2s"
    assert config["distributed"]["admin"]["system-monitor"]["disk"] is False
    assert config["distributed"]["admin"]["tick"]["interval"] == "100ms"


def test_an_operators_own_setting_is_kept() -> None:
    config, defaults = _fresh()
    config["distributed"]["admin"]["system-monitor"]["interval"] = "750ms"  # not Dask's default
    cluster.quiet_monitoring(config, defaults)
    assert config["distributed"]["admin"]["system-monitor"]["interval"] == "750ms"
    assert config["distributed"]["worker"]["memory"]["monitor-interval"] == "250ms"
