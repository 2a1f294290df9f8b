#!/usr/bin/env bash
# Installs everything Wally and its tests need on a Debian machine: the Debian packages in
# scripts/apt-packages.txt and the Python package with its dependencies. Idempotent: packages
# already installed are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t wanted < <(grep -vE '^\s*(#|$)' scripts/apt-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Wally starts InfluxDB, RabbitMQ and Ceph itself, privately: keep package scripts from
  # starting system-wide daemons (policy-rc.d exit 101 = "not allowed"), as container builds do.
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
  [ -z "$own_policy" ] || $SUDO rm -f "$policy"
fi

PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -e ".[test,bench]" 2>&1 | grep -vE "^WARNING: (Running pip as|Location)" || true
$PY -c "import collector, loadgen, analysis, dashboards" 
echo "setup: ok"
