"""``client_sdk``'s public surface: pinned names, docstrings, and no protobuf types."""

from __future__ import annotations

import inspect

import client_sdk
from client_sdk import AsyncComputeClient, AsyncJob, ComputeClient, Job
from client_sdk._ops import ClientBase
from client_sdk.job import JobBase

EXPECTED = [
    "SCHEDULERS",
    "AsyncComputeClient",
    "AsyncJob",
    "ClusterInfo",
    "ComputeClient",
    "ComputeError",
    "DeadlineExceeded",
    "DefaultScheduler",
    "DoneAndNotDone",
    "FailedPrecondition",
    "FunctionInfo",
    "FunctionNotFound",
    "InvalidArguments",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "JobUpdate",
    "NotFound",
    "ObjectRef",
    "Parameter",
    "PermissionDenied",
    "Progress",
    "RPCError",
    "RemoteScheduler",
    "ResourceExhausted",
    "ServiceUnavailable",
    "StatusCode",
    "TLSConfig",
    "UntrustedResult",
    "VersionMismatch",
    "Versions",
    "WorkerInfo",
    "as_completed",
    "fire_and_forget",
    "wait",
]


def test_all_is_pinned() -> None:
    assert client_sdk.__all__ == EXPECTED


def test_every_export_exists_and_is_documented() -> None:
    for name in client_sdk.__all__:
        obj = getattr(client_sdk, name)
        if inspect.isclass(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
            assert obj.__module__.startswith("client_sdk"), name


def test_no_protobuf_module_is_exported() -> None:
    public = [getattr(client_sdk, n) for n in dir(client_sdk) if not n.startswith("_")]
    assert not [obj for obj in public if "_pb2" in getattr(obj, "__name__", "")]


def _public_methods(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def test_every_public_method_is_documented_and_none_is_a_raw_operation() -> None:
    # The shared operations are generators; each client must wrap every one.
    for cls, base in (
        (ComputeClient, ClientBase),
        (AsyncComputeClient, ClientBase),
        (Job, JobBase),
        (AsyncJob, JobBase),
    ):
        for name, method in _public_methods(cls).items():
            assert inspect.getdoc(method), f"{cls.__name__}.{name} has no docstring"
            assert method is not base.__dict__.get(name), f"{cls.__name__}.{name} is not wrapped"


def test_both_clients_offer_the_same_methods() -> None:
    sync = set(_public_methods(ComputeClient))
    asynchronous = set(_public_methods(AsyncComputeClient))
    # Dask's compute is synchronous: only the blocking client can be its default.
    assert sync - asynchronous == {"as_default"}
    assert asynchronous - sync == set()


def test_async_methods_are_coroutines_with_the_same_signatures() -> None:
    for name, method in _public_methods(ComputeClient).items():
        if name in ("as_default", "list_jobs", "watch"):
            continue
        other = getattr(AsyncComputeClient, name)
        if name in ("close",):
            assert inspect.iscoroutinefunction(other)
            continue
        assert inspect.iscoroutinefunction(other), name
        params = inspect.signature(method).parameters
        other_params = inspect.signature(other).parameters
        assert [(p.name, p.kind, p.default) for p in params.values()] == [
            (p.name, p.kind, p.default) for p in other_params.values()
        ], name
    assert inspect.isasyncgenfunction(AsyncComputeClient.list_jobs)
    assert inspect.isasyncgenfunction(AsyncComputeClient.watch)
    assert list(inspect.signature(ComputeClient.watch).parameters.values()) == list(
        inspect.signature(AsyncComputeClient.watch).parameters.values()
    )


def test_wrapped_methods_show_what_they_return() -> None:
    signature = inspect.signature(ComputeClient.run)
    assert list(signature.parameters) == [
        "self",
        "function",
        "args",
        "scheduler",
        "timeout",
        "job_name",
        "kwargs",
    ]
    assert signature.return_annotation == "Any"
    assert inspect.signature(ComputeClient.info).return_annotation == "ClusterInfo"


def test_importing_the_sdk_imports_neither_dask_nor_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, client_sdk, client_sdk.cli; "
        "print(sorted(m for m in ('dask', 'distributed', 'server') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
