"""Pure functions on arrays, one public function per operation, all importable from here.

Every op takes ``impl=`` (``"reference"``, ``"xla"``, ``"pallas"`` where there are kernels,
``"auto"``), resolved by one rule in :mod:`jaxattn.ops.dispatch`. ``"reference"`` is the obviously
correct test oracle: the definition, in fp32 at HIGHEST precision (float64 for L-Mul's bit-exact
arithmetic), computed by its own algorithm; where it needs another op (a discretisation, the
discrete system, L-Mul's element products) it calls that op's reference, so that no fast path
stands in for its own oracle. It shares with the fast paths only the argument checks and the
preparation of inputs (segment starts, masks, a normaliser column of ones). ``"auto"`` (the
default) picks the fastest path that supports the call. ``feature_maps`` is not an op: it is a
namespace module of fixed element-wise feature maps ``phi`` (``[..., D] -> [..., D']``, one formula
each), which linear-attention layers apply to queries and keys before :func:`linear_attention`; its
functions take no ``impl``. The op contract is in docs/ops.md.
"""

from jaxattn.ops import feature_maps
from jaxattn.ops.attention_distillation import attention_distillation_loss
from jaxattn.ops.delta_rule import delta_rule
from jaxattn.ops.diagonal_scan import diagonal_scan
from jaxattn.ops.discretization import bilinear_transform, zero_order_hold
from jaxattn.ops.linear_attention import linear_attention
from jaxattn.ops.lmul import lmul, round_mantissa
from jaxattn.ops.lmul_matmul import lmul_dot_general
from jaxattn.ops.rotary import apply_rotary
from jaxattn.ops.short_conv import causal_conv1d
from jaxattn.ops.softmax_attention import softmax_attention
from jaxattn.ops.fft_convolution import fft_convolution, padded_fft_convolution
from jaxattn.ops.ssm_convolution import s4_c_from_c_tilde, s4_c_tilde, s4_discrete_system, s4_kernel, s4d_kernel
from jaxattn.ops.tensor_attention import tensor_attention
from jaxattn.ops.tensor_attention_poly import tensor_attention_poly
from jaxattn import autotune as _autotune  # noqa: F401 -- installs the tuned block sizes (docs/autotune.md)

__all__ = [
    "apply_rotary",
    "attention_distillation_loss",
    "bilinear_transform",
    "causal_conv1d",
    "delta_rule",
    "diagonal_scan",
    "feature_maps",
    "fft_convolution",
    "linear_attention",
    "lmul",
    "lmul_dot_general",
    "padded_fft_convolution",
    "round_mantissa",
    "s4_c_from_c_tilde",
    "s4_c_tilde",
    "s4_discrete_system",
    "s4_kernel",
    "s4d_kernel",
    "softmax_attention",
    "tensor_attention",
    "tensor_attention_poly",
    "zero_order_hold",
]
