# %% [markdown]
# # Every sequence mixer, whole-sequence and token by token
#
# Every mixer in `jaxattn.nn` (S4, S4D, S5, linear attention, DeltaNet, softmax and tensor
# attention) has one face, `jaxattn.nn.SequenceMixer`:
#
# * `__call__(x [B, L, H], *, segment_ids=None, train=False) -> [B, L, H]` on whole sequences;
# * `init_carry(batch_size, features)` and `step(carry, x_t [B, H]) -> (carry, y_t [B, H])` to decode
#   token by token (a recurrent state, a KV cache, or a ring buffer of the last tokens).
#
# This notebook builds each registered mixer (`jaxattn.nn.MIXERS`) with its default options (or, where
# those cannot decode, its first variant that can: S4 needs `l_max`), applies it
# to a small input, runs `step` over the same tokens, and checks that the two agree position by
# position (`y_t` of `step` equals `__call__(x)[:, t]` to float32 rounding). It also lists the named
# `VARIANTS` of each mixer and which of them see later tokens (the non-causal ones, which cannot decode).
#
# Open it as a notebook with `pip install jupytext jupyterlab` and then, in JupyterLab, *Open With ->
# Notebook* on this `.py` file (or convert it: `jupytext --to ipynb notebooks/mixers.py`).

# %%
import jax
import jax.numpy as jnp
import numpy as np

from jaxattn.nn import MIXERS, make_mixer

BATCH, LENGTH, FEATURES = 2, 12, 16
# S4's step builds each feature's dense N x N system; 16 states instead of 64 keep this notebook quick.
SMALLER = {"s4": {"state_size": 16}}
x = jax.random.normal(jax.random.key(0), (BATCH, LENGTH, FEATURES))
print(f"{len(MIXERS)} registered mixers: {', '.join(sorted(MIXERS))}")


# %% [markdown]
# ## `__call__` against `step`
#
# `init_carry` needs no parameters (it runs on the unbound module); `step` is applied with the same
# variables as `__call__` through `module.apply(..., method=module.step)`, once per token.

# %%
def decode_token_by_token(mixer, variables, x):
    """``[B, L, H]`` outputs of ``step`` from ``init_carry``, one token at a time."""
    carry = mixer.init_carry(x.shape[0], x.shape[-1])
    step = jax.jit(lambda carry, x_t: mixer.apply(variables, carry, x_t, method=mixer.step))
    outputs = []
    for t in range(x.shape[1]):
        carry, y_t = step(carry, x[:, t])
        outputs.append(y_t)
    return jnp.stack(outputs, axis=1)


def decodable_options(name):
    """The mixer's default options, or its first variant whose ``decode_capacity`` is not 0 (with ``SMALLER``)."""
    for variant in ({}, *MIXERS[name].VARIANTS.values()):
        options = {**variant, **SMALLER.get(name, {})}
        mixer = make_mixer(name, options)
        if mixer.is_causal and mixer.decode_capacity != 0:
            return options
    raise ValueError(f"{name}: no configuration decodes")


rows = []
for name in sorted(MIXERS):
    options = decodable_options(name)
    mixer = make_mixer(name, options)
    assert mixer.decode_capacity is None or mixer.decode_capacity >= LENGTH, (name, mixer.decode_capacity)
    # Jitted: one compilation is quicker than dispatching the initialisers' many small ops one by one.
    variables = jax.jit(mixer.init)(jax.random.key(1), x)
    whole = jax.jit(mixer.apply)(variables, x)
    stepped = decode_token_by_token(mixer, variables, x)
    difference = float(jnp.max(jnp.abs(stepped - whole)))
    parameters = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    scale = float(jnp.max(jnp.abs(whole)))
    rows.append((f"{name} {options or ''}", type(mixer).__name__, parameters, scale, difference))

print(f"{'mixer':<38} {'class':<20} {'params':>7} {'max |y|':>8} {'max |step - call|':>18} {'relative':>9}")
for name, cls, parameters, scale, difference in rows:
    print(f"{name:<38} {cls:<20} {parameters:>7} {scale:>8.3f} {difference:>18.2e} {difference / scale:>9.1e}")

# %% [markdown]
# Every difference is float32 rounding relative to the outputs' size (plain linear attention, with
# no normaliser, has outputs in the hundreds), so the recurrent form of each mixer computes what its
# parallel form does:

# %%
for name, _, _, scale, difference in rows:
    assert difference <= 1e-5 * scale, (name, difference, scale)
print("step == __call__ for every mixer")

# %% [markdown]
# ## Variants, and which of them see later tokens
#
# Each mixer lists named option sets (`VARIANTS`, documented in its docstring). A mixer declares
# whether it is causal as configured (`is_causal`, and `noncausal_options()`: the settings that let
# an output see later tokens); causal consumers such as `jaxattn.models.LanguageModel` and `step`
# refuse the others, naming the option.

# %%
for name in sorted(MIXERS):
    for variant, options in MIXERS[name].VARIANTS.items():
        mixer = make_mixer(name, dict(options))
        sees = mixer.noncausal_options()
        print(f"{name:<18} {variant:<24} {'causal' if mixer.is_causal else 'non-causal: ' + repr(sees)}")

# %% [markdown]
# A non-causal mixer whose later input moves its earlier outputs; its `step` refuses to run:

# %%
name, variant = next((n, v) for n in sorted(MIXERS) for v, o in MIXERS[n].VARIANTS.items()
                     if not make_mixer(n, dict(o)).is_causal)
mixer = make_mixer(name, dict(MIXERS[name].VARIANTS[variant]))
variables = jax.jit(mixer.init)(jax.random.key(2), x)
apply = jax.jit(mixer.apply)
moved = apply(variables, x.at[:, -1].add(1.0)) - apply(variables, x)
print(f"{name}:{variant}: the last input moves the first output by {float(jnp.max(jnp.abs(moved[:, 0]))):.3f}")
assert float(jnp.max(jnp.abs(moved[:, 0]))) > 1e-3
try:
    mixer.apply(variables, mixer.init_carry(BATCH, FEATURES), x[:, 0], method=mixer.step)
except ValueError as refusal:
    print("step refused:", refusal)
else:
    raise AssertionError("a non-causal mixer must refuse step")
