"""MixerBlock: token-by-token decoding from ``init_carry`` equals the whole-sequence call, for every
activation, pre- and post-norm, and mixers whose state does and does not depend on the width."""

import jax
import numpy as np
import pytest

from jaxattn.nn import S4D, S5, LinearAttention, MixerBlock
from jaxattn.nn.blocks import ACTIVATIONS
from tests.nn.test_attention_layers import run_steps

MIXERS = {
    "linear_attention": lambda: LinearAttention(num_heads=2, head_dim=4, short_conv=3, rotary=True),
    "s4d": lambda: S4D(state_size=8, mode="recurrence", dt_min=0.01, dt_max=0.5),  # a state per feature
    "s5": lambda: S5(state_size=8, blocks=2),
}


NORMS = [(True, "layer"), (False, "layer"), (True, "batch")]
# The activation is the block's, whatever the mixer: every activation with one mixer, and every
# mixer (its carry, its width dependence) with every norm placement.
CASES = sorted({("linear_attention", a, p, n) for a in ACTIVATIONS for p, n in NORMS}
               | {(m, ACTIVATIONS[0], p, n) for m in MIXERS for p, n in NORMS})


@pytest.mark.parametrize("mixer,activation,prenorm,norm", CASES)
def test_step_from_init_carry_equals_call(mixer, activation, prenorm, norm):
    block = MixerBlock(MIXERS[mixer](), norm=norm, prenorm=prenorm, activation=activation, dropout=0.3)
    x = jax.random.normal(jax.random.key(0), (2, 9, 6))
    variables = block.init(jax.random.key(1), x)
    # run_steps starts from block.init_carry(batch, features=6), unbound, and calls block.step per token.
    stepped = run_steps(block, variables, x)
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(block.apply(variables, x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_init_carry_is_the_mixers(mixer):
    """The block's carry is its mixer's, leaf by leaf: the same structure, shapes, dtypes and values."""
    carry = MixerBlock(MIXERS[mixer]()).init_carry(3, 5)
    want = MIXERS[mixer]().init_carry(3, 5)
    assert jax.tree.structure(carry) == jax.tree.structure(want)
    for got_leaf, want_leaf in zip(jax.tree.leaves(carry), jax.tree.leaves(want)):
        assert got_leaf.dtype == want_leaf.dtype
        np.testing.assert_array_equal(np.asarray(got_leaf), np.asarray(want_leaf))
    if mixer == "s4d":
        assert carry.shape == (3, 5, 4)


def test_init_carry_needs_the_width_where_the_mixer_does():
    with pytest.raises(ValueError, match="pass `features`"):
        MixerBlock(S4D(state_size=8)).init_carry(3)
