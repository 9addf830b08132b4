# %% [markdown]
# # L-Mul and fp8 products in a trained model
#
# L-Mul ("Addition is All You Need", Luo and Sun 2024) replaces a floating-point product by an
# integer addition of the operands' bit patterns: for `x = (1 + a) 2^e`, `y = (1 + b) 2^f` with
# mantissas rounded to `m` bits,
#
#     L-Mul(x, y) = (1 + a + b + 2^-l(m)) 2^(e + f),
#
# which drops the `a b` term of the exact `(1 + a + b + a b) 2^(e + f)` and adds a constant offset
# instead (`l(m) = m` for `m <= 3`, `3` for `m = 4`, `4` above). `jaxattn.ops.lmul` computes it bit-exactly;
# `jaxattn.nn.arithmetic` puts a whole model's matrix products on L-Mul (or on fp8 operands) without
# changing the model: `with product_arithmetic(Arithmetic(kind=...)):` around `apply`.
#
# This notebook shows single L-Mul products, then briefly trains a softmax-attention digits classifier
# (`experiments/configs/attention_digits.py`, shrunk) with exact products and evaluates the same
# weights with every product in L-Mul or fp8, comparing accuracy and logits.
#
# Open it as a notebook with `pip install jupytext jupyterlab` and then, in JupyterLab, *Open With ->
# Notebook* on this `.py` file (or convert it: `jupytext --to ipynb notebooks/lmul_fp8.py`).

# %%
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import load_config
from jaxattn.data import load_task
from jaxattn.nn.arithmetic import Arithmetic, product_arithmetic
from jaxattn.ops import lmul, round_mantissa
from jaxattn.train import build_model, restore_variables, train_and_evaluate

# %% [markdown]
# ## Single products
#
# L-Mul's relative error depends only on the mantissas, not on the magnitudes. Part of it is rounding
# the operands to `m` bits (`jaxattn.ops.round_mantissa`, what an exact product of `m`-bit operands
# also pays); the rest is the missing `a b` term against the offset, at most about 1/4 (`a, b -> 1`).

# %%
x = jnp.array([1.5, -3.0, 0.1, 1234.5, 1.875])
y = jnp.array([2.25, 0.5, 7.0, -0.01, 1.875])
for a, b, exact, approximate in zip(x, y, x * y, lmul(x, y, mantissa_bits=3)):
    print(f"{float(a):>8g} x {float(b):>6g} = {float(exact):>9.4f}   L-Mul 3-bit {float(approximate):>9.4f}   "
          f"relative error {float(abs(approximate - exact) / abs(exact)):.3f}")

samples = jax.random.normal(jax.random.key(0), (2, 100_000))
exact_products = samples[0] * samples[1]
print("\nGaussian operands, relative error      mean      max")
mean_error = {}
for bits in (3, 5):
    rounded = round_mantissa(samples[0], bits) * round_mantissa(samples[1], bits)
    for name, approximate in ((f"L-Mul {bits}-bit", lmul(*samples, mantissa_bits=bits)),
                              (f"exact x of {bits}-bit operands", rounded)):
        error = jnp.abs(approximate - exact_products) / jnp.abs(exact_products)
        print(f"{name:<34} {float(error.mean()):>8.4f} {float(error.max()):>8.4f}")
        if name.startswith("L-Mul"):
            mean_error[bits] = float(error.mean())
            assert float(error.max()) < 0.25, (name, float(error.max()))
assert mean_error[5] < mean_error[3] < 0.1, mean_error

# %% [markdown]
# ## A briefly trained model
#
# The softmax-attention classifier of sequential 8x8 digits, 2 layers instead of 4, trained for 4
# epochs (80 steps) with exact products; BatchNorm (as in `s5_digits`) and a larger learning rate
# get it further in so short a run than the published LayerNorm setting.

# %%
config = load_config("attention_digits", "softmax_attention,num_epochs=4")
config.model.update(num_layers=2, norm="batch", dropout=0.0)
config.optimizer.update(lr=1e-2, warmup_epochs=0.5)
config.train.update(log_every_steps=20, eval_every_steps=40, checkpoint_every_steps=80)
workdir = tempfile.mkdtemp(prefix="jaxattn_attention_digits_")
summary = train_and_evaluate(config, workdir)
print(f"exact products: test accuracy {summary['test']['accuracy']:.3f}")

# %% [markdown]
# ## The same weights in other arithmetics
#
# `restore_variables` reads the trained weights back from the work directory. Each arithmetic is a
# context around tracing the model: every Dense layer (`dense=True`) and both attention products,
# `q k^T` and `P v` (`attention=True`), use it; the softmax stays fp32. (In a config:
# `config.model.arithmetic.kind`, and `jaxattn.train.evaluate_variables`.)

# %%
variables = restore_variables(config, workdir)
task = load_task(config.task.name, **config.task.options)
model = build_model(config.model, task)
test = task.splits["test"]

ARITHMETICS = {
    "exact": None,
    "L-Mul 3-bit": Arithmetic(kind="lmul", mantissa_bits=3),
    "L-Mul 3-bit, attention only": Arithmetic(kind="lmul", mantissa_bits=3, dense=False),
    "fp8 e4m3": Arithmetic(kind="fp8_e4m3"),
    "fp8 e5m2": Arithmetic(kind="fp8_e5m2"),
}


def test_logits(arithmetic):
    with product_arithmetic(arithmetic):  # read while tracing: the jitted function keeps it
        apply = jax.jit(lambda variables, inputs, lengths: model.apply(variables, inputs, lengths))
        return np.asarray(apply(variables, test["inputs"], test["lengths"]))


logits = {name: test_logits(arithmetic) for name, arithmetic in ARITHMETICS.items()}
exact = logits["exact"]
print(f"{'arithmetic':<30} {'test accuracy':>13} {'same prediction':>16} {'max |logit - exact|':>20}")
for name, values in logits.items():
    accuracy = float(np.mean(values.argmax(-1) == test["targets"]))
    agreement = float(np.mean(values.argmax(-1) == exact.argmax(-1)))
    print(f"{name:<30} {accuracy:>13.3f} {agreement:>16.3f} {float(np.max(np.abs(values - exact))):>20.3f}")

# %% [markdown]
# The exact logits reproduce the training run's own evaluation. Without retraining, 3-bit L-Mul in
# every product changes most predictions of this briefly trained model, while L-Mul in the attention
# products alone, and fp8 e4m3 operands (also 3 mantissa bits, but exact products) everywhere, keep
# most of them; e5m2 (2 mantissa bits) loses more. The L-Mul precision study,
# `python -m experiments.lmul_precision`, measures this on the fully trained model and fine-tunes in
# each arithmetic, which recovers the accuracy.

# %%
def agreement(name):
    return float(np.mean(logits[name].argmax(-1) == exact.argmax(-1)))


exact_accuracy = float(np.mean(exact.argmax(-1) == test["targets"]))
np.testing.assert_allclose(exact_accuracy, summary["test"]["accuracy"], atol=1e-6)
assert all(float(np.max(np.abs(logits[name] - exact))) > 0 for name in ARITHMETICS if name != "exact")
assert agreement("L-Mul 3-bit, attention only") > agreement("L-Mul 3-bit"), {name: agreement(name) for name in logits}
assert agreement("fp8 e4m3") > 0.8, agreement("fp8 e4m3")
