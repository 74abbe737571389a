#!/usr/bin/env bash
# Installs the system tools that tests drive for real, when they are missing.
# Idempotent and quiet when everything is present; needs root (or sudo) only
# when something has to be installed.
set -euo pipefail

apt_packages=()
# (packages are added here by the features that need them)
apt_packages+=(postgresql)  # the job store's tests run on a real PostgreSQL server

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
