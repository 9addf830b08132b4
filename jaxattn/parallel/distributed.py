"""Starting the JAX distributed runtime for runs over several processes (hosts).

Every process of a multi-process run executes the same program; before its first JAX call each one
connects to a coordinator (process 0), which tells it the global device set. Where the processes
learn the coordinator's address, their number and their own index, in order of precedence:

1. Explicit settings: ``coordinator_address`` (``host:port`` of process 0), ``num_processes``,
   ``process_id`` and optionally ``local_device_ids``, from the flags of the same names (see
   :func:`define_flags`) or the variables ``JAXATTN_COORDINATOR_ADDRESS``, ``JAXATTN_NUM_PROCESSES``,
   ``JAXATTN_PROCESS_ID``, ``JAXATTN_LOCAL_DEVICE_IDS`` (flags win). Any machines, any launcher.
2. The cluster: ``jax.distributed.initialize()`` without arguments reads Cloud TPU pod metadata,
   a SLURM job step's ``SLURM_*`` variables or Open MPI's ``OMPI_*`` ones. Mode ``"auto"`` (the
   default) does so when it sees one of those with more than one process (or a Cloud TPU VM);
   mode ``"cluster"`` always does (``--distributed=cluster`` / ``JAXATTN_DISTRIBUTED=cluster``).
3. Otherwise a plain single-process run (mode ``"off"`` forces it).

On CPU, cross-process collectives go through gloo. The runtime needs to start before anything
touches a JAX backend (``jax.devices()``, any computation), so entry points call
:func:`initialize_from_flags` first thing in ``main``.

See docs/architecture.md#training-and-checkpointing (several processes).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Optional

import jax
import numpy as np
from absl import flags, logging

MODES = ("auto", "cluster", "off")
ENV_PREFIX = "JAXATTN_"
# Explicit settings: (field, flag, environment variable).
_EXPLICIT_FIELDS = (
    ("coordinator_address", "--coordinator_address", "JAXATTN_COORDINATOR_ADDRESS"),
    ("num_processes", "--num_processes", "JAXATTN_NUM_PROCESSES"),
    ("process_id", "--process_id", "JAXATTN_PROCESS_ID"),
)
# Variables JAX's SLURM detection reads; inside an ``srun`` step all of them are set.
_SLURM_STEP_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """What the user asked for (unvalidated); :func:`plan` turns it into what to do."""

    mode: str = "auto"
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    local_device_ids: Optional[tuple[int, ...]] = None
    initialization_timeout: int = 300


@dataclasses.dataclass(frozen=True)
class Plan:
    """``kind``: ``"single"`` (start nothing), ``"explicit"`` or ``"cluster"``; ``kwargs`` for
    ``jax.distributed.initialize``; ``source`` says in words where the settings came from."""

    kind: str
    source: str
    kwargs: dict = dataclasses.field(default_factory=dict)


def parse_device_ids(text: str | Sequence[int] | None, *, name: str = "local_device_ids") -> Optional[tuple[int, ...]]:
    """``"0,1,3"`` (or a sequence) -> ``(0, 1, 3)``; ``None`` or ``""`` -> ``None``."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        ids = tuple(int(str(part).strip()) for part in parts)
    except ValueError:
        raise ValueError(f"{name} must be comma-separated non-negative integers, got {text!r}") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"{name} must be distinct non-negative integers, got {text!r}")
    return ids


def _int_or_none(value, name: str) -> Optional[int]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def settings_from(values: Mapping[str, object] | None = None,
                  environ: Mapping[str, str] | None = None) -> DistributedSettings:
    """Settings from ``values`` (e.g. flag values; ``None`` entries unset), falling back to the
    ``JAXATTN_*`` variables of ``environ`` (default ``os.environ``)."""
    values = dict(values or {})
    environ = os.environ if environ is None else environ

    def pick(field: str):
        if values.get(field) is not None:
            return values[field], f"--{field}"
        variable = ENV_PREFIX + field.upper()
        value = environ.get(variable)
        return (value, variable) if value not in (None, "") else (None, variable)

    mode, _ = pick("distributed")
    mode = (mode or "auto").strip().lower()
    address, _ = pick("coordinator_address")
    num_processes, num_name = pick("num_processes")
    process_id, id_name = pick("process_id")
    device_ids, ids_name = pick("local_device_ids")
    timeout, timeout_name = pick("initialization_timeout")
    return DistributedSettings(
        mode=mode,
        coordinator_address=address.strip() if isinstance(address, str) and address.strip() else None,
        num_processes=_int_or_none(num_processes, num_name),
        process_id=_int_or_none(process_id, id_name),
        local_device_ids=parse_device_ids(device_ids, name=ids_name),
        initialization_timeout=300 if (t := _int_or_none(timeout, timeout_name)) is None else t,
    )


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"coordinator_address must be HOST:PORT (process 0's address and a free port), got {address!r}"
        )


def _slurm_processes(environ: Mapping[str, str]) -> Optional[int]:
    """The number of tasks of the SLURM job step this process belongs to, or ``None`` outside SLURM.

    Raises ValueError for a multi-task job whose process was not started by ``srun`` (it would wait
    for partners that never come)."""
    if "SLURM_JOB_ID" not in environ or "SLURM_NTASKS" not in environ:
        return None
    ntasks = _int_or_none(environ["SLURM_NTASKS"], "SLURM_NTASKS")
    if ntasks is None or ntasks <= 1:
        return ntasks
    missing = [name for name in _SLURM_STEP_VARIABLES if name not in environ]
    if missing:
        raise ValueError(
            f"SLURM job {environ['SLURM_JOB_ID']} has SLURM_NTASKS={ntasks} but this process is not part of an "
            f"srun job step ({', '.join(missing)} unset): start one process per task with `srun python -m ...` "
            "(see launch/slurm_gpu.sbatch), or pass --distributed=off for a single process"
        )
    return ntasks


def _on_cloud_tpu_vm() -> bool:
    """Whether JAX found TPU chips and libtpu on this machine (the flag JAX's own TPU cluster
    detection reads; a private attribute, so missing counts as no)."""
    try:
        return bool(getattr(importlib.import_module("jax._src.cloud_tpu_init"), "running_in_cloud_tpu_vm", False))
    except ImportError:
        return False


def plan(settings: DistributedSettings, environ: Mapping[str, str] | None = None, *,
         on_tpu_vm: Optional[bool] = None) -> Plan:
    """Decides, without starting anything, how to start the runtime; raises ValueError naming the
    setting for inconsistent ones."""
    environ = os.environ if environ is None else environ
    if settings.mode not in MODES:
        raise ValueError(f"--distributed (JAXATTN_DISTRIBUTED) must be one of {MODES}, got {settings.mode!r}")
    if settings.initialization_timeout < 1:
        raise ValueError(f"initialization_timeout must be >= 1 second, got {settings.initialization_timeout}")
    given = {field: getattr(settings, field) for field, _, _ in _EXPLICIT_FIELDS}
    explicit = any(value is not None for value in given.values())
    if settings.mode == "off":
        if explicit or settings.local_device_ids is not None:
            set_names = [flag for field, flag, _ in _EXPLICIT_FIELDS if given[field] is not None]
            raise ValueError(
                f"--distributed=off contradicts the settings given ({', '.join(set_names) or '--local_device_ids'})"
            )
        return Plan("single", "--distributed=off")
    timeout = {"initialization_timeout": settings.initialization_timeout}
    local_ids = {} if settings.local_device_ids is None else {"local_device_ids": list(settings.local_device_ids)}
    if settings.mode == "cluster":
        # JAX's detection fills in whatever is not given (e.g. only a coordinator port of one's own).
        given_kwargs = {field: value for field, value in given.items() if value is not None}
        if settings.coordinator_address is not None:
            _check_address(settings.coordinator_address)
        return Plan("cluster", "cluster auto-detection (--distributed=cluster)",
                    dict(**given_kwargs, **local_ids, **timeout))
    if explicit:
        missing = [f"{flag} (or {variable})" for field, flag, variable in _EXPLICIT_FIELDS if given[field] is None]
        if missing:
            raise ValueError(
                "explicit distributed settings need all of --coordinator_address, --num_processes and --process_id; "
                f"missing {', '.join(missing)}"
            )
        _check_address(settings.coordinator_address)
        if settings.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {settings.num_processes}")
        if not 0 <= settings.process_id < settings.num_processes:
            raise ValueError(
                f"process_id must be in [0, num_processes={settings.num_processes}), got {settings.process_id}"
            )
        if settings.num_processes == 1 and settings.mode == "auto":
            return Plan("single", "num_processes=1")
        return Plan(
            "explicit",
            f"coordinator {settings.coordinator_address}",
            dict(coordinator_address=settings.coordinator_address, num_processes=settings.num_processes,
                 process_id=settings.process_id, cluster_detection_method="deactivate", **local_ids, **timeout),
        )
    slurm_tasks = _slurm_processes(environ)
    if slurm_tasks is not None and slurm_tasks > 1:
        return Plan("cluster", f"SLURM job step ({slurm_tasks} tasks)", dict(**local_ids, **timeout))
    ompi_size = _int_or_none(environ.get("OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_SIZE")
    if ompi_size is not None and ompi_size > 1:
        return Plan("cluster", f"Open MPI ({ompi_size} ranks)", dict(**local_ids, **timeout))
    if environ.get("TPU_WORKER_HOSTNAMES") or (_on_cloud_tpu_vm() if on_tpu_vm is None else on_tpu_vm):
        return Plan("cluster", "Cloud TPU VM", dict(**local_ids, **timeout))
    if settings.local_device_ids is not None:
        raise ValueError("--local_device_ids applies to a distributed run; give the coordinator settings too, "
                         "or restrict devices with CUDA_VISIBLE_DEVICES in a single process")
    return Plan("single", "no coordinator settings and no cluster found")


def initialize(settings: DistributedSettings | None = None, environ: Mapping[str, str] | None = None) -> Plan:
    """Starts the distributed runtime as :func:`plan` decides (a no-op for a single process or when
    it is already running). Call before any other JAX call."""
    settings = settings_from() if settings is None else settings
    chosen = plan(settings, environ)
    if chosen.kind == "single" or jax.distributed.is_initialized():
        return chosen
    # Cross-process collectives on CPU (gloo is JAX's default today; set it for versions without one).
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**chosen.kwargs)
    except ValueError as error:
        if chosen.kind == "cluster":
            raise ValueError(
                f"{chosen.source}: JAX could not detect the cluster's settings ({error}); pass --coordinator_address, "
                "--num_processes and --process_id explicitly"
            ) from error
        raise
    expected = chosen.kwargs.get("num_processes")
    if expected is not None and jax.process_count() != expected:
        raise RuntimeError(f"asked for {expected} processes but the runtime has {jax.process_count()}")
    return chosen


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines ``--distributed``, ``--coordinator_address``, ``--num_processes``, ``--process_id``,
    ``--local_device_ids`` and ``--initialization_timeout`` (unset: the ``JAXATTN_*`` variables)."""
    flags.DEFINE_enum("distributed", None, list(MODES),
                      "How to start multi-process runs: 'auto' (explicit settings, else a detected SLURM step, "
                      "Open MPI job or Cloud TPU VM, else one process), 'cluster' (always JAX's cluster "
                      "detection) or 'off'. Default: $JAXATTN_DISTRIBUTED or 'auto'.", flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 for an explicit multi-process run "
                        "(default $JAXATTN_COORDINATOR_ADDRESS).", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "Number of processes of an explicit multi-process run "
                         "(default $JAXATTN_NUM_PROCESSES).", flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes) "
                         "(default $JAXATTN_PROCESS_ID).", flag_values=flag_values)
    flags.DEFINE_string("local_device_ids", None, "Comma-separated accelerator ids this process uses, e.g. all "
                        "GPUs of a node when SLURM runs one task per node (default $JAXATTN_LOCAL_DEVICE_IDS).",
                        flag_values=flag_values)
    flags.DEFINE_integer("initialization_timeout", None, "Seconds to wait for every process to connect "
                         "(default $JAXATTN_INITIALIZATION_TIMEOUT or 300).", flag_values=flag_values)


def initialize_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Plan:
    """:func:`initialize` from the flags of :func:`define_flags` (and the environment); then logs
    the runtime (process 0) and keeps the INFO logs of other processes quiet."""
    names = ("distributed", "coordinator_address", "num_processes", "process_id", "local_device_ids",
             "initialization_timeout")
    chosen = initialize(settings_from({name: flag_values[name].value for name in names}))
    quiet_other_processes()
    log_runtime(chosen)
    return chosen


def is_main_process() -> bool:
    """Process 0 writes the shared files (config, metrics, summary, plots) and logs."""
    return jax.process_index() == 0


def quiet_other_processes() -> None:
    """Processes other than 0 log warnings and errors only (their INFO would repeat process 0's)."""
    if not is_main_process():
        logging.set_verbosity(logging.WARNING)


def runtime_summary() -> str:
    """``"2 process(es), 4 cpu device(s) in all, 2 local to process 0"``."""
    return (f"{jax.process_count()} process(es), {jax.device_count()} {jax.devices()[0].platform} device(s) in all, "
            f"{jax.local_device_count()} local to process {jax.process_index()}")


def log_runtime(chosen: Plan) -> None:
    if is_main_process():
        logging.info("Runtime: %s (%s)", runtime_summary(), chosen.source)


def check_shared_directory(path: str) -> None:
    """Raises on every process unless all processes see ``path`` as one directory (checkpoints and
    the work directory's files need storage shared by all hosts: NFS, a GCS FUSE mount, ...)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    os.makedirs(path, exist_ok=True)
    # 31 bits: the broadcast goes through a JAX array, int32 unless x64 is on.
    token = np.int32(secrets.randbits(31)) if is_main_process() else np.int32(0)
    marker = os.path.join(path, ".shared_directory_check")
    if is_main_process():
        with open(marker, "w") as f:
            f.write(str(int(token)))
    token = int(multihost_utils.broadcast_one_to_all(token))
    try:
        with open(marker) as f:
            sees = f.read().strip() == str(token)
    except OSError:
        sees = False
    seen = np.asarray(multihost_utils.process_allgather(np.int32(sees)))
    multihost_utils.sync_global_devices("jaxattn_shared_directory_checked")
    if is_main_process():
        os.remove(marker)
    blind = [index for index, ok in enumerate(seen.reshape(-1)) if not ok]
    if blind:
        raise RuntimeError(
            f"{path} is not shared by all processes (process(es) {blind} do not see process 0's files): "
            "multi-process runs need a work directory on storage every host mounts (NFS, a GCS FUSE mount, ...)"
        )
