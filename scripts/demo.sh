#!/usr/bin/env bash
# The main job on the embedded default: a private InfluxDB under ./.wally, the collector on
# the local node, and a short fio plan (examples/local.yaml) run for real on a file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m collector db start
$PY -m loadgen plan examples/local.yaml
$PY -m loadgen run examples/local.yaml --runs-dir runs
REPORT=$(ls -t runs/*/report.html 2>/dev/null | head -n 1 || true)
echo
echo "Report of this run (opens offline): ${REPORT:-not written, see the messages above}"
$PY -m collector db status
echo "The embedded InfluxDB keeps running for analysis and dashboards; stop it with: collector db stop"
