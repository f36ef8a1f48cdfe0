"""The detector-free two-pass predictor: frames in, keypoints in image pixels out, for any backend.

Without a detector (single-animal footage) the model finds the animal itself: pass 1 runs on the whole frame
(aspect kept, ``geometry.box_from_image``) or on the boxes given, pass 2 on a padded box around pass 1's confident
keypoints (``box_from_prediction``). The predictor owns everything between the frames and the model: the crops
(``crop_batch``), the batching, the flip test on heatmaps, the decode of heatmaps (``tardis_edge.decode_np``) and
the map back to image pixels through the exact inverse of each crop affine. The model is a *crop runner*, a
callable that answers for one batch of crops with either

* heatmaps (the edge runtime's heatmap graph): decoded here, flip test here, or
* keypoints and scores it decoded itself: in crop input pixels (an ONNX graph with the decode in it) or already in
  image pixels (the PyTorch model through ``kernels.decode_heatmaps``, whose epilogue applies the crop->image
  affine); such a runner does its own flip test and says so.

Training evaluation (``kernels.predict.model_crop_runner``), export verification and the edge runtime's
``Runner`` all predict through this module, so they crop, decode and box alike. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tardis_edge import decode_np, geometry


@dataclass
class PredictConfig:
    """How keypoints are predicted: decode method, flip test, and the detector-free two-pass crop."""

    decode: str = "msra"  # argmax | msra | dark | softargmax
    softargmax_beta: float = 20.0
    flip_test: bool = True
    two_pass: bool = True  # pass 1 whole frame, pass 2 crop around pass 1's keypoints
    box_min_score: float = 0.2  # keypoints above this score define the pass-2 box
    padding: float = geometry.DEFAULT_PADDING  # pass-2 box = keypoint extent x padding (the trained framing)
    box_min_size: float = 16.0  # image pixels; unpadded lower bound of the pass-2 box side
    batch_size: int = 16  # frames cropped and run per crop-runner call

    def __post_init__(self) -> None:
        if self.decode not in decode_np.METHODS:
            raise ValueError(f"unknown decode method {self.decode!r}; choose one of {', '.join(decode_np.METHODS)}")
        if self.batch_size < 1:
            raise ValueError(f"predict batch_size must be >= 1, got {self.batch_size}")


@dataclass
class CropPrediction:
    """A crop runner's answer for a batch of ``N`` crops: heatmaps, or keypoints it decoded itself.

    Attributes:
        heatmaps: ``(N, K, H_hm, W_hm)`` float32, decoded by the predictor (None when keypoints are given).
        keypoints: ``(N, K, 2)`` crop input pixels, or image pixels when ``in_image``.
        scores: ``(N, K)`` heatmap maxima; ``score <= 0`` means "not found".
        in_image: the runner mapped its keypoints through the ``input_to_image`` affines it was given.
        flip_tested: the keypoints average the mirrored crop's heatmaps (the runner did the flip test).
    """

    heatmaps: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    scores: np.ndarray | None = None
    in_image: bool = False
    flip_tested: bool = False

    def __post_init__(self) -> None:
        if (self.heatmaps is None) == (self.keypoints is None) or (self.keypoints is None) != (self.scores is None):
            raise ValueError("a CropPrediction holds either heatmaps, or keypoints together with scores")


# (crops (N, 3, H_in, W_in) float32 RGB 0..255, input_to_image (N, 2, 3) crop input -> image pixels) -> prediction
CropRunner = Callable[[np.ndarray, np.ndarray], CropPrediction]


def crop_batch(
    frames_rgb: Sequence[np.ndarray], boxes: Sequence[geometry.CropBox], input_wh: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp one crop per frame into the network input (``geometry.crop_affine`` + ``geometry.warp_image``).

    Args:
        frames_rgb: RGB uint8 ``(H, W, 3)`` frames.
        boxes: one crop box per frame, image pixels.
        input_wh: network input ``(W_in, H_in)``.

    Returns:
        ``(images (N, 3, H_in, W_in) float32 RGB 0..255, affines (N, 2, 3) float64 image -> input pixels)``.
    """
    if len(frames_rgb) != len(boxes):
        raise ValueError(f"got {len(frames_rgb)} frames but {len(boxes)} boxes; pass one box per frame")
    affines = np.stack([geometry.crop_affine(box, input_wh) for box in boxes])  # (N, 2, 3)
    crops = np.stack([geometry.warp_image(f, m, input_wh) for f, m in zip(frames_rgb, affines, strict=True)])
    images = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)  # (N, 3, H_in, W_in)
    return images, affines


def apply_affines(keypoints: np.ndarray, affines: np.ndarray) -> np.ndarray:
    """``(N, K, 2)`` points through one ``(N, 2, 3)`` affine per row, in float64."""
    return keypoints.astype(np.float64) @ affines[:, :, :2].transpose(0, 2, 1) + affines[:, None, :, 2]


def confident(keypoints: np.ndarray, scores: np.ndarray, min_score: float) -> np.ndarray:
    """``(K,)`` mask of keypoints with finite coordinates and a score above ``min_score``."""
    return np.isfinite(keypoints).all(axis=-1) & (scores > min_score)


def box_from_prediction(
    keypoints: np.ndarray,
    scores: np.ndarray,
    fallback: geometry.CropBox,
    input_wh: tuple[int, int],
    cfg: PredictConfig,
) -> geometry.CropBox:
    """The pass-2 box: padded around one prediction's confident keypoints, ``fallback`` when none is confident.

    Args:
        keypoints: ``(K, 2)`` image pixels (NaN: not found).
        scores: ``(K,)``.
        fallback: the pass-1 box.
    """
    ok = confident(keypoints, scores, cfg.box_min_score)
    if not ok.any():
        return fallback
    return geometry.box_from_keypoints(
        keypoints, ok, input_wh, padding=cfg.padding, min_size=cfg.box_min_size, grid=geometry.REFINE_BOX_GRID
    )


def crop_keypoints(
    run: CropRunner,
    crops: np.ndarray,
    input_to_image: np.ndarray,
    cfg: PredictConfig,
    flip_indices: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One crop-runner call, decoded: keypoints in the frame ``input_to_image`` maps to, and scores.

    Args:
        run: the crop runner.
        crops: float32 ``(N, 3, H_in, W_in)`` RGB 0..255.
        input_to_image: ``(N, 2, 3)`` crop input -> image pixel affines (identity affines give input pixels).
        cfg: decode method and flip test.
        flip_indices: ``(K,)`` left/right channel permutation, needed for the flip test on heatmaps.

    Returns:
        ``(keypoints (N, K, 2) float64, scores (N, K) float32)``; keypoints of rows with score <= 0 are NaN.
    """
    out = run(crops, input_to_image)
    if out.heatmaps is not None:
        heatmaps = decode_np.check_heatmaps(out.heatmaps)  # (N, K, H_hm, W_hm)
        if cfg.flip_test:
            if flip_indices is None:
                raise ValueError("flip_test needs the keypoints' flip_indices (left/right pairs) to unflip heatmaps")
            mirrored = run(np.ascontiguousarray(crops[..., ::-1]), input_to_image).heatmaps
            if mirrored is None:
                raise ValueError("the crop runner gave heatmaps for the crops but not for their mirror images")
            shift = decode_np.flip_shift_px(crops.shape[-1], heatmaps.shape[-1])
            heatmaps = 0.5 * (heatmaps + decode_np.flip_heatmaps(mirrored, flip_indices, shift))
        keypoints_hm, scores = decode_np.decode_heatmaps(heatmaps, cfg.decode, cfg.softargmax_beta)
        stride = geometry.heatmap_stride((crops.shape[-1], crops.shape[-2]), (heatmaps.shape[-1], heatmaps.shape[-2]))
        keypoints = apply_affines(keypoints_hm.astype(np.float64) * stride, input_to_image)
    else:
        assert out.keypoints is not None and out.scores is not None  # CropPrediction's invariant
        if out.flip_tested != cfg.flip_test:
            raise ValueError(
                f"the crop runner decoded its keypoints with flip_test={out.flip_tested} but the predict config asks "
                f"for flip_test={cfg.flip_test}; build the runner with the same setting, or let it return heatmaps"
            )
        scores = np.asarray(out.scores, dtype=np.float32)
        keypoints = np.asarray(out.keypoints, dtype=np.float64)
        if not out.in_image:
            keypoints = apply_affines(keypoints, input_to_image)
    keypoints[scores <= 0] = np.nan
    return keypoints, scores


def predict_boxes(
    run: CropRunner,
    frames_rgb: Sequence[np.ndarray],
    boxes: Sequence[geometry.CropBox],
    input_wh: tuple[int, int],
    cfg: PredictConfig,
    flip_indices: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One pass: one crop per frame, ``cfg.batch_size`` frames per crop-runner call.

    Args:
        run: the crop runner.
        frames_rgb: RGB uint8 ``(H, W, 3)`` frames.
        boxes: one crop box per frame, image pixels.
        input_wh: network input ``(W_in, H_in)``.
        cfg: decode, flip test and batch size.
        flip_indices: ``(K,)`` channel permutation for the flip test on heatmaps.

    Returns:
        ``(keypoints (N, K, 2) float64 image pixels, NaN where score <= 0; scores (N, K) float32)``.
    """
    if len(frames_rgb) != len(boxes):
        raise ValueError(f"got {len(frames_rgb)} frames but {len(boxes)} boxes; pass one box per frame")
    all_keypoints, all_scores = [], []
    for start in range(0, len(frames_rgb), cfg.batch_size):
        chunk = slice(start, start + cfg.batch_size)
        crops, affines = crop_batch(frames_rgb[chunk], boxes[chunk], input_wh)
        keypoints, scores = crop_keypoints(run, crops, geometry.invert_affine(affines), cfg, flip_indices)
        all_keypoints.append(keypoints)
        all_scores.append(scores)
    return np.concatenate(all_keypoints), np.concatenate(all_scores)


def predict_frames(
    run: CropRunner,
    frames_rgb: Sequence[np.ndarray],
    input_wh: tuple[int, int],
    cfg: PredictConfig,
    flip_indices: Sequence[int] | None = None,
    boxes: Sequence[geometry.CropBox] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[geometry.CropBox]]:
    """Detector-free top-down prediction: the whole frame (or the given boxes), then a crop around the result.

    Args:
        run: the crop runner.
        frames_rgb: RGB uint8 ``(H, W, 3)`` frames (sizes may differ).
        input_wh: network input ``(W_in, H_in)``.
        cfg: decode, flip test, two-pass box rule and batch size.
        flip_indices: ``(K,)`` channel permutation for the flip test on heatmaps.
        boxes: pass-1 boxes (image pixels); None: the whole frames.

    Returns:
        ``(keypoints (N, K, 2) float64 image pixels with NaN where score <= 0, scores (N, K), final boxes)``.
    """
    whole = boxes is None
    first = [geometry.box_from_image(f.shape[1::-1], input_wh) for f in frames_rgb] if whole else list(boxes)
    keypoints, scores = predict_boxes(run, frames_rgb, first, input_wh, cfg, flip_indices)
    if not cfg.two_pass:
        return keypoints, scores, first
    second = [box_from_prediction(k, s, b, input_wh, cfg) for k, s, b in zip(keypoints, scores, first, strict=True)]
    keypoints, scores = predict_boxes(run, frames_rgb, second, input_wh, cfg, flip_indices)
    return keypoints, scores, second
