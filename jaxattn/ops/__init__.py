"""Pure functions on arrays, one public function per operation (``impl=`` selects the path)."""

from jaxattn.ops.diagonal_scan import diagonal_scan

__all__ = ["diagonal_scan"]
