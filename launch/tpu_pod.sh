#!/usr/bin/env bash
# Runs one command on every worker (host) of a Cloud TPU VM slice, e.g. a v4-32 pod slice:
#
#   launch/tpu_pod.sh [OPTIONS] [-- COMMAND...]
#   TPU_NAME=my-pod TPU_ACCELERATOR_TYPE=v4-32 launch/tpu_pod.sh -- \
#       python -m experiments.train --config=experiments/configs/s5_listops.py --workdir=/mnt/runs/listops
#
# 1. Creates the TPU VM (gcloud compute tpus tpu-vm create) unless `describe` finds it; starts it
#    if it is stopped.
# 2. Copies this checkout (tracked and untracked, not ignored, files) to every worker and installs
#    it there with the `tpu` extra into ~/jaxattn/.venv (--worker=all). --skip-install skips this.
# 3. Runs COMMAND in ~/jaxattn on every worker at once, with that virtual environment first on
#    PATH. The workers find each other by themselves: jax.distributed.initialize() reads the TPU
#    metadata (JAXATTN_DISTRIBUTED=cluster is set for that). --workdir must be storage every
#    worker mounts (a GCS bucket through gcsfuse, Filestore NFS): process 0 writes the metrics and
#    summary, every process writes its shards of each checkpoint, and a run refuses to start when
#    the workers do not see one directory.
#
# Options (each also an environment variable):
#   --name NAME               TPU VM name (TPU_NAME, default jaxattn-tpu)
#   --zone ZONE               zone (TPU_ZONE, default us-central2-b)
#   --accelerator-type TYPE   e.g. v4-8, v4-32, v5p-16, v6e-16 (TPU_ACCELERATOR_TYPE, default v4-8)
#   --version VERSION         TPU software version (TPU_VERSION, default tpu-ubuntu2204-base; v5e
#                             wants v2-alpha-tpuv5-lite, v6e v2-alpha-tpuv6e: see
#                             `gcloud compute tpus tpu-vm versions list --zone=ZONE`)
#   --project PROJECT         Google Cloud project (TPU_PROJECT; default gcloud's configured one)
#   --python PYTHON           interpreter for the workers' virtual environment, 3.11 or newer as
#                             jax needs (TPU_PYTHON, default python3.11; apt-installed if missing)
#   --spot                    create a Spot TPU VM (TPU_SPOT=1)
#   --skip-install            do not copy and install the code (TPU_SKIP_INSTALL=1)
#   --detach                  start COMMAND under nohup and return; logs in ~/jaxattn/logs on each
#                             worker (TPU_DETACH=1)
#   --delete                  delete the TPU VM after COMMAND ends (TPU_DELETE=1)
#   --dry-run                 print the commands instead of running them
# Without COMMAND, the default experiment runs: python -m experiments.train
# --config=experiments/configs/s5_digits.py --workdir=runs/s5_digits (fine on one host only).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

name="${TPU_NAME:-jaxattn-tpu}"
zone="${TPU_ZONE:-us-central2-b}"
accelerator_type="${TPU_ACCELERATOR_TYPE:-v4-8}"
version="${TPU_VERSION:-tpu-ubuntu2204-base}"
project="${TPU_PROJECT:-}"
python="${TPU_PYTHON:-python3.11}"
spot="${TPU_SPOT:-0}"
skip_install="${TPU_SKIP_INSTALL:-0}"
detach="${TPU_DETACH:-0}"
delete_after="${TPU_DELETE:-0}"
dry_run=0
remote_dir="jaxattn"  # under the remote user's home

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --name=*) name="${1#*=}"; shift ;;
    --zone) zone="${2:?--zone needs a value}"; shift 2 ;;
    --zone=*) zone="${1#*=}"; shift ;;
    --accelerator-type) accelerator_type="${2:?--accelerator-type needs a value}"; shift 2 ;;
    --accelerator-type=*) accelerator_type="${1#*=}"; shift ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --version=*) version="${1#*=}"; shift ;;
    --project) project="${2:?--project needs a value}"; shift 2 ;;
    --project=*) project="${1#*=}"; shift ;;
    --python) python="${2:?--python needs a value}"; shift 2 ;;
    --python=*) python="${1#*=}"; shift ;;
    --spot) spot=1; shift ;;
    --skip-install) skip_install=1; shift ;;
    --detach) detach=1; shift ;;
    --delete) delete_after=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "tpu_pod.sh: unknown option $1 (the command goes after --)" >&2; usage ;;
  esac
done
if [[ $# -eq 0 ]]; then
  set -- python -m experiments.train --config=experiments/configs/s5_digits.py --workdir=runs/s5_digits
fi
if [[ "$detach" == 1 && "$delete_after" == 1 ]]; then
  echo "tpu_pod.sh: --detach returns while the command runs, so --delete would stop it; use one of them" >&2
  exit 2
fi
if [[ ! "$python" =~ ^python3(\.[0-9]+)?$ ]]; then
  echo "tpu_pod.sh: --python must name an interpreter like python3.11, got '$python'" >&2
  exit 2
fi
if [[ ! "$name" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]]; then
  echo "tpu_pod.sh: TPU name '$name' must be lowercase letters, digits and hyphens, starting with a letter" >&2
  exit 2
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gcloud_tpu=(gcloud compute tpus tpu-vm)
common=(--zone="$zone")
if [[ -n "$project" ]]; then common+=(--project="$project"); fi

# Runs a command, or with --dry-run prints it (shell-quoted, so it can be pasted).
run() {
  if [[ $dry_run -eq 1 ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# 1. Create or reuse the TPU VM.
if [[ $dry_run -eq 1 ]]; then
  run "${gcloud_tpu[@]}" describe "$name" "${common[@]}" --format='value(state)'
  echo "# (dry run: assuming no TPU VM named $name exists yet)"
  state=""
else
  state="$("${gcloud_tpu[@]}" describe "$name" "${common[@]}" --format='value(state)' 2>/dev/null || true)"
fi
case "$state" in
  "")
    create=("${gcloud_tpu[@]}" create "$name" "${common[@]}"
      --accelerator-type="$accelerator_type" --version="$version")
    if [[ "$spot" == 1 ]]; then create+=(--spot); fi
    run "${create[@]}"
    ;;
  READY) echo "tpu_pod.sh: reusing TPU VM $name ($zone)" >&2 ;;
  STOPPED) run "${gcloud_tpu[@]}" start "$name" "${common[@]}" ;;
  *)
    echo "tpu_pod.sh: TPU VM $name is in state $state; wait until it is READY (or delete it) and retry" >&2
    exit 1
    ;;
esac

# 2. Copy this checkout to every worker and install it.
if [[ "$skip_install" != 1 ]]; then
  archive="$(mktemp -t jaxattn_code.XXXXXX)"
  trap 'rm -f "$archive"' EXIT
  # Tracked files as they are in the working tree, plus untracked ones git does not ignore.
  if [[ $dry_run -eq 1 ]]; then
    echo "# (dry run: would pack the checkout at $repo_root into $archive)"
  else
    (cd "$repo_root" && git ls-files -z --cached --others --exclude-standard |
      tar --null --ignore-failed-read -czf "$archive" -T -)
  fi
  run "${gcloud_tpu[@]}" scp "$archive" "$name:$remote_dir.tar.gz" "${common[@]}" --worker=all
  # Unpacked over the previous copy: its .venv (and any run directories inside) stay.
  install="set -euo pipefail; mkdir -p ~/$remote_dir"
  install+=" && tar -xzf ~/$remote_dir.tar.gz -C ~/$remote_dir && cd ~/$remote_dir"
  # Ubuntu images may lack the interpreter or its venv module: install them once.
  install+=" && { test -x .venv/bin/pip || $python -m venv .venv || { sudo apt-get update -qq"
  install+=" && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $python $python-venv"
  install+=" && $python -m venv .venv; }; }"
  install+=" && .venv/bin/pip install -q --upgrade pip"
  install+=" && .venv/bin/pip install -q -e '.[tpu]'"
  run "${gcloud_tpu[@]}" ssh "$name" "${common[@]}" --worker=all --command="$install"
fi

# 3. The same command on every worker.
quoted_command="$(printf ' %q' "$@")"
remote="cd ~/$remote_dir && export PATH=\"\$HOME/$remote_dir/.venv/bin:\$PATH\" JAXATTN_DISTRIBUTED=cluster"
if [[ "$detach" == 1 ]]; then
  remote+=" && mkdir -p logs && nohup${quoted_command} > logs/\$(hostname).log 2>&1 < /dev/null &"
else
  remote+=" &&${quoted_command}"
fi
status=0
run "${gcloud_tpu[@]}" ssh "$name" "${common[@]}" --worker=all --command="$remote" || status=$?
if [[ $status -ne 0 ]]; then
  echo "tpu_pod.sh: the command failed on at least one worker (status $status)" >&2
fi

if [[ "$delete_after" == 1 ]]; then
  run "${gcloud_tpu[@]}" delete "$name" "${common[@]}" --quiet
fi
exit "$status"
