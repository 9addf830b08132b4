"""Converting a softmax-attention model to linear attention (Hedgehog, Zhang et al. 2024).

1. Copy every weight the two models share (projections, norms, encoder, decoder).
2. Distil: train only the student's feature maps so that, layer by layer on the teacher's own
   queries and keys, the linear attention weights match the softmax ones
   (:func:`jaxattn.ops.attention_distillation_loss`).
3. Fine-tune the whole student on the task (the ordinary train loop with ``initial_variables``).

See docs/linear_attention.md#hedgehog.
"""

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxattn.nn.linear_attention import HedgehogFeatureMap
from jaxattn.ops import apply_rotary, attention_distillation_loss

MAP_NAMES = ("query_map", "key_map")


def transfer_parameters(source, target) -> tuple[dict, list[str]]:
    """``target`` with every leaf that ``source`` has at the same path and shape replaced.

    Returns the merged tree and the paths left at their initial values (new in the target).
    """
    flat_source, flat_target = flatten_dict(source, sep="/"), flatten_dict(target, sep="/")
    merged, fresh = {}, []
    for path, value in flat_target.items():
        if path in flat_source and flat_source[path].shape == value.shape:
            merged[path] = flat_source[path]
        else:
            merged[path] = value
            fresh.append(path)
    return unflatten_dict(merged, sep="/"), fresh


def teacher_queries_and_keys(model, variables, inputs, lengths, *, num_heads: int, rotary: bool) -> list[tuple]:
    """Per layer, the teacher's ``(q, k)`` ``[B, T, H, D]`` as its attention sees them (after RoPE)."""
    _, state = model.apply(
        variables, inputs, lengths, train=False, mutable=["intermediates"],
        capture_intermediates=lambda module, method: module.name in ("query", "key") and method == "__call__",
    )
    layers = []
    blocks = sorted((name for name in state["intermediates"] if name.startswith("blocks_")), key=lambda n: int(n[7:]))
    for name in blocks:
        mixer = state["intermediates"][name]["mixer"]
        q, k = (mixer[part]["__call__"][0] for part in ("query", "key"))
        q, k = (a.reshape(*a.shape[:2], num_heads, -1) for a in (q, k))
        if rotary:
            positions = jnp.arange(q.shape[1])
            q, k = apply_rotary(q, positions), apply_rotary(k, positions)
        layers.append((q, k))
    return layers


def hedgehog_maps_loss(map_params: dict, layers: list[tuple], *, causal: bool) -> jax.Array:
    """Sum over layers of the distillation loss with the student's own feature maps
    (:class:`jaxattn.nn.linear_attention.HedgehogFeatureMap`, ``phi = softmax([x W, -x W])`` per head).

    ``map_params``: ``{block: {"query_map": {"weight": W}, "key_map": ...}}``, ``W [H, D, D]``.
    """
    total = 0.0
    feature_map = HedgehogFeatureMap()
    for name, (q, k) in zip(sorted(map_params, key=lambda n: int(n[7:])), layers):
        phi_q, phi_k = (feature_map.apply({"params": map_params[name][part]}, x) for part, x in zip(MAP_NAMES, (q, k)))
        total = total + attention_distillation_loss(q, k, phi_q, phi_k, causal=causal)
    return total


def distill_hedgehog_maps(
    student_params: dict, batches: Iterable[list[tuple]], *, causal: bool, learning_rate: float = 1e-2
) -> tuple[dict, list[float]]:
    """Trains the ``query_map`` / ``key_map`` weights of every block's mixer; returns the updated
    parameters and the loss per step."""
    map_params = {
        name: {part: block["mixer"][part] for part in MAP_NAMES}
        for name, block in student_params.items() if name.startswith("blocks_")
    }
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(map_params)

    @jax.jit
    def update(map_params, opt_state, layers):
        loss, grads = jax.value_and_grad(hedgehog_maps_loss)(map_params, layers, causal=causal)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(map_params, updates), opt_state, loss

    losses = []
    for layers in batches:
        map_params, opt_state, loss = update(map_params, opt_state, layers)
        losses.append(float(loss))
    params = jax.tree.map(lambda x: x, student_params)
    for name, parts in map_params.items():
        for part, variables in parts.items():
            params[name]["mixer"][part] = variables
    return params, losses
