"""Train state, its sharded initialisation, and the jitted train and evaluation steps.

Batches are dicts ``{"inputs": [B, L] | [B, L, F], "targets": [B] | [B, L], "lengths": [B]}``
(plus ``"weight": [B]`` at evaluation, 0 for padding rows). Loss and accuracy average over
every scored position: one per sequence, or each position whose per-token target is not -1.

Sharding comes from the logical axis rules alone (:mod:`jaxattn.parallel.mesh`): parameters and
Adam moments follow their parameters' logical names (FSDP over ``fsdp``, tensor parallelism over
``tensor``), batches are split over ``("data", "fsdp")`` and their positions over ``sequence``
(:func:`jaxattn.parallel.batch_spec`), and the model's activation constraints resolve under the
same rules inside the steps.

See docs/architecture.md#sharding-and-meshes.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from jaxattn.nn.registry import AUX_LOSS_COLLECTION
from jaxattn.parallel import LOGICAL_AXIS_RULES, batch_shardings, logical_shardings, replicated


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def _model_inputs(batch):
    return batch["inputs"], batch["lengths"]


def _scored_positions(logits: jax.Array, targets: jax.Array):
    """Per-position cross-entropy, correctness and validity ``[B, L]``.

    Sequence labels (``targets [B]``, ``logits [B, C]``) count as one position; per-token targets
    (``[B, L]``) mark positions without a target with -1.
    """
    if targets.ndim == 1:
        logits, targets = logits[:, None], targets[:, None]
    valid = (targets >= 0).astype(jnp.float32)
    safe_targets = jnp.maximum(targets, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe_targets)
    correct = (jnp.argmax(logits, -1) == safe_targets).astype(jnp.float32)
    return losses, correct, valid


def create_state(model: nn.Module, tx: optax.GradientTransformation, sample_batch, rng: jax.Array, mesh: Mesh):
    """Initialises parameters and optimiser state directly into their shardings.

    Returns:
      ``(state, state_shardings)``.
    """

    def init_variables(key):
        return model.init({"params": key, "dropout": key}, *_model_inputs(sample_batch), train=False)

    abstract_variables = jax.eval_shape(init_variables, rng)
    variable_shardings = logical_shardings(abstract_variables, mesh)
    param_shardings = variable_shardings["params"]
    abstract_opt_state = jax.eval_shape(tx.init, nn.unbox(abstract_variables["params"]))
    # Moments take their parameter's sharding; counters are replicated. Parameters outside an
    # optimiser group appear as MaskedNode (multi_transform) and stay so.
    opt_shardings = optax.tree_map_params(
        tx,
        lambda leaf, sharding: leaf if isinstance(leaf, optax.MaskedNode) else sharding,
        abstract_opt_state,
        param_shardings,
        transform_non_params=lambda _: replicated(mesh),
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )
    shardings = TrainState(
        step=replicated(mesh),
        params=param_shardings,
        batch_stats=variable_shardings.get("batch_stats", {}),
        opt_state=opt_shardings,
    )

    def init_state(key):
        variables = nn.unbox(init_variables(key))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(variables["params"]),
        )

    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        state = jax.jit(init_state, out_shardings=shardings)(rng)
    return state, shardings


def _variables(state: TrainState, params):
    return {"params": params, "batch_stats": state.batch_stats}


def auxiliary_loss(collections) -> Optional[jax.Array]:
    """The sum of every value the mixers sowed into :data:`AUX_LOSS_COLLECTION` (None: none sowed)."""
    sown = jax.tree.leaves(collections.get(AUX_LOSS_COLLECTION, {}))
    return sum(jnp.sum(value) for value in sown) if sown else None


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, shardings: TrainState, mesh: Mesh, *,
                    aux_loss_weight: float = 0.0):
    """Jitted ``(state, batch, dropout_key) -> (state, {"loss", "accuracy"})``; donates the state.

    A model whose mixers sow auxiliary losses (:data:`jaxattn.nn.registry.AUX_LOSS_COLLECTION`) trains
    on ``loss + aux_loss_weight * aux_loss`` and also reports ``"aux_loss"``; ``"loss"`` stays the
    cross-entropy alone, comparable across models.
    """

    def train_step(state: TrainState, batch, dropout_key):
        batch = _constrain_batch(batch, mesh)
        key = jax.random.fold_in(dropout_key, state.step)

        def loss_fn(params):
            logits, updates = model.apply(
                _variables(state, params), *_model_inputs(batch), train=True,
                rngs={"dropout": key}, mutable=["batch_stats", AUX_LOSS_COLLECTION],
            )
            losses, correct, valid = _scored_positions(logits, batch["targets"])
            count = jnp.maximum(jnp.sum(valid), 1.0)
            metrics = {"loss": jnp.sum(losses * valid) / count, "accuracy": jnp.sum(correct * valid) / count}
            total = metrics["loss"]
            aux = auxiliary_loss(updates)
            if aux is not None:
                metrics["aux_loss"] = aux
                total = total + aux_loss_weight * aux
            return total, (metrics, updates)

        (_, (metrics, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, param_updates),
            batch_stats=updates.get("batch_stats", state.batch_stats),
            opt_state=opt_state,
        )
        return new_state, metrics

    jitted = jax.jit(
        train_step,
        # The batch keeps the sharding it arrives with (device_put_batch), constrained inside.
        in_shardings=(shardings, None, replicated(mesh)),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )
    return _in_mesh(jitted, mesh)


def make_eval_step(model: nn.Module, shardings: TrainState, mesh: Mesh):
    """Jitted ``(state, batch) -> {"loss_sum", "correct", "count"}``, weighted by ``batch["weight"]``."""

    def eval_step(state: TrainState, batch):
        batch = _constrain_batch(batch, mesh)
        logits = model.apply(_variables(state, state.params), *_model_inputs(batch), train=False)
        losses, correct, valid = _scored_positions(logits, batch["targets"])
        weight = valid * batch["weight"][:, None]
        return {"loss_sum": jnp.sum(losses * weight), "correct": jnp.sum(correct * weight), "count": jnp.sum(weight)}

    jitted = jax.jit(eval_step, in_shardings=(shardings, None), out_shardings=replicated(mesh))
    return _in_mesh(jitted, mesh)


def _constrain_batch(batch, mesh: Mesh):
    """The batch laid out as :func:`jaxattn.parallel.batch_spec` says (a no-op for batches from
    ``device_put_batch``; host arrays are split the same way)."""
    return jax.lax.with_sharding_constraint(batch, batch_shardings(batch, mesh))


def _in_mesh(fn, mesh: Mesh):
    """Runs ``fn`` with ``mesh`` and the logical axis rules active (for activation constraints)."""

    @functools.wraps(fn)
    def wrapped(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
            return fn(*args)

    return wrapped
