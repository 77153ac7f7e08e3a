#!/usr/bin/env bash
# A local multi-node Ray cluster on one machine, for testing `ray job submit` and
# multi-node scheduling (Ray Train workers and Ray Data tasks spread over several raylets).
#
# Usage:
#   cluster/local_cluster.sh start     # head node + NUM_WORKERS worker nodes
#   cluster/local_cluster.sh status    # ray status
#   cluster/local_cluster.sh stop      # ray stop
#
# Settings (environment variables):
#   NUM_WORKERS=2        worker nodes besides the head (0: head only)
#   HEAD_CPUS=2          logical CPUs of the head node
#   WORKER_CPUS=2        logical CPUs of each worker node
#   HEAD_GPUS=           GPUs of the head node (empty: Ray detects them)
#   WORKER_GPUS=0        GPUs of each worker node. Every node on one machine sees the same
#                        GPUs, so by default only the head claims them.
#   OBJECT_STORE_BYTES=  object store bytes per node (empty: Ray's default, about 30% of
#                        RAM for EACH node; lower it when starting several nodes)
#   NODE_IP=127.0.0.1    IP every node advertises (loopback keeps the cluster local)
#   RAY_PORT=6379        GCS port of the head node
#   DASHBOARD_PORT=8265  dashboard / Jobs API port
#   AGENT_PORT_BASE=52365  dashboard-agent port of the head; worker node i uses base + i
#   RAY_AUTH_MODE=disabled  Ray token authentication: disabled or token. Ray's ports listen
#                        on all interfaces; use token on a shared or reachable machine.
#   RAY_BIN=             ray executable (default: the repo's .venv/bin/ray, else `ray` on PATH)
#
# All nodes run on one host and share the head's session directory (/tmp/ray/session_*);
# each node gets its own dashboard-agent port so that they don't collide.
# `stop` runs `ray stop`, which stops EVERY Ray process of this user on this machine,
# including a Ray started by `ray.init()` elsewhere.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

NUM_WORKERS="${NUM_WORKERS:-2}"
HEAD_CPUS="${HEAD_CPUS:-2}"
WORKER_CPUS="${WORKER_CPUS:-2}"
HEAD_GPUS="${HEAD_GPUS:-}"
WORKER_GPUS="${WORKER_GPUS:-0}"
OBJECT_STORE_BYTES="${OBJECT_STORE_BYTES:-}"
NODE_IP="${NODE_IP:-127.0.0.1}"
RAY_PORT="${RAY_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"
AGENT_PORT_BASE="${AGENT_PORT_BASE:-52365}"

if [[ -n "${RAY_BIN:-}" ]]; then
  RAY="$RAY_BIN"
elif [[ -x "$REPO_ROOT/.venv/bin/ray" ]]; then
  RAY="$REPO_ROOT/.venv/bin/ray"
elif command -v ray >/dev/null 2>&1; then
  RAY="$(command -v ray)"
else
  echo "error: no ray executable; create the repo's .venv or set RAY_BIN" >&2
  exit 1
fi

# Ray processes inherit this shell's environment: put the Ray executable's bin directory
# first on PATH so that `python` in a job entrypoint is the same environment (e.g. .venv).
RAY_BIN_DIR="$(cd "$(dirname "$RAY")" && pwd)"
export PATH="$RAY_BIN_DIR:$PATH"

# Ray 2.60 turns token authentication on for `ray start --head` when ~/.ray/auth_token
# exists (a local ray.init() creates one), but not for `ray start --address`, `ray status`
# or a driver given an explicit address, which then fail with InvalidAuthToken. So the
# mode is pinned for every command here. With RAY_AUTH_MODE=token, export the same
# RAY_AUTH_MODE=token in every shell that talks to the cluster.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"

GCS_ADDRESS="$NODE_IP:$RAY_PORT"
DASHBOARD_URL="http://127.0.0.1:$DASHBOARD_PORT"

# Ray's dashboard (and with it the Jobs API behind `ray job submit`) needs ray[default].
has_dashboard() {
  [[ -x "$RAY_BIN_DIR/python" ]] && "$RAY_BIN_DIR/python" -c \
    'import sys, ray._private.utils as u; sys.exit(u.get_dashboard_dependency_error() is not None)' \
    2>/dev/null
}

start() {
  local store_args=()
  if [[ -n "$OBJECT_STORE_BYTES" ]]; then
    store_args=(--object-store-memory "$OBJECT_STORE_BYTES")
  fi
  local head_gpu_args=()
  if [[ -n "$HEAD_GPUS" ]]; then
    head_gpu_args=(--num-gpus "$HEAD_GPUS")
  fi

  if [[ "$RAY_AUTH_MODE" == "token" ]]; then
    "$RAY" get-auth-token --generate >/dev/null   # creates ~/.ray/auth_token if missing
  fi

  echo "Starting head node at $GCS_ADDRESS ($HEAD_CPUS CPUs) with $RAY"
  "$RAY" start --head \
    --node-ip-address "$NODE_IP" \
    --port "$RAY_PORT" \
    --num-cpus "$HEAD_CPUS" \
    ${head_gpu_args[@]+"${head_gpu_args[@]}"} \
    ${store_args[@]+"${store_args[@]}"} \
    --dashboard-host 127.0.0.1 \
    --dashboard-port "$DASHBOARD_PORT" \
    --dashboard-agent-listen-port "$AGENT_PORT_BASE" \
    --disable-usage-stats

  local i
  for ((i = 1; i <= NUM_WORKERS; i++)); do
    echo "Starting worker node $i/$NUM_WORKERS ($WORKER_CPUS CPUs, $WORKER_GPUS GPUs)"
    "$RAY" start \
      --address "$GCS_ADDRESS" \
      --node-ip-address "$NODE_IP" \
      --num-cpus "$WORKER_CPUS" \
      --num-gpus "$WORKER_GPUS" \
      ${store_args[@]+"${store_args[@]}"} \
      --dashboard-agent-listen-port "$((AGENT_PORT_BASE + i))" \
      --disable-usage-stats
  done

  # Wait until every node has registered with the GCS (usually a few seconds).
  local want=$((NUM_WORKERS + 1)) alive=0 tries
  for ((tries = 0; tries < 30; tries++)); do
    alive="$("$RAY" status --address "$GCS_ADDRESS" 2>/dev/null | grep -cE '^ +[0-9]+ node_' || true)"
    [[ "$alive" -ge "$want" ]] && break
    sleep 1
  done
  if [[ "$alive" -lt "$want" ]]; then
    echo "warning: only $alive of $want nodes registered; see ray status and /tmp/ray/session_latest/logs" >&2
  fi

  local rayline=rayline
  [[ -x "$RAY_BIN_DIR/rayline" ]] && rayline="$RAY_BIN_DIR/rayline"

  cat <<EOF

Local Ray cluster is up: 1 head + $NUM_WORKERS worker node(s), $alive registered.
  GCS address:  $GCS_ADDRESS     ($RAY status --address $GCS_ADDRESS)
  Dashboard:    $DASHBOARD_URL   (Jobs API for ray job submit)

Submit the pipeline as a Ray job, from the repo root ($REPO_ROOT).
The job runs in a temporary copy of the repo that lacks the gitignored data/ and is not
kept, so pass absolute paths for the data, the run storage and MLflow; local paths work
as shared locations here because every node runs on this machine and shares its disk:
  $rayline demo-data --out "$REPO_ROOT/data/breast_cancer"   # once
  export RAY_ADDRESS=$DASHBOARD_URL$( [[ "$RAY_AUTH_MODE" == token ]] && printf ' RAY_AUTH_MODE=token' )
  $RAY job submit --working-dir . -- \\
      python jobs/train_pipeline.py --config jobs/configs/demo.yaml train.num_workers=2 \\
      data.path="$REPO_ROOT/data/breast_cancer" \\
      runtime.storage_path="$REPO_ROOT/rayline-runs" \\
      registry.tracking_uri="sqlite:///$REPO_ROOT/rayline-runs/mlflow.db"
Add runtime.run_name=NAME to resume that run when the same command is submitted again.

Or run the driver here, from the repo root, attached to the cluster (RAY_ADDRESS is then
the GCS address; the config's relative paths then resolve in the repo):
  RAY_ADDRESS=$GCS_ADDRESS $RAY_BIN_DIR/python jobs/train_pipeline.py --config jobs/configs/demo.yaml

Stop it:
  $0 stop
EOF

  if ! has_dashboard; then
    cat >&2 <<EOF

warning: this Ray install lacks the dashboard dependencies (ray[default]), so the
dashboard and the Jobs API are off and 'ray job submit' cannot connect. Install
'ray[default]' into $RAY_BIN_DIR/.. to submit jobs, or run the driver directly as above.
EOF
  fi
}

case "${1:-}" in
  start) start ;;
  stop) "$RAY" stop ;;
  status) "$RAY" status --address "$GCS_ADDRESS" ;;
  *)
    echo "usage: $0 {start|stop|status}" >&2
    exit 2
    ;;
esac
