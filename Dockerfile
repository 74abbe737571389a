# Dask Compute Service: the gRPC front-end, with an embedded LocalCluster by
# default or attached to an existing scheduler (--scheduler-address).
#
#   docker build -t dask-compute .
#   docker run --rm -p 50051:50051 -p 8787:8787 dask-compute
#
# k8s/README.md has the details; tests/integration/test_container.py builds and
# runs this very file with buildah on a local Debian base.

# Any Debian-based image with python3 >= 3.11 (tomllib) and its venv module: the
# official slim image by default; the test suite passes a Debian rootfs made by
# mmdebstrap, whose python3 lives in /usr/bin rather than /usr/local/bin, so
# nothing below names an interpreter path other than the venv's.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# Only for pip inside this stage, both unset by default: a CA bundle mounted
# into the build (for a TLS-intercepting proxy) and a PyPI mirror.
ARG PIP_CERT
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv
WORKDIR /src

# The dependencies alone, from pyproject.toml's ranges, so this layer stays
# cached until they change; the source comes after.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt

COPY server/ server/
COPY client_sdk/ client_sdk/
# A regular (not editable) install: the venv is all the final stage needs.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /src

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="dask-compute-service" \
      org.opencontainers.image.description="gRPC compute service in front of a Dask cluster" \
      org.opencontainers.image.licenses="BSD-3-Clause"

# tini as PID 1 forwards SIGTERM to the server (which drains, see
# --shutdown-grace) and reaps the Dask worker processes it spawns. No
# compilers: nothing here builds code.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 dask \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home \
        --home-dir /home/dask --shell /usr/sbin/nologin dask
# DL3008 (pin apt versions) is ignored on purpose: the base image is a build
# argument, and a Debian revision pinned for one release does not exist in the
# next; tini's version comes from the base's Debian release.

COPY --from=builder /opt/venv /opt/venv

# DASK_COMPUTE_HOST: listen on every interface, not only loopback, inside a
# container. DASK_TEMPORARY_DIRECTORY: the workers' scratch space; Kubernetes
# mounts an emptyDir there under a read-only root filesystem.
#
# No DASK_COMPUTE_MEMORY_LIMIT: the default "auto" already follows the
# container's memory limit, not the host's. distributed.system.MEMORY_LIMIT
# is the smallest of the host's memory, the cgroup limit (cgroup v2
# /sys/fs/cgroup/memory.max, v1 memory/memory.limit_in_bytes) and RLIMIT_RSS,
# and "auto" gives each worker MEMORY_LIMIT * threads / CPU_COUNT (CPU_COUNT
# follows the cgroup CPU quota too). Checked with distributed 2026.8: in a
# cgroup limited to 3 GiB, MEMORY_LIMIT was 3 GiB and a 1-thread worker of 2
# got 1.5 GiB.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DASK_COMPUTE_HOST=0.0.0.0 \
    DASK_TEMPORARY_DIRECTORY=/tmp

WORKDIR /home/dask
USER 10001:10001

# 50051: gRPC (compute.v1, grpc.health.v1, reflection); 8787: Dask dashboard.
# The metrics port (9090, --metrics-port) will join them when the server has it.
EXPOSE 50051 8787

# The gRPC health service through the project's own client (no probe binary
# can be fetched); kept only in the docker image format (buildah --format docker).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dask-compute", "health", "--timeout", "3"]

ENTRYPOINT ["tini", "--", "dask-compute"]
CMD ["serve"]
