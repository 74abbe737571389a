import dataclasses

import pytest

from server.config import Settings, SettingsError


def test_defaults_bind_loopback_and_size_to_machine():
    s = Settings()
    assert s.host == "127.0.0.1"
    assert s.port == 50051
    assert s.n_workers is None and s.threads_per_worker is None
    assert s.processes is True
    assert s.default_scheduler == "distributed"


def test_every_field_has_an_env_var():
    names = {Settings.env_var(f.name) for f in dataclasses.fields(Settings)}
    assert "DASK_COMPUTE_N_WORKERS" in names
    assert all(n.startswith("DASK_COMPUTE_") and n.isupper() for n in names)


def test_from_env_parses_types():
    env = {
        "DASK_COMPUTE_HOST": "0.0.0.0",
        "DASK_COMPUTE_PORT": "6000",
        "DASK_COMPUTE_N_WORKERS": "3",
        "DASK_COMPUTE_PROCESSES": "false",
        "DASK_COMPUTE_FUNCTIONS": "a.b, c",
        "DASK_COMPUTE_RESULT_TTL": "1.5",
        "DASK_COMPUTE_THREADS_PER_WORKER": "auto",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env)
    assert (s.host, s.port, s.n_workers, s.processes) == ("0.0.0.0", 6000, 3, False)
    assert s.functions == ("a.b", "c")
    assert s.result_ttl == 1.5
    assert s.threads_per_worker is None


def test_flags_win_over_env_and_none_means_not_given():
    env = {"DASK_COMPUTE_PORT": "6000", "DASK_COMPUTE_N_WORKERS": "3"}
    s = Settings.from_env(env, port=7000, n_workers=None)
    assert s.port == 7000
    assert s.n_workers == 3


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DASK_COMPUTE_PORT": "http"}, "DASK_COMPUTE_PORT"),
        ({"DASK_COMPUTE_PORT": "70000"}, "port must be"),
        ({"DASK_COMPUTE_PROCESSES": "maybe"}, "boolean"),
        ({"DASK_COMPUTE_DEFAULT_SCHEDULER": "gpu"}, "default_scheduler"),
        ({"DASK_COMPUTE_N_WORKERS": "-1"}, "n_workers"),
        (
            {"DASK_COMPUTE_SCHEDULER_ADDRESS": "tcp://x:8786", "DASK_COMPUTE_N_WORKERS": "2"},
            "LocalCluster",
        ),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1


def test_kubernetes_service_link_is_not_taken_for_a_port():
    s = Settings.from_env({"DASK_COMPUTE_PORT": "tcp://10.96.0.12:50051"})
    assert s.port == 50051  # the default, not a parse error


def test_local_pools_default_to_the_cpus_this_process_may_use():
    from dask.system import CPU_COUNT

    s = Settings()
    assert s.local_threads_count == CPU_COUNT == s.local_processes_count
    assert Settings(local_threads=3).local_threads_count == 3
