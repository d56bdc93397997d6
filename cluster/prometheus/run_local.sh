#!/usr/bin/env bash
# Run a Prometheus on this machine's loopback with the shipped config and alert rules, watching a local
# service-discovery folder — for a workstation or a single node; on a cluster, point your own Prometheus at
# the shared folder instead (see README, "Monitoring").
#
#   cluster/prometheus/run_local.sh [SD_DIR] [PORT]
#     SD_DIR  folder the jobs write their targets into (metrics.sd_dir); default ./prometheus-sd
#     PORT    Prometheus web/API port on 127.0.0.1; default 9090
# Environment: SCRAPE_INTERVAL (default 15s), PROMETHEUS_DATA (TSDB folder; default ./prometheus-data).
# Then train with:  --set metrics.prometheus=on --set metrics.sd_dir=SD_DIR  and open http://127.0.0.1:PORT
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sd_dir="$(realpath -m "${1:-prometheus-sd}")"
port="${2:-9090}"
interval="${SCRAPE_INTERVAL:-15s}"
data="$(realpath -m "${PROMETHEUS_DATA:-prometheus-data}")"

command -v prometheus >/dev/null || {
  echo "run_local.sh: prometheus not found; install it (Debian/Ubuntu: apt-get install -y --no-install-recommends prometheus)" >&2
  exit 2
}
mkdir -p "$sd_dir" "$data"
config="$data/prometheus.yml"
# The shipped config with three local changes: the SD folder, the scrape/evaluation interval, and the rule
# file's absolute path (Prometheus resolves relative paths against the config's own folder).
sed -e "s|^\(  *- \)/shared/dist-vgg/prometheus-sd/\*\.json|\1$sd_dir/*.json|" \
    -e "s|^\(  scrape_interval: \).*|\1$interval|" \
    -e "s|^\(  evaluation_interval: \).*|\1$interval|" \
    -e "s|^\(  - \)rules\.yml|\1$here/rules.yml|" \
    "$here/prometheus.yml" > "$config"
grep -q "$sd_dir/\*.json" "$config" || { echo "run_local.sh: could not set the SD folder in $config" >&2; exit 1; }
promtool check config "$config" >/dev/null
echo "Prometheus on http://127.0.0.1:$port, targets from $sd_dir/*.json, data in $data" >&2
exec prometheus --config.file="$config" --storage.tsdb.path="$data" --web.listen-address="127.0.0.1:$port"
