"""Optional tier: compile every TPU kernel, forward and backward, ahead of time with Mosaic against
TPU topologies (needs libtpu, the `tpu` extra; skipped without it). This checks what lowering alone
cannot: Mosaic's layouts, tilings and VMEM use on real chip generations."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no cloud metadata server here
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # pytest-xdist workers each load libtpu
pytest.importorskip("libtpu", reason="the TPU compile tier needs libtpu (pip install -e '.[tpu]')")

from jax.experimental.topologies import get_topology_desc  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from jaxattn.ops import delta_rule, diagonal_scan, linear_attention, softmax_attention, tensor_attention  # noqa: E402
from jaxattn.ops.lmul_matmul import lmul_dot_general  # noqa: E402

TOPOLOGIES = ["v4:1x1x1", "v5e:1x1", "v6e:1x1"]


def _linear(q, k, v, g=None, **kwargs):
    return jnp.sum(linear_attention(q, k, v, g=g, impl="pallas", **kwargs).astype(jnp.float32))


def _softmax(q, k, v, segment_ids=None, **kwargs):
    return jnp.sum(softmax_attention(q, k, v, segment_ids=segment_ids, impl="pallas", **kwargs).astype(jnp.float32))


def _tensor(*args, **kwargs):
    return jnp.sum(tensor_attention(*args, impl="pallas", **kwargs).astype(jnp.float32))


def _delta(q, k, v, beta, g=None, **kwargs):
    return jnp.sum(delta_rule(q, k, v, beta, g=g, impl="pallas", **kwargs).astype(jnp.float32))


def _scan(a, b):
    return jnp.sum(jnp.abs(diagonal_scan(a, b, impl="pallas")[0]))


def _lmul_matmul(dtype):
    def loss(a, b):
        a, b = a.astype(dtype), b.astype(dtype)
        return jnp.sum(lmul_dot_general(a, b, (((2,), (1,)), ((0,), (0,))), mantissa_bits=3, impl="pallas",
                                        backward="lmul", preferred_element_type=jnp.float32))

    return loss, [((2, 200, 72), jnp.float32), ((2, 72, 300), jnp.float32)]


# name: (loss, [(shape, dtype)] of its arguments)
CASES = {
    "linear-plain": (_linear, [((1, 256, 2, 64), jnp.float32)] * 3),
    "linear-gated-normalized-odd": (
        lambda q, k, v, g: _linear(q, k, v, g, normalize=True), [((2, 100, 3, 60), jnp.float32)] * 3 + [((2, 100, 3), jnp.float32)]
    ),
    "linear-bf16": (_linear, [((1, 256, 2, 128), jnp.bfloat16)] * 3),
    "delta-plain": (_delta, [((1, 256, 2, 64), jnp.float32)] * 3 + [((1, 256, 2), jnp.float32)]),
    "delta-product-gated-odd": (
        lambda q, k, v, beta, g: _delta(q, k, v, beta, g, householder_steps=2),
        [((2, 100, 3, 60), jnp.float32), ((2, 200, 3, 60), jnp.float32), ((2, 200, 3, 44), jnp.float32),
         ((2, 200, 3), jnp.float32), ((2, 100, 3), jnp.float32)],
    ),
    "delta-bf16": (_delta, [((1, 256, 2, 128), jnp.bfloat16)] * 3 + [((1, 256, 2), jnp.float32)]),
    "scan-real": (_scan, [((2, 600, 200), jnp.float32)] * 2),
    "scan-complex": (_scan, [((2, 600, 200), jnp.complex64)] * 2),
    "flash-causal": (_softmax, [((1, 300, 2, 64), jnp.float32)] * 3),
    "flash-packed": (
        lambda q, k, v, s: _softmax(q, k, v, s, causal=False), [((1, 300, 2, 64), jnp.float32)] * 3 + [((1, 300), jnp.int32)]
    ),
    "flash-bf16": (_softmax, [((1, 512, 2, 128), jnp.bfloat16)] * 3),
    "tensor-causal": (lambda *a: _tensor(*a, causal=True), [((1, 300, 2, 64), jnp.float32)] * 5),
    "tensor-window-odd": (
        lambda *a: _tensor(*a, window=(40, 100)), [((2, 150, 2, 60), jnp.float32)] * 3 + [((2, 150, 2, 40), jnp.float32)] * 2
    ),
    "tensor-bf16": (lambda *a: _tensor(*a, causal=False), [((1, 256, 2, 128), jnp.bfloat16)] * 5),
    "lmul-matmul-f32": _lmul_matmul(jnp.float32),
    "lmul-matmul-bf16": _lmul_matmul(jnp.bfloat16),
    "lmul-matmul-e4m3": _lmul_matmul(jnp.float8_e4m3fn),
}


@pytest.fixture(scope="module", params=TOPOLOGIES)
def tpu_sharding(request):
    topology = get_topology_desc(
        platform="tpu", topology_name=request.param, chip_config_name="default", chips_per_host_bounds=(1, 1, 1),
        num_slices=1,
    )
    return NamedSharding(Mesh(np.array(topology.devices[:1]), ("x",)), PartitionSpec())


@pytest.mark.parametrize("name", CASES)
def test_forward_and_backward_compile_with_mosaic(tpu_sharding, name):
    loss, signature = CASES[name]
    args = [jax.ShapeDtypeStruct(shape, dtype, sharding=tpu_sharding) for shape, dtype in signature]
    differentiable = tuple(i for i, (_, dtype) in enumerate(signature) if jnp.issubdtype(dtype, jnp.inexact))
    compiled = jax.jit(jax.grad(loss, argnums=differentiable)).trace(*args).lower(lowering_platforms=("tpu",)).compile()
    assert compiled.memory_analysis().generated_code_size_in_bytes > 0
    assert 'custom_call_target="tpu_custom_call"' in compiled.as_text()  # the kernels, compiled by Mosaic
