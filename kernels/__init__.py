"""Triton kernels (optional ``kernels`` extra) for the decode stage and the integral loss, with PyTorch fallbacks.

``import kernels`` needs no triton: the kernel module is imported on first use of a Triton backend.
"""

from kernels.decode import BACKENDS, METHODS, decode_heatmaps, reference_decode, soft_argmax, triton_available

__all__ = ["BACKENDS", "METHODS", "decode_heatmaps", "reference_decode", "soft_argmax", "triton_available"]
