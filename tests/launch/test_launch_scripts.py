"""The launch scripts without a cluster: the local launcher's failure handling, the TPU script's
gcloud commands (dry run, and against a stand-in gcloud) and the SLURM script's srun line."""

import os
import pathlib
import shlex
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"


def _stand_in(directory: pathlib.Path, name: str, body: str) -> None:
    """An executable ``name`` in ``directory`` that logs its arguments to ``calls`` and runs ``body``."""
    path = directory / name
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{directory}/calls"\n{body}\n')
    path.chmod(0o755)


@pytest.mark.parametrize("script", ["local_multiprocess.sh", "tpu_pod.sh", "slurm_gpu.sbatch", "gpu_run.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True).returncode == 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _launcher_probe(tmp_path):
    """A module for the launcher to run instead of training: records its settings; process 1 fails."""
    (tmp_path / "probe.py").write_text(
        "import os, sys, time\n"
        "index = os.environ['JAXATTN_PROCESS_ID']\n"
        "keys = ('JAXATTN_COORDINATOR_ADDRESS', 'JAXATTN_NUM_PROCESSES', 'XLA_FLAGS', 'JAX_PLATFORMS')\n"
        "with open(os.path.join(sys.argv[1], f'env_{index}'), 'w') as f:\n"
        "    f.write('|'.join([str(os.getpid()), *[os.environ.get(k, '') for k in keys], *sys.argv[2:]]))\n"
        "if index == '1':\n"
        "    while not os.path.exists(os.path.join(sys.argv[1], 'env_0')):\n"
        "        time.sleep(0.05)\n"
        "    sys.exit(3)\n"
        "time.sleep(120)\n"
    )


def test_launcher_stops_every_process_when_one_fails(tmp_path):
    _launcher_probe(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHON=sys.executable,
               XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_cpu_enable_fast_math=false")
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(LAUNCH / "local_multiprocess.sh"), "--devices-per-process=3", f"--log-dir={tmp_path / 'logs'}",
         "--module=probe", "--quiet", "2", str(tmp_path), "--flag=x"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - start < 30, "the launcher waited for the surviving process instead of stopping it"
    assert "process 1 exited with status 3" in result.stderr
    records = [(tmp_path / f"env_{i}").read_text().split("|") for i in range(2)]
    for record in records:
        pid, address, count, xla_flags, platforms, *args = record
        assert address.startswith("127.0.0.1:") and count == "2" and platforms == "cpu" and args == ["--flag=x"]
        assert xla_flags.split() == ["--xla_cpu_enable_fast_math=false", "--xla_force_host_platform_device_count=3"]
    survivor = int(records[0][0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(survivor):
        time.sleep(0.1)
    assert not _alive(survivor), "process 0 outlived the launcher"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["process_0.log", "process_1.log"]


TPU_ARGS = ["--name", "pod", "--zone=us-central2-b", "--accelerator-type", "v4-32", "--project=proj", "--",
            "python", "-m", "experiments.train", "--config=experiments/configs/s5_digits.py", "--workdir=/mnt/run 1"]


def _tpu_pod(tmp_path, *args, gcloud_body="exit 0"):
    _stand_in(tmp_path, "gcloud", gcloud_body)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    result = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), *args], env=env, capture_output=True, text=True,
                            timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return result, calls


def test_tpu_dry_run_prints_create_install_and_run_on_every_worker(tmp_path):
    result, calls = _tpu_pod(tmp_path, "--dry-run", *TPU_ARGS)
    assert result.returncode == 0, result.stderr
    assert calls == [], "a dry run must not call gcloud"
    commands = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]
    zone = ["--zone=us-central2-b", "--project=proj"]
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert commands[0] == [*tpu, "describe", "pod", *zone, "--format=value(state)"]
    assert commands[1] == [*tpu, "create", "pod", *zone, "--accelerator-type=v4-32",
                           "--version=tpu-ubuntu2204-base"]
    assert commands[2][:5] == [*tpu, "scp"] and commands[2][6:] == ["pod:jaxattn.tar.gz", *zone, "--worker=all"]
    assert commands[3][:9] == [*tpu, "ssh", "pod", *zone, "--worker=all"]
    assert "pip install -q -e '.[tpu]'" in commands[3][9]
    run = commands[4]
    assert run[:9] == [*tpu, "ssh", "pod", *zone, "--worker=all"] and len(commands) == 5
    remote = run[9].removeprefix("--command=")
    assert "JAXATTN_DISTRIBUTED=cluster" in remote
    assert remote.endswith(" && python -m experiments.train --config=experiments/configs/s5_digits.py "
                           "--workdir=/mnt/run\\ 1")


def test_tpu_reuses_a_ready_vm_and_reports_a_failed_command(tmp_path):
    # The stand-in answers READY to `describe` and fails the training command (the last ssh).
    body = ('case "$*" in *describe*) echo READY ;; *experiments.train*) exit 7 ;; esac')
    result, calls = _tpu_pod(tmp_path, "--skip-install", *TPU_ARGS, gcloud_body=body)
    assert result.returncode == 7
    assert "reusing TPU VM pod" in result.stderr and "failed on at least one worker" in result.stderr
    assert [call.split()[4] for call in calls] == ["describe", "ssh"]


@pytest.mark.parametrize("args, message", [
    (["--detach", "--delete"], "use one of them"),
    (["--name", "Bad_Name"], "must be lowercase"),
    (["--python", "python3; rm -rf /"], "must name an interpreter"),
])
def test_tpu_bad_options_fail_before_gcloud(tmp_path, args, message):
    result, calls = _tpu_pod(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr and calls == []


@pytest.mark.parametrize(
    "slurm, device_ids",
    [
        (dict(SLURM_NTASKS_PER_NODE="8", SLURM_NTASKS="16", SLURM_GPUS_ON_NODE="8"), "unset"),
        (dict(SLURM_NTASKS_PER_NODE="1", SLURM_NTASKS="2", SLURM_GPUS_PER_NODE="h100:4"), "0,1,2,3"),
        (dict(SLURM_NTASKS_PER_NODE="1", SLURM_NTASKS="1", SLURM_GPUS_ON_NODE="4"), "unset"),
    ],
)
def test_slurm_script_runs_one_srun_step(tmp_path, slurm, device_ids):
    _stand_in(tmp_path, "srun", 'echo "devices=${JAXATTN_LOCAL_DEVICE_IDS:-unset}"')
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=str(REPO),
               PYTHON="python3", **slurm)
    env.pop("JAXATTN_LOCAL_DEVICE_IDS", None)
    result = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--workdir=/shared/run"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        "srun --kill-on-bad-exit=1 python3 -m experiments.train --workdir=/shared/run"]
    assert result.stdout.strip() == f"devices={device_ids}"
