#!/usr/bin/env bash
# The Ceph variant of the demo: a private InfluxDB under ./.wally, a single-node Ceph lab
# in /tmp/wally-ceph-lab, and examples/ceph.yaml run for real through fio's rbd engine.
# The lab is stopped (by PID) and removed on the way out, also after an error or Ctrl+C.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LAB=/tmp/wally-ceph-lab
$PY -m collector db start
$PY -m loadgen ceph-lab up --dir "$LAB" --osds 2
trap '$PY -m loadgen ceph-lab down --dir "$LAB"' EXIT
$PY -m loadgen run examples/ceph.yaml --runs-dir runs
echo
echo "The embedded InfluxDB keeps running for analysis and dashboards; stop it with: collector db stop"
