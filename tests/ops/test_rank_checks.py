"""Every op refuses an array of the wrong rank, naming the argument and the layout it expects,
instead of reading it as another layout (a ``[T, D]`` scan input as ``[B, T]``)."""

import re

import jax.numpy as jnp
import pytest

from jaxattn.ops import (
    apply_rotary, attention_distillation_loss, causal_conv1d, diagonal_scan, fft_convolution, linear_attention,
    s4_kernel, s4d_kernel, softmax_attention, tensor_attention, tensor_attention_poly,
)
from jaxattn.parallel.sequence import sequence_parallel_diagonal_scan, sequence_parallel_linear_attention

BTHD = jnp.ones((2, 5, 3, 4))
THD = BTHD[0]  # one sequence without its batch axis
MODES = jnp.ones((3, 4), jnp.complex64)  # [H, P]

CASES = {
    "diagonal_scan": (lambda: diagonal_scan(jnp.ones((5, 3)), jnp.ones((5, 3))), "a", "B, T, D, ..."),
    "linear_attention": (lambda: linear_attention(BTHD, BTHD, THD), "v", "B, T, H, D"),
    "softmax_attention": (lambda: softmax_attention(THD, BTHD, BTHD), "q", "B, T, H, D"),
    "tensor_attention": (lambda: tensor_attention(BTHD, BTHD, BTHD, BTHD, THD), "v2", "B, T, H, D"),
    "tensor_attention_poly": (lambda: tensor_attention_poly(THD, THD, THD, THD, THD, degree=1), "q", "B, T, H, D"),
    "attention_distillation_loss": (lambda: attention_distillation_loss(BTHD, BTHD, THD, THD), "phi_q", "B, T, H, F"),
    "apply_rotary": (lambda: apply_rotary(THD, jnp.arange(5)), "x", "B, T, H, D"),
    "causal_conv1d": (lambda: causal_conv1d(jnp.ones((5, 3)), jnp.ones((4, 3))), "x", "B, T, C"),
    "fft_convolution": (lambda: fft_convolution(jnp.ones((5, 3)), jnp.ones((3, 5))), "u", "B, L, H"),
    "s4d_kernel": (lambda: s4d_kernel(MODES[0], MODES[0], MODES[0], jnp.ones(3), 8), "lam", "H, P"),
    "s4_kernel": (lambda: s4_kernel(MODES, MODES, MODES, MODES, MODES, jnp.ones((3, 1)), 8), "step", "H"),
    "sequence_parallel_diagonal_scan": (
        lambda: sequence_parallel_diagonal_scan(jnp.ones((5, 3)), jnp.ones((5, 3)), mesh=_mesh()), "a", "B, T, D, ..."
    ),
    "sequence_parallel_linear_attention": (
        lambda: sequence_parallel_linear_attention(THD, BTHD, BTHD, mesh=_mesh()), "q", "B, T, H, D"
    ),
}


def _mesh():
    from jaxattn.parallel.mesh import make_mesh

    return make_mesh(sequence=1, data=1)


@pytest.mark.parametrize("op", CASES)
def test_wrong_rank_is_refused_naming_the_argument(op):
    call, argument, layout = CASES[op]
    with pytest.raises(ValueError, match=re.escape(f"`{argument}` must be [{layout}]")):
        call()


def test_rotary_positions_must_match_the_sequence():
    with pytest.raises(ValueError, match=r"`positions` must be \[B, T\] = \(2, 5\) or \[T\]"):
        apply_rotary(BTHD, jnp.arange(4))
