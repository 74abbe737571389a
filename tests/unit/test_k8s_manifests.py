"""The Kubernetes manifests of ``k8s/``: valid, rendered, and saying what they mean.

Every manifest is validated offline against the Kubernetes 1.37 schema
(``kubernetes-validate``, strict: unknown fields fail), every kustomization is
rendered by the real kustomize (``kubectl kustomize``), the YAML passes
``yamllint -s``, and the properties that matter in production are asserted on
the rendered output: gRPC probes, resources, the security context, the
disruption budget, a shutdown grace that fits the termination grace period,
the memory Dask's ``auto`` limit sees, and, in scale-out, replicas that
attach to the scheduler Service. The server's and Dask's own command-line
parsers check every container's arguments and environment, so no manifest
passes a flag or a variable the programs would refuse.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
import sys
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from tests.tools.k8s import (
    K8S,
    LAYOUTS,
    ROOT,
    containers,
    env_of,
    expand,
    find,
    image_env,
    kustomization_dirs,
    load_all,
    pod_spec,
    quantity,
    render,
    selects,
    workloads,
)

K8S_VERSION = "1.37.0"
GRPC_PORT = 50051
IMAGE_UID = 10001  # the Dockerfile's USER
SERVICE = "dask-compute"  # the Deployment and Service of the gRPC service
#: Stand-ins for the Secrets that the README has the operator create.
SECRETS = {
    ("dask-compute-tokens", "tokens"): "alice run,code 0123456789abcdef0123456789abcdef",
    ("dask-compute-postgres", "password"): "0123456789abcdef",
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each layout, rendered once."""
    return {layout: render(layout) for layout in LAYOUTS}


def _validate(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.utils.ValidationError as exc:
        where = "/".join(str(p) for p in getattr(exc, "path", ()))
        what = getattr(exc, "message", str(exc).splitlines()[0])
        pytest.fail(f"{doc['kind']}/{doc['metadata'].get('name')}: {where}: {what}")


def _kustomizations() -> dict[pathlib.Path, dict[str, Any]]:
    return {d: yaml.safe_load((d / "kustomization.yaml").read_text()) for d in kustomization_dirs()}


def _resource_files() -> list[pathlib.Path]:
    """The files that kustomizations list as whole resources (not patches)."""
    files = []
    for directory, kustomization in _kustomizations().items():
        for entry in kustomization.get("resources", []):
            path = (directory / entry).resolve()
            if path.is_file():
                files.append(path)
    return sorted(set(files))


# -- the files themselves ------------------------------------------------------


def test_layouts_exist():
    assert {d.name for d in kustomization_dirs()} >= set(LAYOUTS)


def test_yamllint_strict():
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "-f", "parsable", str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"yamllint -s k8s/:\n{proc.stdout}{proc.stderr}"


def test_every_yaml_file_is_used():
    used = {d / "kustomization.yaml" for d in kustomization_dirs()}
    used.update(_resource_files())
    for directory, kustomization in _kustomizations().items():
        for patch in kustomization.get("patches", []):
            if "path" in patch:
                used.add((directory / patch["path"]).resolve())
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml")}
    assert on_disk - used == set(), "YAML files that no kustomization uses"


@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_resource_file_is_valid(path: pathlib.Path):
    docs = load_all(path)
    assert docs, f"{path} holds no resource"
    for doc in docs:
        _validate(doc)


def test_validation_is_strict():
    """An unknown field fails: the validator does check what the tests rely on."""
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1, "grpcPort": 2}]},
    }
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_no_secret_values_in_the_repository():
    for path in K8S.rglob("*.yaml"):
        for doc in load_all(path):
            assert doc.get("kind") != "Secret", f"{path}: create Secrets in the cluster, not in git"
        text = path.read_text()
        assert "secretGenerator" not in text, path


# -- the rendered layouts ------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_renders_to_valid_resources(rendered, layout):
    docs = rendered[layout]
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicate resources: {keys}"
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_grpc_probes(rendered, layout):
    deployment = find(rendered[layout], "Deployment", SERVICE)
    (container,) = pod_spec(deployment)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == GRPC_PORT
    for probe in ("startupProbe", "livenessProbe"):
        # Native gRPC probes take a number, not a port name.
        assert container[probe]["grpc"] == {"port": GRPC_PORT}, probe
    # Readiness asks about the service, which follows the Dask cluster.
    assert container["readinessProbe"]["grpc"] == {
        "port": GRPC_PORT,
        "service": "compute.v1.ComputeService",
    }
    service = find(rendered[layout], "Service", SERVICE)
    assert selects(
        service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["port"] == GRPC_PORT and grpc["targetPort"] == "grpc"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_resources_requested_and_limited(rendered, layout):
    for workload in workloads(rendered[layout]):
        for c in containers(workload):
            name = f"{workload['metadata']['name']}/{c['name']}"
            res = c.get("resources", {})
            for key in ("cpu", "memory"):
                request, limit = res["requests"][key], res["limits"][key]
                assert quantity(request) <= quantity(limit), f"{name}: {key} request over its limit"
            # Dask (and Python's pools) round a CPU quota up: whole CPUs only.
            cpu = quantity(res["limits"]["cpu"])
            assert cpu == cpu.to_integral_value() and cpu >= 1, f"{name}: cpu limit {cpu}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pods_are_hardened(rendered, layout):
    for workload in workloads(rendered[layout]):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec.get("securityContext", {}).get("runAsNonRoot") is True, name
        assert spec["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert spec.get("automountServiceAccountToken") is False, name
        # DASK_COMPUTE_PORT=tcp://... from a Service named dask-compute would
        # reach the server as its --port, and DASK_* variables reach Dask's config.
        assert spec.get("enableServiceLinks") is False, name
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in containers(workload):
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, (name, c["name"])
            assert sc.get("allowPrivilegeEscalation") is False, (name, c["name"])
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (name, c["name"])
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in empty_dirs, f"{name}/{c['name']}: no emptyDir at /tmp"
        if any(c["image"].startswith("dask-compute") for c in containers(workload)):
            assert spec["securityContext"]["runAsUser"] == IMAGE_UID, name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_disruption_budget(rendered, layout):
    docs = rendered[layout]
    deployment = find(docs, "Deployment", SERVICE)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdbs = [
        d
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
        and selects(d["spec"]["selector"]["matchLabels"], labels)
    ]
    assert len(pdbs) == 1, "one PodDisruptionBudget covers the service's pods"
    spec = pdbs[0]["spec"]
    assert spec.get("minAvailable") == 1
    # A pod that never turns Ready cannot hold a node drain up.
    assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
    if layout == "scale-out":
        assert deployment["spec"]["replicas"] > spec["minAvailable"], "a drain can move a replica"
        worker_labels = find(docs, "Deployment", "dask-worker")["spec"]["template"]["metadata"][
            "labels"
        ]
        assert any(
            d["kind"] == "PodDisruptionBudget"
            and selects(d["spec"]["selector"]["matchLabels"], worker_labels)
            for d in docs
        ), "the workers have a PodDisruptionBudget"


# -- the programs accept what the manifests tell them -------------------------


def _service_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(find(docs, "Deployment", SERVICE))["containers"]
    return container


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the process gets: the image's ENV, then the container's.

    Secrets are replaced by stand-ins (:data:`SECRETS`), and ``$(NAME)``
    references are expanded in order, as the kubelet does.
    """
    env = dict(image_env())
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = SECRETS[ref["name"], ref["key"]]
        else:
            env[entry["name"]] = "from-the-downward-api"
    return env


def _server_settings(container: dict[str, Any]):
    """The server's settings in this container, through the server's own parsers.

    ``dask-compute serve`` is the image's entry point (``tini -- dask-compute``)
    with the container's ``args``; its options and its ``DASK_COMPUTE_*``
    variables (the image's and the container's) go through the CLI,
    :class:`server.config.Settings` and the server's access policy exactly as
    the server reads them, so an unknown flag, a bad value or a setup the
    server refuses to start with fails here.
    """
    from server.auth import Authenticator
    from server.cli import serve
    from server.config import Settings

    assert "command" not in container, "the service runs the image's entry point"
    args = container["args"]
    assert args[0] == "serve"
    try:
        ctx = serve.make_context("serve", list(args[1:]))
    except click.ClickException as exc:
        pytest.fail(f"dask-compute {' '.join(args)}: {exc.format_message()}")
    env = _container_env(container)
    known = {Settings.env_var(f.name) for f in dataclasses.fields(Settings)}
    known.add("DASK_COMPUTE_LOG_LEVEL")
    unknown = {name for name in env if name.startswith("DASK_COMPUTE_")} - known
    assert not unknown, f"variables the server does not read: {unknown}"
    fields = {f.name for f in dataclasses.fields(Settings)}
    flags = {k: v for k, v in ctx.params.items() if k in fields}
    settings = Settings.from_env(env, **flags)
    Authenticator.from_settings(settings)  # raises where the server would not start
    return settings


def _dask_command(container: dict[str, Any]) -> tuple[str, click.Context]:
    """``dask scheduler|worker ARGS`` of a container, parsed by distributed's CLI."""
    from distributed.cli import dask_scheduler, dask_worker

    command = container["command"]
    assert command[:3] == ["tini", "--", "dask"], command
    sub = command[3]
    main = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}[sub]
    try:
        return sub, main.make_context(f"dask {sub}", [*command[4:], *container.get("args", [])])
    except click.ClickException as exc:
        pytest.fail(f"{' '.join(command)}: {exc.format_message()}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_server_accepts_its_flags_and_variables(rendered, layout):
    settings = _server_settings(_service_container(rendered[layout]))
    # The image's DASK_COMPUTE_HOST=0.0.0.0 is what makes it reachable.
    assert settings.host == "0.0.0.0"
    assert settings.port == GRPC_PORT


@pytest.mark.parametrize("layout", LAYOUTS)
def test_env_references_come_after_what_they_name(rendered, layout):
    for workload in workloads(rendered[layout]):
        for c in containers(workload):
            defined: set[str] = set()
            for entry in c.get("env", []):
                for name in re.findall(
                    r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")
                ):
                    assert name in defined, (
                        f"{workload['metadata']['name']}: {entry['name']} uses $({name}) before it is set"
                    )
                defined.add(entry["name"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_callers_need_tokens_from_a_secret(rendered, layout):
    container = _service_container(rendered[layout])
    tokens = next(e for e in container["env"] if e["name"] == "DASK_COMPUTE_TOKENS")
    assert tokens["valueFrom"]["secretKeyRef"] == {"name": "dask-compute-tokens", "key": "tokens"}
    settings = _server_settings(container)
    assert not settings.insecure_no_auth_on_network
    assert not settings.allow_pickled_work_without_auth


def test_single_keeps_job_records_on_a_volume(rendered):
    from sqlalchemy.engine import make_url

    docs = rendered["single"]
    deployment = find(docs, "Deployment", SERVICE)
    container = _service_container(docs)
    database = make_url(_server_settings(container).job_store).database
    assert database and database.startswith("/"), database
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume_name = next(name for path, name in mounts.items() if database.startswith(path + "/"))
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == volume_name)
    claim = find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The server locks its SQLite file: a rolling update's second pod would
    # wait for it forever while the first waits for the second to be Ready.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1


def test_scale_out_shares_job_records_in_postgres(rendered):
    from sqlalchemy.engine import make_url

    docs = rendered["scale-out"]
    url = make_url(_server_settings(_service_container(docs)).job_store)
    assert url.drivername == "postgresql+psycopg"
    assert url.password == SECRETS["dask-compute-postgres", "password"]
    statefulset = find(docs, "StatefulSet", "dask-compute-postgres")
    service = find(docs, "Service", url.host)
    assert service["spec"]["ports"][0]["port"] == url.port
    assert selects(
        service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"]
    )
    pg_env = env_of(pod_spec(statefulset)["containers"][0])
    assert (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"]) == (url.username, url.database)
    # The driver is in the image.
    assert re.search(r"^ARG EXTRAS=.*\bpostgres\b", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_network_policies(rendered, layout):
    docs = rendered[layout]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in policies if _selected(p["spec"]["podSelector"], labels)]
        assert covering, f"no NetworkPolicy for {workload['metadata']['name']}"
    api = find(docs, "NetworkPolicy", SERVICE)
    (rule,) = api["spec"]["ingress"]
    assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}], "only gRPC is open"


def _selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    ok = selects(selector.get("matchLabels", {}), labels)
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        ok = ok and labels.get(expr["key"]) in expr["values"]
    return ok


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shutdown_grace_fits_termination_grace_period(rendered, layout):
    from server.app import RESPONSE_FLUSH_GRACE

    container = _service_container(rendered[layout])
    settings = _server_settings(container)
    period = pod_spec(find(rendered[layout], "Deployment", SERVICE))[
        "terminationGracePeriodSeconds"
    ]
    # Said explicitly, next to the period it has to fit.
    assert "DASK_COMPUTE_SHUTDOWN_GRACE" in env_of(container)
    assert settings.shutdown_grace < period
    # Then the answers to cancelled calls go out and the cluster closes,
    # all before Kubernetes' SIGKILL.
    assert settings.shutdown_grace + RESPONSE_FLUSH_GRACE + 2 <= period, (
        f"grace {settings.shutdown_grace}s + flush {RESPONSE_FLUSH_GRACE}s leaves too little "
        f"of terminationGracePeriodSeconds={period}"
    )
    assert "preStop" not in container.get("lifecycle", {}), "a preStop hook would eat the period"


def _auto_worker_memory(monkeypatch, container_limit: int, nthreads: int, cpus: int) -> int:
    """What distributed gives a worker for memory_limit="auto" inside this container.

    Dask's own arithmetic, with ``distributed.system.MEMORY_LIMIT`` set to
    what it reads from the container's cgroup (its memory limit) and the
    CPU count it reads from the CPU quota.
    """
    import logging

    from distributed import system
    from distributed.worker_memory import parse_memory_limit

    monkeypatch.setattr(system, "MEMORY_LIMIT", container_limit)
    return parse_memory_limit("auto", nthreads, total_cores=cpus, logger=logging.getLogger("test"))


def test_local_cluster_gets_the_containers_memory(rendered, monkeypatch):
    from distributed.deploy.utils import nprocesses_nthreads

    container = _service_container(rendered["single"])
    settings = _server_settings(container)
    assert not settings.scheduler_address, "single runs its own LocalCluster"
    assert settings.memory_limit == "auto"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    # Guaranteed QoS: the memory Dask sees in the cgroup is reserved for the pod.
    assert quantity(requests["memory"]) == quantity(limits["memory"])
    assert quantity(requests["cpu"]) == quantity(limits["cpu"])
    memory, cpus = int(quantity(limits["memory"])), int(quantity(limits["cpu"]))
    if settings.n_workers is None:
        n_workers, threads = nprocesses_nthreads(cpus)
    else:
        n_workers, threads = settings.n_workers, settings.threads_per_worker or 1
    per_worker = _auto_worker_memory(monkeypatch, memory, threads, cpus)
    assert n_workers * per_worker == pytest.approx(memory, abs=n_workers)
    # The server's own pools are sized to the pod, not to the node.
    assert settings.local_threads is not None and settings.local_threads <= cpus
    assert settings.local_processes is not None and settings.local_processes <= cpus


def test_scale_out_replicas_attach_to_the_scheduler_service(rendered):
    docs = rendered["scale-out"]
    deployment = find(docs, "Deployment", SERVICE)
    assert deployment["spec"]["replicas"] >= 2
    settings = _server_settings(_service_container(docs))
    match = re.fullmatch(r"tcp://([a-z0-9-]+):(\d+)", settings.scheduler_address)
    assert match, f"scheduler address {settings.scheduler_address!r}"
    service = find(docs, "Service", match.group(1))
    port = next(p for p in service["spec"]["ports"] if p["port"] == int(match.group(2)))

    scheduler = find(docs, "Deployment", "dask-scheduler")
    assert scheduler["spec"]["replicas"] == 1
    assert selects(service["spec"]["selector"], scheduler["spec"]["template"]["metadata"]["labels"])
    (container,) = pod_spec(scheduler)["containers"]
    sub, ctx = _dask_command(container)
    assert sub == "scheduler"
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == int(ctx.params["port"]) == int(match.group(2))

    # No LocalCluster in the replicas: no dashboard port, no cluster sizing.
    (service_container,) = pod_spec(deployment)["containers"]
    assert [p["containerPort"] for p in service_container["ports"]] == [GRPC_PORT, 9090]
    assert settings.n_workers is None


def test_scale_out_workers(rendered, monkeypatch):
    docs = rendered["scale-out"]
    scheduler_address = _server_settings(_service_container(docs)).scheduler_address
    worker = find(docs, "Deployment", "dask-worker")
    (container,) = pod_spec(worker)["containers"]
    sub, ctx = _dask_command(container)
    assert sub == "worker"
    assert ctx.params["scheduler"] == scheduler_address
    assert ctx.params["memory_limit"] == "auto"
    nworkers, nthreads = int(ctx.params["n_workers"]), int(ctx.params["nthreads"])
    limits = container["resources"]["limits"]
    cpus, memory = int(quantity(limits["cpu"])), int(quantity(limits["memory"]))
    assert nworkers * nthreads == cpus, "one thread per CPU of the pod"
    per_worker = _auto_worker_memory(monkeypatch, memory, nthreads, cpus)
    assert nworkers * per_worker == pytest.approx(memory, abs=nworkers)
    # Its health endpoint is where the probes look.
    dashboard = int(ctx.params["dashboard_address"].rsplit(":", 1)[1])
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["dashboard"] == dashboard
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "dashboard"}


def test_scale_out_runs_one_image(rendered):
    docs = rendered["scale-out"]
    images = {
        c["image"]
        for name in (SERVICE, "dask-scheduler", "dask-worker")
        for c in containers(find(docs, "Deployment", name))
    }
    # Same Python, dask, distributed and cloudpickle on both ends of a pickle.
    assert len(images) == 1, images
    assert images == {
        c["image"] for c in containers(find(rendered["single"], "Deployment", SERVICE))
    }


def test_scale_out_database(rendered):
    docs = rendered["scale-out"]
    statefulset = find(docs, "StatefulSet", "dask-compute-postgres")
    service = find(docs, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert selects(
        service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"]
    )
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    (container,) = pod_spec(statefulset)["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    pgdata = env_of(container)["PGDATA"]
    assert pgdata.startswith(mounts[claim["metadata"]["name"]] + "/"), (
        "the data lives on the volume"
    )
    password = next(e for e in container["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert "secretKeyRef" in password["valueFrom"]


def test_manifests_match_the_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^USER {IMAGE_UID}(:{IMAGE_UID})?$", dockerfile, re.MULTILINE)
    assert re.search(rf"^EXPOSE .*\b{GRPC_PORT}\b", dockerfile, re.MULTILINE)
    assert '"tini", "--", "dask-compute"' in dockerfile
