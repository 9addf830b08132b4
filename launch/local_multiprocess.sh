#!/usr/bin/env bash
# Runs N CPU processes of one multi-process JAX job on this machine, e.g. to try a multi-host
# setup on a laptop:
#
#   launch/local_multiprocess.sh [OPTIONS] N [ARGS...]
#   launch/local_multiprocess.sh 2 --config=experiments/configs/s5_digits.py --workdir=runs/mp
#
# Every process runs `python -m MODULE ARGS...` (MODULE: experiments.train) and reaches the others
# through a coordinator that process 0 starts on a free loopback port (JAXATTN_COORDINATOR_ADDRESS,
# JAXATTN_NUM_PROCESSES, JAXATTN_PROCESS_ID; see jaxattn/parallel/distributed.py). Each process has
# its own CPU device(s). The script waits for all of them; if one fails it kills the others and
# exits with the failed process's status. Ctrl-C (or SIGTERM to this script) sends SIGTERM to every
# process, which JAX's distributed runtime takes as a preemption notice: the processes agree on a
# step, save a checkpoint there and exit (status 143); rerunning the command resumes. Processes
# still running after a grace period are killed.
#
# Options (before N; each also as an environment variable):
#   --devices-per-process K   CPU devices per process (JAXATTN_DEVICES_PER_PROCESS, default 1)
#   --log-dir DIR             per-process logs process_<i>.log (JAXATTN_LOG_DIR; default WORKDIR/logs
#                             when ARGS has --workdir, else a new temporary directory); appended to
#   --module MODULE           the Python module to run (JAXATTN_MODULE, default experiments.train)
#   --port PORT               the coordinator port (JAXATTN_PORT; default a free one)
#   --quiet                   do not echo process 0's log to the terminal
#   --grace SECONDS           how long stopped processes may take to save and exit (JAXATTN_STOP_GRACE,
#                             default 60)
# PYTHON picks the interpreter (default: .venv/bin/python of the repository if present, else python3).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
devices_per_process="${JAXATTN_DEVICES_PER_PROCESS:-1}"
log_dir="${JAXATTN_LOG_DIR:-}"
module="${JAXATTN_MODULE:-experiments.train}"
port="${JAXATTN_PORT:-}"
grace="${JAXATTN_STOP_GRACE:-60}"
echo_main=1
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo_root/.venv/bin/python" ]]; then PYTHON="$repo_root/.venv/bin/python"; else PYTHON=python3; fi
fi

while [[ $# -gt 0 ]]; do
  case "$1" in
    --devices-per-process) devices_per_process="${2:?--devices-per-process needs a value}"; shift 2 ;;
    --devices-per-process=*) devices_per_process="${1#*=}"; shift ;;
    --log-dir) log_dir="${2:?--log-dir needs a value}"; shift 2 ;;
    --log-dir=*) log_dir="${1#*=}"; shift ;;
    --module) module="${2:?--module needs a value}"; shift 2 ;;
    --module=*) module="${1#*=}"; shift ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    --grace) grace="${2:?--grace needs a value}"; shift 2 ;;
    --grace=*) grace="${1#*=}"; shift ;;
    --quiet) echo_main=0; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    -*) echo "local_multiprocess.sh: unknown option $1 (options go before N)" >&2; usage ;;
    *) break ;;
  esac
done

[[ $# -ge 1 ]] || usage
num_processes="$1"
shift
if ! [[ "$num_processes" =~ ^[1-9][0-9]*$ ]]; then
  echo "local_multiprocess.sh: N must be a positive integer, got '$num_processes'" >&2
  exit 2
fi
if ! [[ "$grace" =~ ^[0-9]+$ ]]; then
  echo "local_multiprocess.sh: --grace must be a whole number of seconds, got '$grace'" >&2
  exit 2
fi
if ! [[ "$devices_per_process" =~ ^[1-9][0-9]*$ ]]; then
  echo "local_multiprocess.sh: --devices-per-process must be a positive integer, got '$devices_per_process'" >&2
  exit 2
fi

# Per-process logs: next to the run's outputs when there is a --workdir.
if [[ -z "$log_dir" ]]; then
  workdir=""
  previous=""
  for arg in "$@"; do
    case "$arg" in
      --workdir=*) workdir="${arg#--workdir=}" ;;
      *) [[ "$previous" == "--workdir" ]] && workdir="$arg" ;;
    esac
    previous="$arg"
  done
  if [[ -n "$workdir" ]]; then log_dir="$workdir/logs"; else log_dir="$(mktemp -d -t jaxattn_logs.XXXXXX)"; fi
fi
mkdir -p "$log_dir"

if [[ -z "$port" ]]; then
  port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
coordinator="127.0.0.1:$port"

# The device count replaces any given in XLA_FLAGS (e.g. a test set-up's 8 fake devices).
base_xla_flags="$(printf '%s' "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')"

pids=()
tail_pid=""
# stop_all SECONDS: SIGTERM to every process, SIGKILL to those still running SECONDS later.
stop_all() {
  local pid alive deadline=$((SECONDS + $1))
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while [[ $SECONDS -lt $deadline ]]; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -n "$tail_pid" ]]; then kill "$tail_pid" 2>/dev/null || true; fi
}
trap 'echo "local_multiprocess.sh: interrupted, stopping all processes (they save a checkpoint first)" >&2
  stop_all "$grace"; exit 130' INT TERM

echo "local_multiprocess.sh: $num_processes process(es) x $devices_per_process CPU device(s)," \
  "coordinator $coordinator, logs in $log_dir" >&2
for ((i = 0; i < num_processes; i++)); do
  log="$log_dir/process_$i.log"
  printf '==== %s: process %d of %d: %s -m %s %s\n' \
    "$(date -u +%FT%TZ)" "$i" "$num_processes" "$PYTHON" "$module" "$*" >>"$log"
  # Process 0's log is echoed from here on (earlier runs' lines stay in the file only).
  if [[ $i -eq 0 ]]; then echo_from=$(($(wc -c <"$log") + 1)); fi
  JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" \
  XLA_FLAGS="$base_xla_flags --xla_force_host_platform_device_count=$devices_per_process" \
  PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}" \
  JAXATTN_COORDINATOR_ADDRESS="$coordinator" \
  JAXATTN_NUM_PROCESSES="$num_processes" \
  JAXATTN_PROCESS_ID="$i" \
    "$PYTHON" -m "$module" "$@" >>"$log" 2>&1 &
  pids+=("$!")
done
if [[ $echo_main -eq 1 ]]; then
  tail -c "+$echo_from" -f --pid="${pids[0]}" "$log_dir/process_0.log" >&2 &
  tail_pid="$!"
fi

# Poll rather than `wait -n`, so the first failure is seen whichever process it is.
status=0
remaining=$num_processes
declare -A done_pids=()
while [[ $remaining -gt 0 ]]; do
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    [[ -n "${done_pids[$pid]:-}" ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    code=0
    wait "$pid" || code=$?
    done_pids[$pid]=1
    remaining=$((remaining - 1))
    if [[ $code -ne 0 ]]; then
      echo "local_multiprocess.sh: process $i exited with status $code; stopping the others. Its log ends:" >&2
      tail -n 30 "$log_dir/process_$i.log" >&2
      status=$code
      break 2
    fi
  done
  sleep 0.2
done
if [[ $status -ne 0 ]]; then
  # The others cannot go on without the failed one (nor checkpoint with it): no grace.
  stop_all 0
  exit "$status"
fi
if [[ -n "$tail_pid" ]]; then wait "$tail_pid" 2>/dev/null || true; fi
echo "local_multiprocess.sh: all $num_processes process(es) finished" >&2
