"""Which client and server versions may exchange pickled work (no server)."""

from __future__ import annotations

import platform

import pytest

from client_sdk import VersionMismatch, Versions, _versions

SERVER = Versions(python="3.11.7", dask="2026.8.0", distributed="2026.8.0", cloudpickle="3.1.3")


def _local(**changes: str) -> Versions:
    fields = {
        "python": "3.11.7",
        "dask": "2026.8.0",
        "distributed": "2026.8.0",
        "cloudpickle": "3.1.3",
    }
    return Versions(**{**fields, **changes})


def test_identical_versions_are_compatible() -> None:
    assert _versions.incompatibilities(_local(), SERVER) == []
    _versions.check(_local(), SERVER)


def test_python_patch_and_cloudpickle_minor_differences_are_fine() -> None:
    assert _versions.incompatibilities(_local(python="3.11.2", cloudpickle="3.0.0"), SERVER) == []


@pytest.mark.parametrize("strict", [True, False])
def test_python_minor_and_cloudpickle_major_differences_are_always_refused(strict: bool) -> None:
    problems = _versions.incompatibilities(
        _local(python="3.12.1", cloudpickle="2.2.1"), SERVER, strict
    )
    assert problems == [
        "Python 3.12.1 here, 3.11.7 on the server",
        "cloudpickle 2.2.1 here, 3.1.3 on the server",
    ]


def test_dask_and_distributed_must_match_unless_the_check_is_off() -> None:
    local = _local(dask="2026.7.0", distributed="2026.7.1")
    assert _versions.incompatibilities(local, SERVER) == [
        "dask 2026.7.0 here, 2026.8.0 on the server",
        "distributed 2026.7.1 here, 2026.8.0 on the server",
    ]
    assert _versions.incompatibilities(local, SERVER, strict=False) == []


def test_a_package_missing_here_is_not_checked() -> None:
    assert _versions.incompatibilities(_local(distributed=""), SERVER) == []


def test_the_refusal_names_both_versions_and_the_opt_out() -> None:
    with pytest.raises(VersionMismatch) as info:
        _versions.check(_local(dask="2025.1.0"), SERVER)
    message = str(info.value)
    assert "dask 2025.1.0 here, 2026.8.0 on the server" in message
    assert "check_versions=False" in message
    assert info.value.local.dask == "2025.1.0" and info.value.server.dask == "2026.8.0"


def test_no_opt_out_is_offered_when_it_would_not_help() -> None:
    with pytest.raises(VersionMismatch) as info:
        _versions.check(_local(python="3.10.4", dask="2025.1.0"), SERVER)
    assert "Python 3.10.4 here, 3.11.7 on the server" in str(info.value)
    assert "check_versions=False" not in str(info.value)


def test_local_versions_describe_this_process() -> None:
    import cloudpickle
    import dask

    mine = _versions.local_versions()
    assert mine.python == platform.python_version()
    assert (mine.dask, mine.cloudpickle) == (dask.__version__, cloudpickle.__version__)
