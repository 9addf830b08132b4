import jax, jax.numpy as jnp
from jax.sharding import AxisType
from jaxattn.ops import linear_attention, diagonal_scan
from jaxattn.parallel.sequence import sequence_parallel_linear_attention as spla, sequence_parallel_diagonal_scan as spds
print(jax.__version__, jax.devices())
mesh = jax.make_mesh((1,), ("sequence",), axis_types=(AxisType.Auto,))
ks = jax.random.split(jax.random.key(0), 6)
B, T, H, D = 2, 1024, 4, 64
q, k, v = (jax.random.normal(x, (B, T, H, D)) for x in ks[:3])
g = -jax.nn.softplus(jax.random.normal(ks[3], (B, T, H)))
w = jnp.cos(jnp.arange(B * T * H * D).reshape(B, T, H, D))
ref = lambda q, k, v, g: linear_attention(q, k, v, g=g, impl="reference")
sp = lambda q, k, v, g: spla(q, k, v, g=g, impl="pallas", mesh=mesh)
rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
txt = jax.jit(sp).lower(q, k, v, g).compile().as_text()
print("triton custom calls:", txt.count("__gpu$xla.gpu.triton"), "all-gathers:", txt.count(" all-gather("))
print("LA fwd rel err", rel(jax.jit(sp)(q, k, v, g), jax.jit(ref)(q, k, v, g)))
L = lambda f: (lambda *a: jnp.sum(w * f(*a)))
gr = jax.jit(jax.grad(L(ref), argnums=(0, 1, 2, 3)))(q, k, v, g)
gs = jax.jit(jax.grad(L(sp), argnums=(0, 1, 2, 3)))(q, k, v, g)
print("LA grad rel errs", [rel(a, b) for a, b in zip(gs, gr)])
a = (0.98 * jax.nn.sigmoid(jax.random.normal(ks[4], (B, 2048, 256)))) * jnp.exp(1j * jax.random.normal(ks[5], (B, 2048, 256)))
b = jax.random.normal(ks[5], (B, 2048, 256)) + 0j
a, b = a.astype(jnp.complex64), b.astype(jnp.complex64)
w2 = jnp.cos(jnp.arange(b.size).reshape(b.shape))
for rev in (False, True):
    r = lambda a, b: diagonal_scan(a, b, reverse=rev, impl="reference")[0]
    s = lambda a, b: spds(a, b, reverse=rev, impl="pallas", mesh=mesh)
    print("scan reverse", rev, "fwd rel err", rel(jax.jit(s)(a, b), jax.jit(r)(a, b)))
    L2 = lambda f: (lambda *x: jnp.sum(w2 * f(*x)).real)
    gs2 = jax.jit(jax.grad(L2(s), argnums=(0, 1)))(a, b)
    gr2 = jax.jit(jax.grad(L2(r), argnums=(0, 1)))(a, b)
    print("  grad rel errs", [rel(x, y) for x, y in zip(gs2, gr2)])
