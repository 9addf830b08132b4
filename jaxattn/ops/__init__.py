"""Pure functions on arrays, one public function per operation (``impl=`` selects the path)."""

from jaxattn.ops import feature_maps
from jaxattn.ops.attention_distillation import attention_distillation_loss
from jaxattn.ops.delta_rule import delta_rule
from jaxattn.ops.diagonal_scan import diagonal_scan
from jaxattn.ops.linear_attention import linear_attention
from jaxattn.ops.lmul import lmul, round_mantissa
from jaxattn.ops.softmax_attention import softmax_attention
from jaxattn.ops.tensor_attention import tensor_attention
from jaxattn.ops.tensor_attention_poly import tensor_attention_poly

__all__ = [
    "attention_distillation_loss", "delta_rule", "diagonal_scan", "feature_maps", "linear_attention", "lmul", "round_mantissa",
    "softmax_attention", "tensor_attention", "tensor_attention_poly",
]
