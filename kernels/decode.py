"""Fused heatmap decoding and a differentiable soft-argmax: dispatch between the Triton kernels and the
PyTorch reference (``tardis_edge.decode``).

Backends (``backend=``):
    * ``"auto"`` (default): CUDA tensors run the Triton kernels, every other device the PyTorch reference.
      A CUDA tensor the kernels refuse (float64, non-contiguous, a map over 16384 elements) raises; pass
      ``backend="torch"`` for those.
    * ``"triton"``: the Triton kernels, also on CPU tensors when Triton's interpreter is on
      (``TRITON_INTERPRET=1`` before ``kernels.triton_decode`` is first imported) -- how the tests run them.
    * ``"torch"``: the reference, on any device.

Triton is optional: it is imported only when a Triton backend is used, and its absence raises an error that
names the ``kernels`` extra.

The soft-argmax as a decode method follows ``tardis_edge.decode.decode_heatmaps``: ``soft_argmax`` keypoints
with the heatmap maximum as score, invalid rows (score <= 0) at ``(-1, -1)`` as for the other methods, so
``score <= 0`` means "not found" whichever the method.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch

from tardis_edge import decode as reference

BACKENDS = ("auto", "triton", "torch")
METHODS = (*reference.DECODE_METHODS, "soft-argmax")


def _triton_ops() -> ModuleType:
    """The kernel module, imported on first use (it imports triton)."""
    try:
        from kernels import triton_decode
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] == "triton":
            raise ImportError(
                "the Triton kernels need triton: pip install 'tardis-edge[kernels]', or pass backend='torch'"
            ) from error
        raise
    return triton_decode


def triton_available() -> bool:
    """Whether triton can be imported (does not say whether a GPU is present)."""
    try:
        _triton_ops()
    except ImportError:
        return False
    return True


def _use_triton(heatmaps: torch.Tensor, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return False
    if backend == "auto":
        return isinstance(heatmaps, torch.Tensor) and heatmaps.is_cuda
    return True


def _check_beta(beta: float | None) -> float:
    if beta is None or isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise ValueError(f"soft-argmax needs beta, a positive finite number; got {beta!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"soft-argmax beta must be a positive finite number, got {beta!r}")
    return float(beta)


def _check_method(method: str, beta: float | None) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("softargmax", "soft-argmax"):
        _check_beta(beta)
        return "softargmax"
    if beta is not None:
        raise ValueError(f"beta={beta!r} is only used by the soft-argmax, not by method {method!r}; pass beta=None")
    return method


class SoftArgmaxFunction(torch.autograd.Function):
    """Soft-argmax with Triton forward and backward kernels; saves 4 fp32 numbers per map, not the softmax."""

    @staticmethod
    def forward(ctx, heatmaps: torch.Tensor, beta: float) -> torch.Tensor:  # (N, K, H, W) -> (N, K, 2)
        ops = _triton_ops()
        n, k = heatmaps.shape[:2]
        stats = torch.empty((n, k, ops.STATS), dtype=torch.float32, device=heatmaps.device)
        keypoints, _ = ops.launch_decode(heatmaps, "softargmax", beta, mark_invalid=False, stats=stats)
        ctx.save_for_backward(heatmaps, stats)
        ctx.beta = beta
        return keypoints.to(heatmaps.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_xy: torch.Tensor) -> tuple[torch.Tensor, None]:
        heatmaps, stats = ctx.saved_tensors
        grad = _triton_ops().launch_soft_argmax_backward(heatmaps, stats, grad_xy, ctx.beta)
        return grad, None


def soft_argmax(heatmaps: torch.Tensor, beta: float, *, backend: str = "auto") -> torch.Tensor:
    """Differentiable expectation of pixel coordinates under ``softmax(beta * heatmap)`` per map.

    Same result as ``tardis_edge.decode.soft_argmax``; the Triton path computes the gradient from saved
    per-map statistics without materialising the probability map.

    Args:
        heatmaps: ``(N, K, H, W)`` float tensor.
        beta: inverse temperature (> 0).
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring).

    Returns:
        ``(N, K, 2)`` ``(x, y)`` in heatmap pixels, in the heatmaps' dtype.
    """
    if not _use_triton(heatmaps, backend):
        return reference.soft_argmax(heatmaps, beta)
    return SoftArgmaxFunction.apply(heatmaps, _check_beta(beta))


def reference_decode(
    heatmaps: torch.Tensor,
    method: str,
    beta: float | None = None,
    crop_to_image: torch.Tensor | None = None,
    blur_kernel: int = reference.DARK_BLUR_KERNEL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch composition the fused kernel reproduces (arguments and results as ``decode_heatmaps``)."""
    method = _check_method(method, beta)
    keypoints, scores = reference.decode_heatmaps(heatmaps, method, blur_kernel, softargmax_beta=beta)
    if crop_to_image is not None:
        keypoints = reference.keypoints_to_image(keypoints, crop_to_image)
    return keypoints, scores


def decode_heatmaps(
    heatmaps: torch.Tensor,
    method: str = "msra",
    beta: float | None = None,
    crop_to_image: torch.Tensor | None = None,
    *,
    blur_kernel: int = reference.DARK_BLUR_KERNEL,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode keypoints (and map them to the original image) in one pass over the heatmaps.

    Args:
        heatmaps: ``(N, K, H, W)`` float tensor.
        method: ``"argmax"``, ``"msra"``, ``"dark"`` or ``"softargmax"`` (alias ``"soft-argmax"``).
        beta: soft-argmax inverse temperature; required for the soft-argmax, must be None otherwise.
        crop_to_image: optional ``(N, 2, 3)`` heatmap->image affines
            (``tardis_edge.geometry.heatmap_to_image_affine`` per crop).
        blur_kernel: DARK's Gaussian blur size (odd).
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring).

    Returns:
        ``(keypoints, scores)``: ``(N, K, 2)`` float32 ``(x, y)`` -- heatmap pixels, or image pixels with
        ``crop_to_image`` -- and ``(N, K)`` float32 heatmap maxima. Rows with ``score <= 0`` are invalid: in
        heatmap pixels they are ``(-1, -1)``; with ``crop_to_image`` they are ``(-1, -1)`` mapped through the
        crop's affine (exactly ``keypoints_to_image`` of the reference decode). Not differentiable; training
        uses ``soft_argmax``.
    """
    method = _check_method(method, beta)
    if not _use_triton(heatmaps, backend):
        return reference_decode(heatmaps, method, beta, crop_to_image, blur_kernel)
    return _triton_ops().launch_decode(heatmaps, method, beta, crop_to_image, blur_kernel=blur_kernel)
