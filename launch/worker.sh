#!/usr/bin/env bash
# One Cloud TPU VM worker's side of launch/tpu.py, which runs it on every worker through
# `gcloud compute tpus tpu-vm ssh --worker=all`. Each verb prints one `RS_<VERB> id=<worker> ...`
# line that launch/tpu.py reads back (gcloud mixes the workers' output).
#
#   worker.sh setup SHA JAX_VERSION PYTHON  code from ~/rs-SHA.tar.gz; PYTHON=venv installs
#                                           jax[tpu]==JAX_VERSION and rs into ~/rs/venv,
#                                           anything else is an interpreter to use as it is
#   worker.sh check                         versions, TPU holders, lock file, proxies, runs
#   worker.sh run RUN [KEY=VALUE ...] -- ARGS  starts `python -m rs.main ARGS` detached
#   worker.sh status RUN                    running / exited <code> / absent, the log's last line
#   worker.sh stop RUN SECONDS              SIGTERM (rs saves and exits), waits for the exit
#   worker.sh free                          kills what holds the TPU, removes its lock file
#
# Layout in the worker's home: rs/<sha>/ (code), rs/current -> <sha>, rs/python (the interpreter
# to use), rs/venv/, rs/runs/<run>/{worker-<id>.log,pid,status,stopped}.
set -uo pipefail

RS_HOME="$HOME/rs"
# Where the TPU's device files and lock file are (overridable for other machines and the tests).
TPU_DEVICES="${RS_TPU_DEVICES:-/dev/accel* /dev/vfio/*}"
LOCKFILE="${RS_TPU_LOCKFILE:-/tmp/libtpu_lockfile}"
LIBTPU_WHEELS=https://storage.googleapis.com/jax-releases/libtpu_releases.html

worker_id() {
  if [ -n "${TPU_WORKER_ID:-}" ]; then
    echo "$TPU_WORKER_ID"
  else  # every TPU VM knows its worker number from the metadata server
    curl -sf -H 'Metadata-Flavor: Google' \
      http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number \
      || echo unknown
  fi
}
ID="$(worker_id)"

# Root where needed and possible without a password (a TPU VM's default user can).
as_root() {
  if [ "$(id -u)" = 0 ] || ! sudo -n true 2>/dev/null; then "$@"; else sudo -n "$@"; fi
}

# PIDs of the processes that hold the TPU's device files open (a run of earlier, a notebook).
tpu_holders() {
  local pattern pids=()
  for pattern in $TPU_DEVICES; do
    [ -e "$pattern" ] || continue
    while read -r link; do
      pids+=("$(cut -d/ -f3 <<<"$link")")
    done < <(as_root find /proc/[0-9]*/fd -maxdepth 1 -lname "$pattern" 2>/dev/null)
  done
  if [ ${#pids[@]} -gt 0 ]; then printf '%s\n' "${pids[@]}" | sort -un | paste -sd, -; fi
}

python_of() { cat "$RS_HOME/python" 2>/dev/null || echo python3; }

run_dir() { echo "$RS_HOME/runs/$1"; }

is_running() {  # RUN: its process group still has a process
  local pid
  pid="$(cat "$(run_dir "$1")/pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 -- "-$pid" 2>/dev/null
}

setup() {
  local sha="$1" jax_version="$2" python="$3"
  mkdir -p "$RS_HOME/$sha" || exit 1
  tar -xzf "$HOME/rs-$sha.tar.gz" -C "$RS_HOME/$sha" || { echo "RS_SETUP id=$ID error=untar"; exit 1; }
  ln -sfn "$sha" "$RS_HOME/current"
  if [ "$python" = venv ]; then
    python="$RS_HOME/venv/bin/python"
    if [ ! -x "$python" ]; then
      python3 -m venv "$RS_HOME/venv" || { echo "RS_SETUP id=$ID error=venv"; exit 1; }
    fi
    if ! { "$python" -m pip install -q --upgrade pip &&
           "$python" -m pip install -q "jax[tpu]==$jax_version" -f "$LIBTPU_WHEELS" &&
           "$python" -m pip install -q -e "$RS_HOME/current"; }; then
      echo "RS_SETUP id=$ID error=pip"
      exit 1
    fi
  fi
  echo "$python" >"$RS_HOME/python"
  echo "RS_SETUP id=$ID sha=$sha python=$python"
}

check() {
  local versions running=() run proxies=() name
  versions="$("$(python_of)" - <<'EOF' 2>/dev/null
import importlib.metadata as m, platform
def version(name):
  try:
    return m.version(name)
  except m.PackageNotFoundError:
    return 'none'
print(f'python={platform.python_version()} jax={version("jax")} jaxlib={version("jaxlib")} '
      f'libtpu={version("libtpu")}')
EOF
)" || versions="python=missing"
  for run in "$RS_HOME"/runs/*/; do
    run="$(basename "$run")"
    if is_running "$run"; then running+=("$run"); fi
  done
  for name in http_proxy https_proxy grpc_proxy all_proxy HTTP_PROXY HTTPS_PROXY GRPC_PROXY ALL_PROXY; do
    if [ -n "${!name:-}" ]; then proxies+=("$name"); fi
  done
  echo "RS_CHECK id=$ID sha=$(basename "$(readlink "$RS_HOME/current" 2>/dev/null || echo none)")" \
    "$versions holders=$(tpu_holders | grep . || echo none)" \
    "lockfile=$([ -e "$LOCKFILE" ] && echo yes || echo no)" \
    "running=$(IFS=,; echo "${running[*]:-none}")" \
    "proxies=$(IFS=,; echo "${proxies[*]:-none}") no_proxy=${no_proxy:-${NO_PROXY:-}}"
}

run() {
  local name="$1" dir
  shift
  local env_vars=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do env_vars+=("$1"); shift; done
  shift  # --
  dir="$(run_dir "$name")"
  if is_running "$name"; then
    echo "RS_RUN id=$ID error=already-running pid=$(cat "$dir/pid")"
    exit 1
  fi
  # A lock file nobody holds is left over from a process that died; libtpu refuses to start
  # while it exists. launch/tpu.py has checked that no process holds the TPU.
  if [ -e "$LOCKFILE" ] && [ -z "$(tpu_holders)" ]; then as_root rm -f "$LOCKFILE"; fi
  mkdir -p "$dir" && rm -f "$dir/status" "$dir/stopped"
  cd "$RS_HOME/current" || exit 1
  # setsid: its own process group, which `stop` signals, and no tie to this ssh session.
  # The inner bash outlives the group's SIGTERM (trap :) to write rs's exit status.
  # shellcheck disable=SC2016  # $@ and $? belong to the inner bash
  setsid env "${env_vars[@]}" bash -c 'trap : TERM; "$@"; echo $? >"$RS_RUN_DIR/status"' run \
    "$(python_of)" -m rs.main "$@" </dev/null >"$dir/worker-$ID.log" 2>&1 &
  echo $! >"$dir/pid"
  echo "RS_RUN id=$ID pid=$!"
}

status() {
  local dir state
  dir="$(run_dir "$1")"
  if is_running "$1"; then
    state=running
  elif [ -e "$dir/status" ]; then
    state="exited-$(cat "$dir/status")"
  elif [ -e "$dir/pid" ]; then
    state=killed  # gone without writing its status: killed with its group
  else
    state=absent
  fi
  echo "RS_STATUS id=$ID state=$state stopped=$([ -e "$dir/stopped" ] && echo yes || echo no)" \
    "last=$(tail -n 1 "$dir/worker-$ID.log" 2>/dev/null | tr -cd '[:print:]' | cut -c1-300)"
}

stop() {
  local dir waited=0
  dir="$(run_dir "$1")"
  if is_running "$1"; then
    touch "$dir/stopped"
    kill -TERM -- "-$(cat "$dir/pid")"
    while is_running "$1" && [ "$waited" -lt "$2" ]; do sleep 1; waited=$((waited + 1)); done
  fi
  status "$1"
}

free() {
  local holders pids
  holders="$(tpu_holders)"
  IFS=, read -ra pids <<<"$holders"
  if [ ${#pids[@]} -gt 0 ]; then as_root kill -9 "${pids[@]}"; fi
  as_root rm -f "$LOCKFILE"
  echo "RS_FREE id=$ID killed=${holders:-none}"
}

export RS_RUN_DIR
verb="${1:-}"
shift || true
case "$verb" in
  setup) setup "$@" ;;
  check) check ;;
  run) RS_RUN_DIR="$(run_dir "$1")"; run "$@" ;;
  status) status "$@" ;;
  stop) stop "$@" ;;
  free) free ;;
  *) echo "worker.sh: unknown verb '$verb': give setup, check, run, status, stop or free" >&2
     exit 2 ;;
esac
