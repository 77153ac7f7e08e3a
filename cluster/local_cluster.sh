#!/usr/bin/env bash
# A local multi-node Ray cluster on one machine, for testing `rayline submit` and
# multi-node scheduling (Ray Train workers and Ray Data tasks spread over several raylets).
#
# Usage:
#   cluster/local_cluster.sh start     # head node + NUM_WORKERS worker nodes
#   cluster/local_cluster.sh status    # ray status
#   cluster/local_cluster.sh pids      # "<node> <pid of its ray start> <raylet pid>" per node
#   cluster/local_cluster.sh stop      # stops THIS cluster's processes only
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
#   DASHBOARD_PORT=8265  dashboard / Jobs API port (what `rayline submit --address` takes)
#   CLIENT_PORT=10001    Ray Client server port of the head
#   AGENT_PORT_BASE=52365  dashboard-agent port of the head; worker node i uses base + i
#   TEMP_DIR=/tmp/rlc-$RAY_PORT  this cluster's directory: node PIDs and start logs, and
#                        each node's own Ray temp/session root (<TEMP_DIR>/h, <TEMP_DIR>/w1,
#                        ...). Keep it short: Ray's socket paths live under it. Nodes must
#                        not share a temp dir: each node's runtime-env agent deletes the
#                        job packages it no longer uses, even while another node's job
#                        runs in them (a job then fails with "No such file or directory").
#   RAY_AUTH_MODE=disabled  Ray token authentication: disabled or token. Ray's ports listen
#                        on all interfaces; use token on a shared or reachable machine.
#                        The token comes from RAY_AUTH_TOKEN, else the file named by
#                        RAY_AUTH_TOKEN_PATH (created with a new token if missing), else
#                        ~/.ray/auth_token (created by `ray get-auth-token --generate`).
#   RAY_BIN=             ray executable (default: the repo's .venv/bin/ray, else `ray` on PATH)
#
# Each node is a `ray start --block` process in its own process group; `stop` ends exactly
# those process groups (found through TEMP_DIR), never `ray stop`, which would end every
# Ray of this user on the machine (test sessions, notebooks, another cluster).
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
CLIENT_PORT="${CLIENT_PORT:-10001}"
AGENT_PORT_BASE="${AGENT_PORT_BASE:-52365}"
TEMP_DIR="${TEMP_DIR:-/tmp/rlc-$RAY_PORT}"
STATE_DIR="$TEMP_DIR"

if [[ -n "${RAY_BIN:-}" ]]; then
  RAY="$RAY_BIN"
elif [[ -x "$REPO_ROOT/.venv/bin/ray" ]]; then
  RAY="$REPO_ROOT/.venv/bin/ray"
elif command -v ray >/dev/null 2>&1; then
  RAY="$(command -v ray)"
else
  echo "error: no ray executable; create the repo's .venv (make setup) or set RAY_BIN" >&2
  exit 1
fi

# Ray processes inherit this shell's environment: put the Ray executable's bin directory
# first on PATH so that `python` in a job entrypoint is the same environment (e.g. .venv).
RAY_BIN_DIR="$(cd "$(dirname "$RAY")" && pwd)"
export PATH="$RAY_BIN_DIR:$PATH"

# Ray 2.60 turns token authentication on for `ray start --head` when ~/.ray/auth_token
# exists (a local ray.init() creates one), but not for `ray start --address`, `ray status`
# or a driver given an explicit address, which then fail with InvalidAuthToken. So the
# mode is pinned for every command here (and inherited by the nodes and their jobs).
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"

GCS_ADDRESS="$NODE_IP:$RAY_PORT"
DASHBOARD_URL="http://127.0.0.1:$DASHBOARD_PORT"

ensure_token() {
  [[ "$RAY_AUTH_MODE" == "token" ]] || return 0
  [[ -n "${RAY_AUTH_TOKEN:-}" ]] && return 0
  if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
      mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
      (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
      echo "Wrote a new Ray auth token to $RAY_AUTH_TOKEN_PATH"
    fi
    return 0
  fi
  "$RAY" get-auth-token --generate >/dev/null   # creates ~/.ray/auth_token if missing
}

# Start one node as `ray start --block` in its own session (process group), in the
# background; its PID goes to $STATE_DIR/<name>.pid and its output to <name>.log.
spawn_node() {
  local name="$1"
  shift
  setsid "$RAY" start --block "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/$name.pid"
}

alive_nodes() {
  "$RAY" status --address "$GCS_ADDRESS" 2>/dev/null | grep -cE '^ +[0-9]+ node_' || true
}

start() {
  if [[ -d "$STATE_DIR" ]] && compgen -G "$STATE_DIR/*.pid" >/dev/null; then
    for f in "$STATE_DIR"/*.pid; do
      if kill -0 "$(cat "$f")" 2>/dev/null; then
        echo "error: a cluster from $STATE_DIR is running ($(basename "$f" .pid), PID $(cat "$f")); run '$0 stop' first, or set TEMP_DIR and the ports for a second one" >&2
        exit 1
      fi
    done
  fi
  mkdir -p "$STATE_DIR"
  rm -f "$STATE_DIR"/*.pid
  ensure_token

  local common=(--node-ip-address "$NODE_IP" --disable-usage-stats)
  [[ -n "$OBJECT_STORE_BYTES" ]] && common+=(--object-store-memory "$OBJECT_STORE_BYTES")
  local head_gpu_args=()
  [[ -n "$HEAD_GPUS" ]] && head_gpu_args=(--num-gpus "$HEAD_GPUS")

  echo "Starting head node at $GCS_ADDRESS ($HEAD_CPUS CPUs) with $RAY (auth: $RAY_AUTH_MODE)"
  spawn_node head --head "${common[@]}" \
    --temp-dir "$TEMP_DIR/h" \
    --port "$RAY_PORT" \
    --num-cpus "$HEAD_CPUS" \
    ${head_gpu_args[@]+"${head_gpu_args[@]}"} \
    --ray-client-server-port "$CLIENT_PORT" \
    --dashboard-host 127.0.0.1 \
    --dashboard-port "$DASHBOARD_PORT" \
    --dashboard-agent-listen-port "$AGENT_PORT_BASE"

  # The worker nodes need the head's GCS up before they can join.
  local tries
  for ((tries = 0; tries < 120; tries++)); do
    [[ "$(alive_nodes)" -ge 1 ]] && break
    if ! kill -0 "$(cat "$STATE_DIR/head.pid")" 2>/dev/null; then
      echo "error: the head node exited; its output:" >&2
      cat "$STATE_DIR/head.log" >&2
      exit 1
    fi
    sleep 1
  done

  local i
  for ((i = 1; i <= NUM_WORKERS; i++)); do
    echo "Starting worker node $i/$NUM_WORKERS ($WORKER_CPUS CPUs, $WORKER_GPUS GPUs)"
    spawn_node "worker-$i" --address "$GCS_ADDRESS" "${common[@]}" \
      --temp-dir "$TEMP_DIR/w$i" \
      --num-cpus "$WORKER_CPUS" \
      --num-gpus "$WORKER_GPUS" \
      --dashboard-agent-listen-port "$((AGENT_PORT_BASE + i))"
  done

  # Wait until every node has registered with the GCS (seconds on a quiet machine).
  local want=$((NUM_WORKERS + 1)) alive=0
  for ((tries = 0; tries < 180; tries++)); do
    alive="$(alive_nodes)"
    [[ "$alive" -ge "$want" ]] && break
    sleep 1
  done
  if [[ "$alive" -lt "$want" ]]; then
    echo "warning: only $alive of $want nodes registered; see $STATE_DIR/*.log" >&2
  fi

  local rayline=rayline
  [[ -x "$RAY_BIN_DIR/rayline" ]] && rayline="$RAY_BIN_DIR/rayline"
  local auth_env=""
  [[ "$RAY_AUTH_MODE" == token && -n "${RAY_AUTH_TOKEN_PATH:-}" ]] &&
    auth_env=" RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"

  cat <<EOM

Local Ray cluster is up: 1 head + $NUM_WORKERS worker node(s), $alive registered.
  GCS address:  $GCS_ADDRESS     ($RAY status --address $GCS_ADDRESS)
  Jobs API:     $DASHBOARD_URL
  State:        $STATE_DIR       (node PIDs and start logs)

Submit the pipeline as a Ray job, from the repo root ($REPO_ROOT). Every node runs on
this machine, so rayline resolves the config's relative paths (data, runs, MLflow) here:
  $rayline demo-data --out data/breast_cancer      # once
 $auth_env $rayline submit jobs/configs/demo.yaml --address $DASHBOARD_URL

Stop it (this cluster's processes only):
  TEMP_DIR=$TEMP_DIR $0 stop
EOM
}

# The raylet PID of a node: the raylet process among the `ray start` process's descendants.
raylet_of() {
  local root="$1" pid
  for pid in $(ps -o pid= --ppid "$root"); do
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == raylet ]]; then
      echo "$pid"
      return
    fi
  done
  echo "-"
}

pids() {
  local f name pid
  for f in "$STATE_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    pid="$(cat "$f")"
    kill -0 "$pid" 2>/dev/null || continue
    echo "$name $pid $(raylet_of "$pid")"
  done
}

stop() {
  local f pid pgids=()
  if ! compgen -G "$STATE_DIR/*.pid" >/dev/null; then
    echo "no cluster recorded in $STATE_DIR"
    return 0
  fi
  # Worker nodes first, then the head; each node's whole process group.
  for f in $(ls "$STATE_DIR"/worker-*.pid 2>/dev/null) "$STATE_DIR/head.pid"; do
    [[ -e "$f" ]] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pgids+=("$pid")
    fi
    rm -f "$f"
  done
  # Up to 10 s to exit after TERM (as `ray stop`'s grace period), then KILL what is left
  # (a node's process group can keep members that never answer TERM).
  local tries left
  for ((tries = 0; tries < 20; tries++)); do
    left=0
    for pid in ${pgids[@]+"${pgids[@]}"}; do
      pgrep -g "$pid" >/dev/null 2>&1 && left=1
    done
    [[ "$left" == 0 ]] && break
    sleep 0.5
  done
  for pid in ${pgids[@]+"${pgids[@]}"}; do
    pkill -KILL -g "$pid" 2>/dev/null || true
  done
  echo "Stopped ${#pgids[@]} node(s) recorded in $STATE_DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  pids) pids ;;
  status) "$RAY" status --address "$GCS_ADDRESS" ;;
  *)
    echo "usage: $0 {start|stop|status|pids}" >&2
    exit 2
    ;;
esac
