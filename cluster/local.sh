#!/usr/bin/env bash
# A Ray head on this laptop: dashboard and job server on loopback, a Prometheus metrics
# endpoint, token authentication on. Run from anywhere; paths are the repository's.
#
#   cluster/local.sh start                       # head + token (~/.ray/auth_token, made once)
#   cluster/local.sh submit CONFIG OUT [ARGS..]  # ray job submit of jobs/generate.py, OUT made absolute;
#                                                # a submission id already known is refused before any upload
#   cluster/local.sh status                      # this head's ray status, and its jobs as a table
#   cluster/local.sh metrics                     # the zoo's series on the Prometheus endpoint
#   cluster/local.sh stop                        # ray stop: EVERY Ray process on this machine
#
# Ports (override with the environment): DASHBOARD_PORT=8265 (dashboard + job server),
# METRICS_PORT=8080 (Prometheus text, http://127.0.0.1:8080/metrics), GCS_PORT=6379.
#
# What listens where: the dashboard and job server bind to 127.0.0.1 only. Ray binds the
# GCS, raylet and object-manager ports on all interfaces whatever --node-ip-address says
# (it replaces 127.0.0.1 with the machine's address); with RAY_AUTH_MODE=token every
# gRPC and HTTP call to them needs the token. The metrics port also listens on all
# interfaces and needs no token (read-only numbers): firewall it on untrusted networks.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=token
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
METRICS_PORT=${METRICS_PORT:-8080}
GCS_PORT=${GCS_PORT:-6379}
ADDRESS="http://127.0.0.1:$DASHBOARD_PORT"

case "${1:-}" in
  start)
    ray get-auth-token --generate >/dev/null  # creates ~/.ray/auth_token if there is none
    ray start --head \
      --port="$GCS_PORT" \
      --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
      --metrics-export-port="$METRICS_PORT" \
      --num-cpus="${NUM_CPUS:-$(nproc 2>/dev/null || sysctl -n hw.ncpu)}" \
      --disable-usage-stats
    echo "dashboard:  $ADDRESS   (the browser asks for the token: ray get-auth-token)"
    echo "metrics:    http://127.0.0.1:$METRICS_PORT/metrics"
    echo "submit:     cluster/local.sh submit configs/zoo/quickstart.yaml zoo-out/quickstart"
    ;;
  submit)
    [ $# -ge 3 ] || { echo "usage: $0 submit CONFIG OUT [jobs/generate.py args...]" >&2; exit 2; }
    config=$2; out=$3; shift 3
    case "$out" in
      *://*) ;;                                  # a URI: as is
      *) out=$(python -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$out") ;;
    esac
    id=$(zoo job-id --config "$config" --out "$out" "$@")
    set +e; state=$(python cluster/jobs_table.py --address "$ADDRESS" --known "$id"); known=$?; set -e
    case $known in
      0) echo "$0: error: job $id was submitted already ($state); nothing uploaded. Its log:" \
           "ray job logs --address $ADDRESS $id; to run it again: ray job delete --address $ADDRESS $id" >&2
         exit 2 ;;
      1) ;;                                      # a new id
      *) exit 2 ;;                               # the head cannot be asked (said in one line)
    esac
    echo "submission id: $id (submitting it again is refused; after a failure: ray job delete $id)"
    RAY_DEDUP_LOGS=0 ray job submit --address "$ADDRESS" --submission-id "$id" \
      --runtime-env cluster/runtime_env.yaml \
      -- python jobs/generate.py --config "$config" --out "$out" "$@"
    ;;
  status)
    ray status --address "127.0.0.1:$GCS_PORT"   # this head's, whatever other Rays run here
    python cluster/jobs_table.py --address "$ADDRESS"
    ;;
  metrics)
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep '^ray_zoo_' || echo "no zoo series yet"
    ;;
  stop) ray stop ;;
  *) echo "usage: $0 start|submit|status|metrics|stop" >&2; exit 2 ;;
esac
