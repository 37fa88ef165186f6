#!/usr/bin/env bash
# A Ray head on this laptop, bound to loopback, with the dashboard, the job server
# and a Prometheus metrics endpoint. Token authentication is on (RAY_AUTH_MODE=token):
# the CLI and `ray job submit` on this machine find the token by themselves.
#
#   cluster/local.sh start     # then: ray job submit --address http://127.0.0.1:8265 ...
#   cluster/local.sh status
#   cluster/local.sh stop
set -euo pipefail
export RAY_AUTH_MODE=token
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
METRICS_PORT=${METRICS_PORT:-8080}
GCS_PORT=${GCS_PORT:-6379}

case "${1:-}" in
  start)
    ray get-auth-token --generate >/dev/null 2>&1 || true
    ray start --head \
      --node-ip-address=127.0.0.1 \
      --port="$GCS_PORT" \
      --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
      --metrics-export-port="$METRICS_PORT" \
      --num-cpus="${NUM_CPUS:-$(nproc)}" \
      --disable-usage-stats
    echo "dashboard:  http://127.0.0.1:$DASHBOARD_PORT"
    echo "metrics:    http://127.0.0.1:$METRICS_PORT/metrics"
    ;;
  status) ray status ;;
  stop) ray stop ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
