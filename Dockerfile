# Dask Compute Service: the gRPC front-end, with an embedded LocalCluster by
# default or attached to an existing scheduler (--scheduler-address).
#
#   docker build -t dask-compute .
#   docker run --rm -p 50051:50051 -e DASK_COMPUTE_TOKENS="alice run,code $TOKEN" \
#       -v dask-compute-state:/var/lib/dask-compute dask-compute
#
# k8s/README.md has the details; tests/integration/test_container.py builds and
# runs this very file with buildah on a local Debian base.

# Any Debian-based image with python3 >= 3.11 (tomllib) and its venv module: the
# official slim image by default; the test suite passes a Debian rootfs made by
# mmdebstrap, whose python3 lives in /usr/bin rather than /usr/local/bin, so
# nothing below names an interpreter path other than the venv's.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# The runtime requirements, read from pyproject.toml's ranges. A stage of its
# own: the builder copies only the list, so an edit elsewhere in
# pyproject.toml (test tools, say) leaves the dependency layer cached.
FROM ${BASE_IMAGE} AS requirements

# Optional dependency groups of pyproject.toml to install as well, comma
# separated: server is what running the service needs (the plain
# dependencies are the SDK's), postgres the driver of the shared job store
# (scale-out).
ARG EXTRAS=server,postgres
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c 'import os, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; extras = [e.strip() for e in os.environ["EXTRAS"].split(",") if e.strip()]; print("\n".join(p["dependencies"] + [r for e in extras for r in p["optional-dependencies"][e]]))' \
        > /src/requirements.txt

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# Only for pip inside this stage, unset by default: a CA bundle mounted into
# the build (`-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
# --build-arg PIP_CERT=/run/host-ca.crt`) behind a TLS-intercepting proxy.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv
WORKDIR /src

# The dependencies alone, in a layer that stays cached until they change;
# the source comes after.
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt

COPY pyproject.toml LICENSE ./
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
# --shutdown-grace) and reaps the Dask worker processes it spawns; neither
# the slim image nor a minimal Debian has it. No compilers: nothing here
# builds code. The service's user is uid 10001.
# DL3008 (pin apt package versions) is ignored on purpose: the base image is
# a build argument, a Debian revision pinned for one release is missing from
# the next, and tini's version follows the base's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 dask \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home \
        --home-dir /home/dask --shell /usr/sbin/nologin dask \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/dask-compute

# DASK_COMPUTE_HOST: listen on every interface, not only loopback, inside a
# container; the server then refuses to start without tokens
# (DASK_COMPUTE_TOKENS or --tokens-file) unless told
# --insecure-no-auth-on-network. The health service needs no token.
# The Dask dashboard (default ":8787", no authentication) follows it to
# 0.0.0.0:8787, so that `docker run -p 8787:8787` reaches it; set
# DASK_COMPUTE_DASHBOARD_ADDRESS=127.0.0.1:8787 to keep it inside the
# container (k8s/ does), or "" to turn it off. The LocalCluster's scheduler,
# workers and nannies always listen on 127.0.0.1 only.
# DASK_COMPUTE_JOB_STORE: the job records' SQLite file, in a directory to
# mount a volume on (-v NAME:/var/lib/dask-compute) so that they outlive the
# container; scale-out points it at PostgreSQL instead.
# DASK_TEMPORARY_DIRECTORY: the workers' scratch space; Kubernetes mounts an
# emptyDir there under a read-only root filesystem.
#
# No DASK_COMPUTE_MEMORY_LIMIT: the default "auto" already follows the
# container's memory limit, not the host's. distributed.system.MEMORY_LIMIT
# is the smallest of the host's memory, the cgroup limit (cgroup v2
# /sys/fs/cgroup/memory.max, v1 memory/memory.limit_in_bytes) and RLIMIT_RSS,
# and "auto" gives each worker MEMORY_LIMIT * threads / CPU_COUNT (CPU_COUNT
# follows the cgroup CPU quota too). Checked with distributed 2026.8, and by
# tests/integration/test_container.py on every run: in a container limited
# to 3 GiB on 2 CPUs, a 1-thread worker gets 1.5 GiB.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DASK_COMPUTE_HOST=0.0.0.0 \
    DASK_COMPUTE_JOB_STORE=sqlite:////var/lib/dask-compute/jobs.db \
    DASK_COMPUTE_METRICS_PORT=9090 \
    DASK_TEMPORARY_DIRECTORY=/tmp

WORKDIR /home/dask

# 50051: gRPC (compute.v1, grpc.health.v1, reflection); 8787: Dask dashboard
# (unauthenticated: publish it only where every viewer may see every job);
# 9090: Prometheus metrics (/metrics).
EXPOSE 50051 8787 9090

# The gRPC health service through the project's own client (no probe binary
# can be fetched); kept only in the docker image format (buildah --format docker).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dask-compute", "health", "--timeout", "3"]

ENTRYPOINT ["tini", "--", "dask-compute"]
CMD ["serve"]

# Last, so that a change of the source rebuilds only this layer: the venv with
# the service installed, owned by root so that the service cannot change it.
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
