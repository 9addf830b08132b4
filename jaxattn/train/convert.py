"""Converting a softmax-attention model to linear attention (Hedgehog, Zhang et al. 2024).

1. Copy every weight the two models share (projections, norms, encoder, decoder).
2. Distil: train only the student's feature maps so that, layer by layer on the teacher's own
   queries and keys, the linear attention weights match the softmax ones
   (:func:`jaxattn.ops.attention_distillation_loss`).
3. Fine-tune the whole student on the task (the ordinary train loop with ``initial_variables``).

:func:`attention_fit` measures, layer by layer, how far the distilled weights are from the teacher's.

See docs/linear_attention.md#hedgehog.
"""

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxattn.nn.linear_attention import HedgehogFeatureMap
from jaxattn.ops import apply_rotary, attention_distillation_loss
from jaxattn.ops.softmax_attention import softmax_attention_weights

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
    for name in _blocks_in_order(state["intermediates"]):
        mixer = state["intermediates"][name]["mixer"]
        q, k = (mixer[part]["__call__"][0] for part in ("query", "key"))
        q, k = (a.reshape(*a.shape[:2], num_heads, -1) for a in (q, k))
        if rotary:
            positions = jnp.arange(q.shape[1])
            q, k = apply_rotary(q, positions), apply_rotary(k, positions)
        layers.append((q, k))
    return layers


def _blocks_in_order(names) -> list[str]:
    return sorted((name for name in names if name.startswith("blocks_")), key=lambda n: int(n[7:]))


def _student_features(map_params: dict, layers: list[tuple]) -> list[tuple]:
    """Per layer, the student's ``(phi(q), phi(k))`` ``[B, T, H, 2D]`` on the teacher's ``(q, k)``."""
    feature_map = HedgehogFeatureMap()
    return [
        tuple(feature_map.apply({"params": map_params[name][part]}, x) for part, x in zip(MAP_NAMES, (q, k)))
        for name, (q, k) in zip(_blocks_in_order(map_params), layers)
    ]


def hedgehog_maps_loss(map_params: dict, layers: list[tuple], *, causal: bool) -> jax.Array:
    """Sum over layers of the distillation loss with the student's own feature maps
    (:class:`jaxattn.nn.linear_attention.HedgehogFeatureMap`, ``phi = softmax([x W, -x W])`` per head).

    ``map_params``: ``{block: {"query_map": {"weight": W}, "key_map": ...}}``, ``W [H, D, D]``.
    """
    total = 0.0
    for (q, k), (phi_q, phi_k) in zip(layers, _student_features(map_params, layers)):
        total = total + attention_distillation_loss(q, k, phi_q, phi_k, causal=causal)
    return total


def hedgehog_map_params(student_params: dict) -> dict:
    """``{block: {"query_map": ..., "key_map": ...}}``: the feature-map weights of every block's mixer."""
    return {name: {part: student_params[name]["mixer"][part] for part in MAP_NAMES}
            for name in _blocks_in_order(student_params)}


def attention_fit(map_params: dict, layers: list[tuple], *, causal: bool, eps: float = 1e-6) -> list[dict]:
    """Per layer, how well the linear attention weights ``W`` (normalised ``phi(q) phi(k)^T``) match the
    teacher's ``A = softmax(q k^T / sqrt(D))``, each a mean over batch, heads and queries ``i``:

    - ``teacher_entropy``: ``-sum_j A_ij log A_ij`` (nats; ``log T`` is uniform, 0 one-hot);
    - ``teacher_max``: ``max_j A_ij``, the weight of the query's top key (how spiky softmax is);
    - ``cross_entropy``: ``-sum_j A_ij log W_ij``, the distillation loss of the layer;
    - ``kl``: ``cross_entropy - teacher_entropy`` = ``KL(A_i || W_i)``, 0 for a perfect fit;
    - ``total_variation``: ``sum_j |A_ij - W_ij| / 2`` in [0, 1], the share of each row's weight misplaced;
    - ``top_key_agreement``: how often ``argmax_j W_ij = argmax_j A_ij``.
    """
    fits = []
    for (q, k), (phi_q, phi_k) in zip(layers, _student_features(map_params, layers)):
        teacher = softmax_attention_weights(q, k, causal=causal)  # [B, H, T, T]
        scores = jnp.einsum("bihf,bjhf->bhij", phi_q, phi_k, precision=jax.lax.Precision.HIGHEST)
        if causal:
            scores = jnp.tril(scores)
        student = scores / (jnp.sum(scores, axis=-1, keepdims=True) + eps)
        teacher_log = jnp.log(jnp.where(teacher > 0, teacher, 1.0))
        entropy = -jnp.sum(teacher * teacher_log, axis=-1)
        cross_entropy = -jnp.sum(teacher * jnp.log(jnp.where(teacher > 0, student + eps, 1.0)), axis=-1)
        fits.append({
            "teacher_entropy": float(jnp.mean(entropy)),
            "teacher_max": float(jnp.mean(jnp.max(teacher, axis=-1))),
            "cross_entropy": float(jnp.mean(cross_entropy)),
            "kl": float(jnp.mean(cross_entropy - entropy)),
            "total_variation": float(jnp.mean(0.5 * jnp.sum(jnp.abs(teacher - student), axis=-1))),
            "top_key_agreement": float(jnp.mean(jnp.argmax(teacher, -1) == jnp.argmax(student, -1))),
        })
    return fits


def distill_hedgehog_maps(
    student_params: dict, batches: Iterable[list[tuple]], *, causal: bool, learning_rate: float = 1e-2,
    weight_decay: float = 0.0,
) -> tuple[dict, list[float]]:
    """Trains the ``query_map`` / ``key_map`` weights of every block's mixer, all layers jointly with
    one optimiser (Adam; AdamW when ``weight_decay > 0``) on the teacher's queries and keys (each
    element of ``batches``: :func:`teacher_queries_and_keys`); returns the updated parameters and the
    loss per step."""
    map_params = hedgehog_map_params(student_params)
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay) if weight_decay > 0 else optax.adam(learning_rate)
    opt_state = optimizer.init(map_params)

    @jax.jit
    def update(map_params, opt_state, layers):
        loss, grads = jax.value_and_grad(hedgehog_maps_loss)(map_params, layers, causal=causal)
        updates, opt_state = optimizer.update(grads, opt_state, map_params)
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
