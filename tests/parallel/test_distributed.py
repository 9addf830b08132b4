"""Starting the distributed runtime: which settings lead where, and clear errors for bad ones.

``plan`` decides without starting anything, so every case runs in this one process; the real
multi-process runs are in tests/train/test_multiprocess.py, the launchers' tests in tests/launch.
"""

import pytest
from absl import flags

from jaxattn.parallel import distributed
from jaxattn.parallel.distributed import DistributedSettings, plan, settings_from

EXPLICIT = dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2)
SLURM_STEP = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "4", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "1"}


def test_nothing_set_is_a_single_process():
    assert plan(DistributedSettings(), {}, on_tpu_vm=False).kind == "single"


def test_explicit_settings_skip_cluster_detection():
    chosen = plan(DistributedSettings(**EXPLICIT, local_device_ids=(0, 1)), SLURM_STEP, on_tpu_vm=True)
    assert chosen.kind == "explicit"
    assert chosen.kwargs == dict(**EXPLICIT, local_device_ids=[0, 1], cluster_detection_method="deactivate",
                                 initialization_timeout=300)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(coordinator_address="10.0.0.1:1234"), "missing --num_processes (or JAXATTN_NUM_PROCESSES), --process_id"),
        (dict(num_processes=2, process_id=0), "missing --coordinator_address"),
        (dict(EXPLICIT, process_id=4), "process_id must be in [0, num_processes=4)"),
        (dict(EXPLICIT, num_processes=0, process_id=0), "num_processes must be >= 1"),
        (dict(EXPLICIT, coordinator_address="10.0.0.1"), "HOST:PORT"),
        (dict(EXPLICIT, coordinator_address="host:99999"), "HOST:PORT"),
        (dict(EXPLICIT, mode="off"), "--distributed=off contradicts"),
        (dict(mode="mpi"), "must be one of ('auto', 'cluster', 'off')"),
        (dict(local_device_ids=(0,)), "--local_device_ids applies to a distributed run"),
        (dict(initialization_timeout=0), "initialization_timeout must be >= 1"),
    ],
)
def test_inconsistent_settings_fail_naming_the_setting(settings, message):
    with pytest.raises(ValueError) as error:
        plan(DistributedSettings(**settings), {}, on_tpu_vm=False)
    assert message in str(error.value)


def test_one_explicit_process_starts_nothing():
    settings = DistributedSettings(coordinator_address="localhost:1", num_processes=1, process_id=0)
    assert plan(settings, {}, on_tpu_vm=False).kind == "single"


def test_slurm_job_step_uses_cluster_detection_and_passes_local_device_ids():
    chosen = plan(DistributedSettings(local_device_ids=(0, 1, 2, 3)), SLURM_STEP, on_tpu_vm=False)
    assert (chosen.kind, chosen.source) == ("cluster", "SLURM job step (4 tasks)")
    assert chosen.kwargs == {"local_device_ids": [0, 1, 2, 3], "initialization_timeout": 300}
    single_task = dict(SLURM_STEP, SLURM_NTASKS="1")
    assert plan(DistributedSettings(), single_task, on_tpu_vm=False).kind == "single"


def test_multi_task_slurm_job_outside_srun_fails():
    batch_step = {k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}
    with pytest.raises(ValueError, match="not part of an srun job step .*SLURM_STEP_NODELIST"):
        plan(DistributedSettings(), batch_step, on_tpu_vm=False)
    assert plan(DistributedSettings(mode="off"), batch_step, on_tpu_vm=False).kind == "single"


@pytest.mark.parametrize(
    "environ, on_tpu_vm, source",
    [
        ({"OMPI_COMM_WORLD_SIZE": "8"}, False, "Open MPI (8 ranks)"),
        ({}, True, "Cloud TPU VM"),
        ({"TPU_WORKER_HOSTNAMES": "a,b"}, False, "Cloud TPU VM"),
    ],
)
def test_other_clusters_are_detected(environ, on_tpu_vm, source):
    chosen = plan(DistributedSettings(), environ, on_tpu_vm=on_tpu_vm)
    assert (chosen.kind, chosen.source, chosen.kwargs) == ("cluster", source, {"initialization_timeout": 300})


def test_cluster_mode_lets_jax_fill_in_what_is_not_given():
    chosen = plan(DistributedSettings(mode="cluster", coordinator_address="head:4000"), {}, on_tpu_vm=False)
    assert chosen.kind == "cluster"
    assert chosen.kwargs == {"coordinator_address": "head:4000", "initialization_timeout": 300}


def test_flags_win_over_environment_variables():
    environ = {"JAXATTN_COORDINATOR_ADDRESS": "a:1", "JAXATTN_NUM_PROCESSES": "3", "JAXATTN_PROCESS_ID": "2",
               "JAXATTN_LOCAL_DEVICE_IDS": "4, 5", "JAXATTN_DISTRIBUTED": "Cluster"}
    settings = settings_from({"process_id": 0, "distributed": None}, environ)
    assert settings == DistributedSettings(mode="cluster", coordinator_address="a:1", num_processes=3, process_id=0,
                                           local_device_ids=(4, 5))
    with pytest.raises(ValueError, match="JAXATTN_NUM_PROCESSES must be an integer"):
        settings_from({}, {"JAXATTN_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match="distinct non-negative"):
        settings_from({"local_device_ids": "1,1"}, {})


def test_flags_reach_the_plan_and_a_single_process_starts_nothing():
    flag_values = flags.FlagValues()
    distributed.define_flags(flag_values)
    flag_values(["prog", "--distributed=off", "--initialization_timeout=5"])
    chosen = distributed.initialize_from_flags(flag_values)
    assert (chosen.kind, chosen.source) == ("single", "--distributed=off")
    assert "1 process(es)" in distributed.runtime_summary()
    distributed.check_shared_directory("/nonexistent/only/checked/with/several/processes")
