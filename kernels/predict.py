"""The PyTorch model as a crop runner of the two-pass predictor (``tardis_edge.predict``), decoding through the
fused kernel.

Training evaluation and export verification's PyTorch reference run the model this way: heatmaps (flip-test
averaged in torch, ``tardis_edge.codec.flip_heatmaps``), then ``kernels.decode_heatmaps`` with each crop's
heatmap -> image affine, so on CUDA the Triton kernel decodes and maps to image pixels in its epilogue without the
heatmaps leaving the GPU; on CPU the same call runs the PyTorch reference. The edge runtime never imports this
module (no torch, no triton there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kernels.decode import decode_heatmaps
from tardis_edge import geometry
from tardis_edge.codec import flip_heatmaps, flip_shift_px
from tardis_edge.predict import CropPrediction, CropRunner, PredictConfig


def model_crop_runner(
    model: torch.nn.Module,
    cfg: PredictConfig,
    flip_indices: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    backend: str = "auto",
) -> CropRunner:
    """A crop runner around a PyTorch pose model (``model(x)["heatmaps"]``, input float RGB 0..255).

    Args:
        model: the pose model, in eval mode, on ``device``.
        cfg: the decode method, soft-argmax beta and flip test of the predictor it serves.
        flip_indices: ``(K,)`` left/right channel permutation; required when ``cfg.flip_test``.
        device: where the crops go.
        backend: ``kernels.decode_heatmaps`` backend: ``"auto"`` (Triton on CUDA tensors, the PyTorch reference
            elsewhere), ``"triton"`` or ``"torch"``.

    Returns:
        A runner giving image-pixel keypoints and scores (``CropPrediction.in_image``, ``flip_tested`` as
        ``cfg.flip_test``).
    """
    if cfg.flip_test and flip_indices is None:
        raise ValueError("flip_test needs flip_indices (tardis_edge.codec.flip_indices_from_pairs of the schema)")
    beta = cfg.softargmax_beta if cfg.decode == "softargmax" else None

    @torch.no_grad()
    def run(crops: np.ndarray, input_to_image: np.ndarray) -> CropPrediction:
        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).to(device)  # (N, 3, H_in, W_in)
        heatmaps = model(x)["heatmaps"].float()  # (N, K, H_hm, W_hm)
        if cfg.flip_test:
            mirrored = model(torch.flip(x, dims=[-1]))["heatmaps"].float()
            shift = flip_shift_px(x.shape[-1], heatmaps.shape[-1])
            heatmaps = 0.5 * (heatmaps + flip_heatmaps(mirrored, flip_indices, shift_px=shift))
        stride = geometry.heatmap_stride((x.shape[-1], x.shape[-2]), (heatmaps.shape[-1], heatmaps.shape[-2]))
        heatmap_to_image = np.stack([geometry.compose(m, geometry.scale_affine(stride)) for m in input_to_image])
        crop_to_image = torch.from_numpy(heatmap_to_image).float().to(heatmaps.device)  # (N, 2, 3)
        keypoints, scores = decode_heatmaps(
            heatmaps.contiguous(), cfg.decode, beta, crop_to_image, backend=backend
        )  # (N, K, 2) image pixels, (N, K)
        return CropPrediction(
            keypoints=keypoints.cpu().numpy(), scores=scores.cpu().numpy(), in_image=True, flip_tested=cfg.flip_test
        )

    return run
