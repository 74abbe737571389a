#!/usr/bin/env bash
# Installs the system tools that tests drive for real, when they are missing.
# Idempotent and quiet when everything is present; needs root (or sudo) only
# when something has to be installed.
set -euo pipefail

apt_packages=()
# (packages are added here by the features that need them)
apt_packages+=(postgresql)  # the job store's tests run on a real PostgreSQL server
apt_packages+=(buildah mmdebstrap)  # tests/integration/test_container.py builds and runs the image

missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Node.js for the non-Python client in tests/node (grpc-js, apache-arrow), at
# the exact versions its package.json pins.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi
node_dir="$(dirname "$0")/../tests/node"
if [ ! -d "$node_dir/node_modules/apache-arrow" ] || [ ! -d "$node_dir/node_modules/@grpc/grpc-js" ]; then
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error)
fi
