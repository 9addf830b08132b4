"""The experiment configuration: its fields, defaults and start-up validation.

Every experiment config starts from :func:`default_config` and overrides fields; the train
loop calls :func:`validate_config` first, so a misspelt field or a bad value fails at start-up
with a message naming the field (``config.model.norm``), not minutes into a run.

``config.mesh`` lays the devices out (:mod:`jaxattn.parallel.mesh`):

* ``data``, ``fsdp``, ``tensor``, ``sequence``: the size of each mesh axis; exactly one may be -1,
  the devices left over (default ``data=-1``, the others 1: plain data parallelism). The batch is
  split over ``data x fsdp`` (so the batch sizes must be multiples of it), positions over
  ``sequence`` (the task's sequence length must be a multiple), weights and Adam moments over
  ``fsdp`` along their model dimension and over ``tensor`` along heads, GLU width and SSM modes.
  The product of the fixed sizes must divide the number of devices; without a -1 the mesh takes
  that many devices.
* ``preset``: a named layout from :data:`jaxattn.parallel.MESH_PRESETS` (``data``, ``fsdp``,
  ``tensor``, ``sequence``, ``fsdp_tensor``, ``data_sequence``, ``data_fsdp``), or ``""`` for none.
  It sets all four sizes; a size field changed from its default overrides the preset's value,
  e.g. ``--config.mesh.preset=fsdp_tensor --config.mesh.tensor=4``.

See docs/architecture.md#configs.
"""

from typing import Optional

import ml_collections

from jaxattn.data import TASKS
from jaxattn.nn.arithmetic import KINDS as ARITHMETIC_KINDS
from jaxattn.nn.arithmetic import Arithmetic
from jaxattn.nn.blocks import ACTIVATIONS, NORMS, POOLINGS
from jaxattn.nn.registry import MIXERS, mixer_class, mixer_defaults
from jaxattn.ops.lmul import BACKWARDS, OFFSETS, SEMANTICS
from jaxattn.parallel.mesh import DEFAULT_MESH_SIZES, mesh_shape, resolve_mesh_sizes
from jaxattn.train.optimizer import DEFAULT_SSM_PARAM_PATTERNS

MODEL_KINDS = ("classifier", "language_model")
# Fields whose contents are free-form dicts checked by their consumer (task builder, mixer).
_FREE_FORM = ("task.options", "model.mixer_options", "model.layer_mixers")
# The layer kind of config.mixer_pattern that means config.model.mixer with its options.
MAIN_MIXER_KIND = "mixer"


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = ml_collections.ConfigDict({"name": "digits", "options": ml_collections.ConfigDict()})
    config.model = ml_collections.ConfigDict(
        {
            "kind": "classifier",  # or "language_model" (per-token targets, causal mixers)
            "mixer": "s5",
            "mixer_options": mixer_options("s5"),
            # A hybrid stack: layer kinds by name, repeated over the layers ("" : every layer is `mixer`).
            # "mixer" names the mixer above; any other name is a key of `layer_mixers`.
            "mixer_pattern": "",
            "layer_mixers": ml_collections.ConfigDict(),
            "d_model": 64,
            "num_layers": 4,
            "norm": "layer",
            "prenorm": True,
            "activation": "half_glu1",
            "dropout": 0.0,
            "pooling": "mean",
            # Product arithmetic of Dense layers and attention products (jaxattn.nn.arithmetic).
            "arithmetic": ml_collections.ConfigDict(
                {
                    "kind": "exact",  # or "lmul", "fp8_e4m3", "fp8_e5m2"
                    "mantissa_bits": 3,
                    "semantics": "bitwise",
                    "offset": "paper",
                    "backward": "straight_through",
                    "dense": True,
                    "attention": True,
                }
            ),
        }
    )
    config.optimizer = ml_collections.ConfigDict(
        {
            "lr": 1e-3,
            "ssm_lr": 1e-3,
            "weight_decay": 0.05,
            "warmup_epochs": 1.0,
            "min_lr_ratio": 0.0,
            "grad_clip_norm": 0.0,
            "ssm_param_patterns": DEFAULT_SSM_PARAM_PATTERNS,
        }
    )
    config.train = ml_collections.ConfigDict(
        {
            "batch_size": 64,
            "eval_batch_size": 256,
            "num_epochs": 10,
            "log_every_steps": 10,
            "eval_every_steps": 0,  # 0: once per epoch
            "checkpoint_every_steps": 50,
            "keep_checkpoints": 3,
            # Weight of the auxiliary losses mixers sow (MoM's router balance; jaxattn.nn.registry).
            "aux_loss_weight": 0.01,
        }
    )
    config.mesh = ml_collections.ConfigDict({"preset": "", **DEFAULT_MESH_SIZES})
    return config


def mixer_options(mixer: str, **overrides) -> dict:
    """Every option of a registered mixer with its default, updated by ``overrides``.

    Configs list all options so that any of them can be overridden from the command line
    (``--config.model.mixer_options.dt_max=0.5``): a flag cannot add a field that is not there.
    """
    return {**mixer_defaults(mixer_class(mixer, overrides)), **overrides}


def mixer_pattern(model_config: ml_collections.ConfigDict) -> Optional[tuple[tuple[str, dict], ...]]:
    """``config.model.mixer_pattern`` as ``(mixer name, options)`` pairs for the models' ``mixer_pattern``
    (None: every layer is ``config.model.mixer``).

    The pattern is a comma-separated list of layer kinds, e.g. ``"mixer,mixer,mixer,attention"``:
    ``"mixer"`` is ``config.model.mixer`` with ``mixer_options``, any other kind an entry
    ``config.model.layer_mixers.KIND = {"mixer": NAME, "mixer_options": {...}}``. Raises
    ``ValueError`` naming the field for an unknown kind, an entry without its two fields, an unused
    entry, or a mixer's unknown options.
    """
    kinds = [kind.strip() for kind in model_config.mixer_pattern.split(",") if kind.strip()]
    entries = dict(model_config.layer_mixers)
    if not kinds:
        _require(not entries, "model.layer_mixers", f" ({sorted(entries)}) are only used by config.model.mixer_pattern, "
                                                    "which is empty")
        return None
    unused = sorted(set(entries) - set(kinds))
    _require(not unused, "model.layer_mixers", f": {unused} not named in config.model.mixer_pattern")
    pattern = []
    for kind in kinds:
        if kind == MAIN_MIXER_KIND:
            pattern.append((model_config.mixer, dict(model_config.mixer_options)))
            continue
        _require(kind in entries, "model.mixer_pattern", f": layer kind {kind!r} is neither {MAIN_MIXER_KIND!r} nor a "
                                                         f"key of config.model.layer_mixers ({sorted(entries)})")
        entry = dict(entries[kind])
        _require(set(entry) == {"mixer", "mixer_options"}, f"model.layer_mixers.{kind}",
                 f" must have exactly the fields 'mixer' and 'mixer_options', got {sorted(entry)}")
        _require(entry["mixer"] in MIXERS, f"model.layer_mixers.{kind}.mixer",
                 f"={entry['mixer']!r} is not one of {sorted(MIXERS)}")
        try:
            options = mixer_options(entry["mixer"], **dict(entry["mixer_options"]))
        except ValueError as error:
            raise ValueError(f"config.model.layer_mixers.{kind}.mixer_options: {error}") from None
        pattern.append((entry["mixer"], options))
    _require(model_config.num_layers % len(pattern) == 0, "model.num_layers",
             f"={model_config.num_layers} must be a multiple of the {len(pattern)} layers of config.model.mixer_pattern")
    return tuple(pattern)


def _same_kind(value, default) -> bool:
    """Type check that lets an int stand for a float and a list for a tuple, but not a bool for a number."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def _check_fields(config, reference, prefix: str) -> None:
    for key in config.keys():
        path = f"{prefix}.{key}"
        if key not in reference:
            raise ValueError(f"{path} is not a config field; fields of {prefix}: {sorted(reference.keys())}")
        value, default = config[key], reference[key]
        if isinstance(default, ml_collections.ConfigDict):
            if not isinstance(value, (ml_collections.ConfigDict, dict)):
                raise ValueError(f"{path} must be a group of fields, got {value!r}")
            if path[len("config."):] not in _FREE_FORM:
                _check_fields(value, default, path)
        elif not _same_kind(value, default):
            raise ValueError(f"{path}={value!r} must be of type {type(default).__name__}")
    for key in reference.keys():
        if key not in config:
            raise ValueError(f"{prefix}.{key} is missing")


def arithmetic_from_config(model_config: ml_collections.ConfigDict) -> Optional[Arithmetic]:
    """The model's product :class:`Arithmetic`, or None for exact arithmetic."""
    options = dict(model_config.arithmetic)
    return None if options["kind"] == "exact" else Arithmetic(**options)


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"config.{field}{message}")


def mesh_sizes(mesh_config: ml_collections.ConfigDict, num_devices: Optional[int] = None) -> dict[str, int]:
    """The mesh axis sizes ``config.mesh`` asks for (the preset with its overrides); with
    ``num_devices``, the -1 axis filled in. Raises ``ValueError`` naming the field."""
    options = dict(mesh_config)
    try:
        sizes = resolve_mesh_sizes(options.pop("preset"), **options)
        return sizes if num_devices is None else mesh_shape(sizes, num_devices)
    except ValueError as error:
        raise ValueError(f"config.{error}") from None


def validate_config(config: ml_collections.ConfigDict, num_devices: Optional[int] = None) -> None:
    """Raises ``ValueError`` naming the first bad field of ``config``.

    With ``num_devices`` it also checks that the mesh fits that many devices (left out, nothing
    here touches the JAX backend, so the config can be checked before ``jax.distributed`` starts).
    """
    _check_fields(config, default_config(), "config")
    model, opt, train = config.model, config.optimizer, config.train
    _require(config.task.name in TASKS, "task.name", f"={config.task.name!r} is not one of {sorted(TASKS)}")
    _require(model.mixer in MIXERS, "model.mixer", f"={model.mixer!r} is not one of {sorted(MIXERS)}")
    try:
        mixer_options(model.mixer, **model.mixer_options)
    except ValueError as error:
        raise ValueError(f"config.model.mixer_options: {error}") from None
    mixer_pattern(model)
    _require(train.aux_loss_weight >= 0, "train.aux_loss_weight", f"={train.aux_loss_weight} must be >= 0")
    _require(model.kind in MODEL_KINDS, "model.kind", f"={model.kind!r} is not one of {MODEL_KINDS}")
    _require(
        model.kind != "language_model" or model.norm == "layer", "model.norm",
        f"={model.norm!r}: a language model needs 'layer' (BatchNorm statistics over time leak the future)",
    )
    _require(model.norm in NORMS, "model.norm", f"={model.norm!r} is not one of {NORMS}")
    _require(model.activation in ACTIVATIONS, "model.activation", f"={model.activation!r} is not one of {ACTIVATIONS}")
    _require(model.pooling in POOLINGS, "model.pooling", f"={model.pooling!r} is not one of {sorted(POOLINGS)}")
    _require(0.0 <= model.dropout < 1.0, "model.dropout", f"={model.dropout} must be in [0, 1)")
    for field in ("d_model", "num_layers"):
        _require(model[field] >= 1, f"model.{field}", f"={model[field]} must be >= 1")
    arithmetic = model.arithmetic
    _require(arithmetic.kind in ("exact", *ARITHMETIC_KINDS), "model.arithmetic.kind",
             f"={arithmetic.kind!r} is not one of {('exact', *ARITHMETIC_KINDS)}")
    _require(arithmetic.semantics in SEMANTICS, "model.arithmetic.semantics",
             f"={arithmetic.semantics!r} is not one of {SEMANTICS}")
    _require(arithmetic.offset in OFFSETS, "model.arithmetic.offset", f"={arithmetic.offset!r} is not one of {OFFSETS}")
    _require(arithmetic.backward in BACKWARDS, "model.arithmetic.backward",
             f"={arithmetic.backward!r} is not one of {BACKWARDS}")
    _require(1 <= arithmetic.mantissa_bits <= 23, "model.arithmetic.mantissa_bits",
             f"={arithmetic.mantissa_bits} must be in [1, 23]")
    _require(opt.lr > 0, "optimizer.lr", f"={opt.lr} must be > 0")
    for field in ("ssm_lr", "weight_decay", "warmup_epochs", "grad_clip_norm"):
        _require(opt[field] >= 0, f"optimizer.{field}", f"={opt[field]} must be >= 0")
    _require(0.0 <= opt.min_lr_ratio <= 1.0, "optimizer.min_lr_ratio", f"={opt.min_lr_ratio} must be in [0, 1]")
    for field in ("batch_size", "eval_batch_size", "num_epochs", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        _require(train[field] >= 1, f"train.{field}", f"={train[field]} must be >= 1")
    _require(train.eval_every_steps >= 0, "train.eval_every_steps", f"={train.eval_every_steps} must be >= 0")
    _require(
        train.checkpoint_every_steps % train.log_every_steps == 0,
        "train.checkpoint_every_steps",
        f"={train.checkpoint_every_steps} must be a multiple of train.log_every_steps={train.log_every_steps} "
        "(so a resumed run logs exactly what an uninterrupted one does)",
    )
    mesh_sizes(config.mesh, num_devices)
