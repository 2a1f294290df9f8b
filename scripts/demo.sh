#!/usr/bin/env bash
# The main job on the embedded default: a private InfluxDB under ./.wally, a sample written
# through the writer and read back.
set -euo pipefail
cd "$(dirname "$0")/.."
collector db start
collector db check
collector db status
echo
echo "The embedded InfluxDB keeps running for analysis and dashboards; stop it with: collector db stop"
