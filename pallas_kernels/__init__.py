"""Pallas kernels (GPU: Triton backend, TPU: Mosaic), each with its custom_vjp.

This package imports jax only, never jaxattn; :mod:`jaxattn.ops` wires the kernels in as
``impl="pallas"``.
"""
