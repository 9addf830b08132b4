"""delta_rule against flash-linear-attention's own recurrence (``fla``, PyTorch), on CPU.

    pip install torch fla-core && python -m experiments.fla_crosscheck

An independent check of the semantics (gate placement, Householder step layout, scale, initial
state): fla's ``naive_recurrent_gated_delta_product`` (a token loop in PyTorch) against every impl of
:func:`jaxattn.ops.delta_rule` (the Pallas kernels in the interpreter), DeltaNet, Gated DeltaNet and
(gated) DeltaProduct with beta in [0, 2], unit keys, K = 12, V = 10, T = 50. Prints a table of the
relative errors of the outputs and final states. fla's package imports Triton at the top, so its
``naive.py`` (which needs only PyTorch) is loaded from its file.
"""

import importlib.util
import pathlib

import numpy as np
from absl import app

from jaxattn.ops import delta_rule

# (householder steps, gated)
CASES = [(1, False), (1, True), (2, True), (3, False)]
IMPLS = ("reference", "xla", "pallas")


def _fla_recurrence():
    spec = importlib.util.find_spec("fla")
    if spec is None or importlib.util.find_spec("torch") is None:
        raise app.UsageError("needs PyTorch and fla-core: pip install torch fla-core")
    path = pathlib.Path(spec.origin).parent / "ops" / "gated_delta_product" / "naive.py"
    module_spec = importlib.util.spec_from_file_location("fla_gated_delta_product_naive", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.naive_recurrent_gated_delta_product


def _inputs(rng, steps: int, gated: bool, batch=2, length=50, heads=3, key_dim=12, value_dim=10):
    q = rng.normal(size=(batch, length, heads, key_dim)).astype(np.float32)
    k = rng.normal(size=(batch, length * steps, heads, key_dim)).astype(np.float32)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.normal(size=(batch, length * steps, heads, value_dim)).astype(np.float32)
    beta = rng.uniform(0, 2, size=(batch, length * steps, heads)).astype(np.float32)
    g = -np.log1p(np.exp(-(rng.normal(size=(batch, length, heads)) + 2))).astype(np.float32) if gated else None
    initial_state = rng.normal(size=(batch, heads, key_dim, value_dim)).astype(np.float32)
    return q, k, v, beta, g, initial_state


def _relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def main(argv):
    del argv
    import torch

    fla = _fla_recurrence()
    rng = np.random.default_rng(0)
    print("| n_h | gated | impl | outputs | final state |\n|---:|---|---|---:|---:|")
    for steps, gated in CASES:
        q, k, v, beta, g, state = _inputs(rng, steps, gated)
        tensor = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
        want, want_state = fla(tensor(q), tensor(k), tensor(v), tensor(g), tensor(beta), scale=q.shape[-1] ** -0.5,
                               initial_state=tensor(state).clone(), output_final_state=True, num_householder=steps)
        for impl in IMPLS:
            got, got_state = delta_rule(q, k, v, beta, g=g, householder_steps=steps, initial_state=state,
                                        output_final_state=True, chunk_size=16, impl=impl)
            print(f"| {steps} | {gated} | {impl} | {_relative_error(got, want.numpy()):.1e} | "
                  f"{_relative_error(got_state, want_state.numpy()):.1e} |")


if __name__ == "__main__":
    app.run(main)
