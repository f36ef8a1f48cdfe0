"""Triton decode and soft-argmax kernels against the PyTorch reference (on CPU, the ground truth).

Where CUDA is available the kernels run compiled on the GPU. Without it they run on CPU tensors in Triton's
interpreter, which triton 3.9 switches on with TRITON_INTERPRET, read through ``triton.knobs`` whenever
``@triton.jit`` decorates a function -- triton's own ``tl.max``/``tl.sum`` at ``import triton``, our kernels at
the import of ``kernels.triton_decode`` -- and again by the language's helpers while a kernel runs. So it is set
before the process first imports triton and stays set: without a GPU, triton can only interpret anyway, and on
a GPU machine it is never set, so compiled kernels (and torch.compile) elsewhere in the session are unaffected.

Tolerances (kernel vs reference, same input):
    argmax / MSRA: identical peak and keypoints (exact), scores exact, in every dtype (both read the same
        values and convert them to float32 exactly; the quarter step is exact);
    soft-argmax: <= 1e-4 heatmap px (fp32 accumulation in a different summation order);
    DARK: <= 1e-4 heatmap px on smooth peaks (the blur is summed in another order before the Newton step);
    image pixels (crop_to_image): <= 1e-4 px (a float32 ulp at 512 px is 3e-5; the affine may be fused);
    soft-argmax gradient: <= 1e-5 absolute in float32.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ON_CUDA = torch.cuda.is_available()
if not ON_CUDA:
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "triton was imported in this process before tests/test_kernels.py could set TRITON_INTERPRET=1, so "
            "its kernels cannot be interpreted on CPU; export TRITON_INTERPRET=1 or run this file on its own"
        )
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import kernels  # noqa: E402
from kernels import triton_decode  # noqa: E402
from tardis_edge import decode as reference  # noqa: E402
from tardis_edge import geometry  # noqa: E402

DEVICE = torch.device("cuda" if ON_CUDA else "cpu")  # where the kernels run; parity is against the CPU reference
ROOT = Path(__file__).resolve().parents[1]
STRIDE = 4
KEYPOINT_ATOL = 1e-4  # heatmap px (soft-argmax, DARK)
IMAGE_ATOL = 1e-4  # image px
GRAD_ATOL = 1e-5
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
METHODS = [("argmax", None), ("msra", None), ("softargmax", 5.0), ("dark", None)]

pytestmark = [
    # the reference divides 0 by 0 for all-zero maps in DARK's rescale as well; numpy (the interpreter) warns
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
]


def make_heatmaps(n: int, k: int, h: int, w: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Smooth Gaussian peaks plus noise, some at the borders, with an all-negative row, a constant row and a
    row whose maximum occurs twice (the earlier one off the peak) when there are >= 4 rows. ``(N, K, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    rows = n * k
    cx = torch.rand(rows, 1, 1, generator=g) * (w - 1)
    cy = torch.rand(rows, 1, 1, generator=g) * (h - 1)
    # every fifth peak on or beside the border, where MSRA and DARK skip their steps
    edge = torch.tensor([0.0, 1.0, 2.0, w - 3.0, w - 2.0, w - 1.0])
    cx[::5] = edge[torch.randint(0, len(edge), cx[::5].shape, generator=g)]
    sigma = 1.5 + torch.rand(rows, 1, 1, generator=g)
    amplitude = 0.2 + torch.rand(rows, 1, 1, generator=g)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    maps = amplitude * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    maps = maps + 0.02 * torch.randn(rows, h, w, generator=g)
    if rows >= 4:
        maps[1] = -0.1 - torch.rand(h, w, generator=g)  # invalid: every value negative
        maps[2] = maps[2].max()  # constant: every pixel ties, the first is (0, 0)
        maps[3].view(-1)[(7 * w) // 5 + 3] = maps[3].max()  # a tie earlier in row-major order than the peak
    return maps.reshape(n, k, h, w).to(dtype)


def crop_affines(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``(N, 2, 3)`` float64 heatmap->image affines of rotated (and every other one flipped) crops."""
    rng = np.random.default_rng(seed)
    input_wh = (w * STRIDE, h * STRIDE)
    affines = []
    for i in range(n):
        box = geometry.box_from_xywh(rng.uniform([0, 0, 40, 40], [400, 300, 240, 180]).tolist(), input_wh)
        crop = geometry.crop_affine(box, input_wh, rotation_deg=float(rng.uniform(-30, 30)), flip=bool(i % 2))
        affines.append(geometry.heatmap_to_image_affine(crop, STRIDE))
    return torch.from_numpy(np.stack(affines))


def poisoned(n: int, k: int) -> dict[str, torch.Tensor]:
    """NaN-filled output buffers on the kernels' device: an element the kernel does not write stays NaN."""
    return {
        "keypoints": torch.full((n, k, 2), float("nan"), device=DEVICE),
        "scores": torch.full((n, k), float("nan"), device=DEVICE),
    }


def on_device(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(DEVICE)


def check_decode(heatmaps, method, beta, crop_to_image=None):
    """Kernel (into NaN-poisoned buffers) vs the CPU reference composition, with the module's tolerances."""
    n, k = heatmaps.shape[:2]
    out = poisoned(n, k)
    keypoints, scores = triton_decode.launch_decode(on_device(heatmaps), method, beta, on_device(crop_to_image), **out)
    assert keypoints is out["keypoints"] and scores is out["scores"]
    keypoints, scores = keypoints.cpu(), scores.cpu()
    ref_keypoints, ref_scores = kernels.reference_decode(heatmaps, method, beta, crop_to_image)
    assert not torch.isnan(keypoints).any() and not torch.isnan(scores).any(), "an output element was not written"
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=0)
    if crop_to_image is not None:
        torch.testing.assert_close(keypoints, ref_keypoints, rtol=0, atol=IMAGE_ATOL)
    elif method in ("argmax", "msra"):
        torch.testing.assert_close(keypoints, ref_keypoints, rtol=0, atol=0)
    else:
        torch.testing.assert_close(keypoints, ref_keypoints, rtol=0, atol=KEYPOINT_ATOL)
    return keypoints, scores


# ------------------------------------------------------------------------------------------- forward parity

SHAPES = [(64, 64), (48, 64), (47, 61)]


@pytest.mark.parametrize("method,beta", METHODS)
@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("hw", SHAPES)
def test_decode_parity_k1_fp32(hw, n, method, beta):
    check_decode(make_heatmaps(n, 1, *hw, seed=n), method, beta)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method,beta", METHODS)
@pytest.mark.parametrize("hw", SHAPES)
def test_decode_parity_k1_half(hw, method, beta, dtype):
    check_decode(make_heatmaps(3, 1, *hw, dtype=dtype), method, beta)


# K=17 (every row of a pose model): a representative subset, the interpreter runs one program per row
@pytest.mark.parametrize(
    "n,hw,dtype,methods",
    [
        (1, (64, 64), torch.float32, METHODS),
        (3, (47, 61), torch.float32, METHODS[:3]),
        (3, (47, 61), torch.float16, METHODS[:3]),
        (1, (48, 64), torch.bfloat16, METHODS),
    ],
    ids=["n1-64x64-fp32", "n3-47x61-fp32", "n3-47x61-fp16", "n1-48x64-bf16"],
)
def test_decode_parity_k17(n, hw, dtype, methods):
    heatmaps = make_heatmaps(n, 17, *hw, dtype=dtype, seed=17)
    for method, beta in methods:
        check_decode(heatmaps, method, beta)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_parity_small_maps_several_rows_per_program(dtype):
    # 13x11 maps: 8 rows per program, and 15 rows leave the last program partly masked
    block, rows, _ = triton_decode._row_config(13, 11)
    assert rows > 1 and (3 * 5) % rows != 0
    heatmaps = make_heatmaps(3, 5, 13, 11, dtype=dtype, seed=5)
    for method, beta in METHODS:
        check_decode(heatmaps, method, beta)


def test_crop_to_image_parity_and_invalid_rows():
    n, k, h, w = 3, 5, 48, 64
    heatmaps = make_heatmaps(n, k, h, w, seed=3)
    affines = crop_affines(n, h, w)
    for method, beta in METHODS:
        image_xy, scores = check_decode(heatmaps, method, beta, affines)
        # invalid rows: (-1, -1) in heatmap pixels mapped through their crop's affine
        invalid = scores <= 0
        assert invalid.any()
        expected = reference.keypoints_to_image(torch.full((n, k, 2), -1.0), affines)
        torch.testing.assert_close(image_xy[invalid], expected[invalid], rtol=0, atol=IMAGE_ATOL)
    # the public function (poisoning is the launcher's test above) returns the same
    image_xy, _ = kernels.decode_heatmaps(
        on_device(heatmaps), "msra", crop_to_image=on_device(affines), backend="triton"
    )
    ref_xy, _ = kernels.reference_decode(heatmaps, "msra", crop_to_image=affines)
    torch.testing.assert_close(image_xy.cpu(), ref_xy, rtol=0, atol=IMAGE_ATOL)


def test_ties_negative_zero_and_nan_rows():
    heatmaps = torch.zeros(1, 5, 8, 8)
    heatmaps[0, 0, 5, 2] = heatmaps[0, 0, 3, 6] = heatmaps[0, 0, 5, 7] = 1.0  # three equal maxima
    heatmaps[0, 1] = -torch.arange(64, dtype=torch.float32).view(8, 8) - 1  # all negative, maximum at (0, 0)
    # row 2 stays all zero: score 0 is invalid too
    heatmaps[0, 3, 4, 4] = 0.5
    heatmaps[0, 3, 6, 1] = float("nan")  # NaN: torch.max reports NaN, the row is invalid
    heatmaps[0, 4, 3, 3] = 0.7  # an ordinary peak
    for method, beta in METHODS:
        keypoints, scores = triton_decode.launch_decode(heatmaps.to(DEVICE), method, beta, **poisoned(1, 5))
        keypoints, scores = keypoints.cpu(), scores.cpu()
        ref_keypoints, ref_scores = kernels.reference_decode(heatmaps, method, beta)
        torch.testing.assert_close(scores, ref_scores, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(keypoints, ref_keypoints, rtol=0, atol=KEYPOINT_ATOL)
        assert keypoints[0, 1].tolist() == [-1.0, -1.0] and scores[0, 1] == -1.0
        assert keypoints[0, 2].tolist() == [-1.0, -1.0] and scores[0, 2] == 0.0
        assert keypoints[0, 3].tolist() == [-1.0, -1.0] and torch.isnan(scores[0, 3])
    argmax_xy, _ = triton_decode.launch_decode(heatmaps.to(DEVICE), "argmax")
    assert argmax_xy[0, 0].tolist() == [6.0, 3.0]  # first maximum in row-major order
    assert argmax_xy[0, 4].tolist() == [3.0, 3.0]


def test_matches_golden(golden_dir):
    golden = dict(np.load(golden_dir / "heatmap_codec.npz"))
    heatmaps = torch.from_numpy(golden["heatmaps"]).to(DEVICE)  # (8, 17, 64, 64)
    beta = float(golden["softargmax_beta"])
    for method, scale in [("argmax", 1.0), ("msra", float(STRIDE))]:
        keypoints, scores = (t.cpu() for t in triton_decode.launch_decode(heatmaps, method, **poisoned(8, 17)))
        valid = golden[f"{method}_scores"] > 0
        assert (~valid).any(), "the golden set is expected to contain invalid rows"
        np.testing.assert_array_equal(scores.numpy(), golden[f"{method}_scores"])
        err = np.abs(keypoints.numpy() * scale - golden[f"{method}_keypoints"])[valid]
        assert err.max() <= 1e-4 * scale, f"{method}: {err.max() / scale:.2e} heatmap px from the golden"
        np.testing.assert_array_equal(keypoints.numpy()[~valid], -1.0)
    xy = kernels.soft_argmax(heatmaps, beta, backend="triton").cpu()
    assert np.abs(xy.numpy() - golden["softargmax_heatmap_xy"]).max() <= KEYPOINT_ATOL
    # DARK on two crops (34 maps: the interpreter is slow on its blur)
    keypoints = triton_decode.launch_decode(heatmaps[:2].contiguous(), "dark", **poisoned(2, 17))[0].cpu()
    valid = golden["dark_scores"][:2] > 0
    err = np.abs(keypoints.numpy() * STRIDE - golden["dark_keypoints"][:2])[valid]
    assert err.max() <= KEYPOINT_ATOL * STRIDE, f"dark: {err.max() / STRIDE:.2e} heatmap px from the golden"


# ----------------------------------------------------------------------------------------------- soft-argmax


@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_argmax_forward_and_saved_statistics(dtype):
    heatmaps = make_heatmaps(2, 3, 47, 61, dtype=dtype, seed=11)
    beta = 7.0
    stats = torch.full((2, 3, triton_decode.STATS), float("nan"), device=DEVICE)
    out = poisoned(2, 3)
    xy, _ = triton_decode.launch_decode(heatmaps.to(DEVICE), "softargmax", beta, mark_invalid=False, stats=stats, **out)
    xy, stats = xy.cpu(), stats.cpu()
    # every row, invalid ones included: the raw expectation
    ref_xy = reference.soft_argmax(heatmaps.float(), beta)
    torch.testing.assert_close(xy, ref_xy, rtol=0, atol=KEYPOINT_ATOL)
    logits = heatmaps.float().flatten(2) * beta
    logit_max = logits.amax(-1)
    total = torch.exp(logits - logit_max.unsqueeze(-1)).sum(-1)
    torch.testing.assert_close(stats[..., 0], logit_max, rtol=0, atol=0)
    torch.testing.assert_close(stats[..., 1], total, rtol=1e-5, atol=0)
    centre = torch.tensor([(61 - 1) / 2, (47 - 1) / 2])
    torch.testing.assert_close(stats[..., 2:], ref_xy - centre, rtol=0, atol=KEYPOINT_ATOL)
    # the public function returns the input's dtype, like the reference (within one unit of its last place)
    public = kernels.soft_argmax(heatmaps.to(DEVICE), beta, backend="triton").cpu()
    assert public.dtype == dtype
    ulp = torch.finfo(dtype).eps * ref_xy.abs().clamp_min(1.0)
    assert ((public.float() - reference.soft_argmax(heatmaps, beta).float()).abs() <= ulp + KEYPOINT_ATOL).all()


def test_reference_soft_argmax_passes_gradcheck():
    heatmaps = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reference.soft_argmax(t, 3.0), (heatmaps,))


@pytest.mark.parametrize("hw", [(47, 61), (13, 11)])
def test_soft_argmax_backward_matches_reference(hw):
    beta = 5.0
    heatmaps = make_heatmaps(2, 3, *hw, seed=21)
    grad_xy = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0))
    ref_input = heatmaps.clone().requires_grad_(True)
    reference.soft_argmax(ref_input, beta).backward(grad_xy)
    # the launcher into a poisoned buffer, from the forward's statistics
    maps = heatmaps.to(DEVICE)
    stats = torch.empty(2, 3, triton_decode.STATS, device=DEVICE)
    triton_decode.launch_decode(maps, "softargmax", beta, mark_invalid=False, stats=stats)
    grad = torch.full_like(maps, float("nan"))
    triton_decode.launch_soft_argmax_backward(maps, stats, grad_xy.to(DEVICE), beta, grad_heatmaps=grad)
    torch.testing.assert_close(grad.cpu(), ref_input.grad, rtol=0, atol=GRAD_ATOL)
    # and through autograd
    kernel_input = heatmaps.to(DEVICE, copy=True).requires_grad_(True)
    kernels.soft_argmax(kernel_input, beta, backend="triton").backward(grad_xy.to(DEVICE))
    assert kernel_input.grad is not None
    torch.testing.assert_close(kernel_input.grad.cpu(), ref_input.grad, rtol=0, atol=GRAD_ATOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_soft_argmax_backward_half(dtype):
    beta = 5.0
    heatmaps = make_heatmaps(2, 3, 48, 64, dtype=dtype, seed=22)
    grad_xy = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1)).to(dtype)
    ref_input = heatmaps.clone().requires_grad_(True)
    reference.soft_argmax(ref_input, beta).backward(grad_xy)
    kernel_input = heatmaps.to(DEVICE, copy=True).requires_grad_(True)
    kernels.soft_argmax(kernel_input, beta, backend="triton").backward(grad_xy.to(DEVICE))
    assert kernel_input.grad is not None and ref_input.grad is not None
    assert kernel_input.grad.dtype == dtype
    # both compute in float32 and round once to the dtype: at most one unit in the last place apart
    scale = ref_input.grad.float().abs().max().item()
    torch.testing.assert_close(
        kernel_input.grad.float().cpu(), ref_input.grad.float(), rtol=torch.finfo(dtype).eps, atol=1e-3 * scale
    )


def test_integral_loss_training_step_uses_the_kernel():
    """One optimizer step of a small conv net under L1(soft_argmax(heatmaps), target), kernel vs reference."""
    torch.manual_seed(0)
    num_k, beta = 4, 5.0
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, num_k, 3, padding=1)
    ).to(DEVICE)
    ref_net = copy.deepcopy(net)
    images = torch.randn(2, 3, 24, 20).to(DEVICE)
    target = (torch.rand(2, num_k, 2) * torch.tensor([19.0, 23.0])).to(DEVICE)

    def loss_of(model, backend):
        heatmaps = model(images)  # (2, 4, 24, 20)
        return torch.nn.functional.l1_loss(kernels.soft_argmax(heatmaps, beta, backend=backend), target)

    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss = loss_of(net, "triton")
    loss.backward()
    ref_loss = loss_of(ref_net, "torch")
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=KEYPOINT_ATOL)
    for p, ref_p in zip(net.parameters(), ref_net.parameters(), strict=True):
        assert p.grad is not None and p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, ref_p.grad, rtol=0, atol=GRAD_ATOL)
    optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))


# ----------------------------------------------------------------------------------------- dispatch, refusal


def test_auto_backend_runs_the_reference_on_cpu():
    # float64 is refused by the kernels, so a result proves that "auto" and "torch" took the reference path
    heatmaps = make_heatmaps(1, 4, 16, 16, dtype=torch.float64)
    for backend in ("auto", "torch"):
        keypoints, scores = kernels.decode_heatmaps(heatmaps, "msra", backend=backend)
        ref_keypoints, ref_scores = reference.decode_heatmaps(heatmaps, "msra")
        assert torch.equal(keypoints, ref_keypoints) and torch.equal(scores, ref_scores)
        xy = kernels.soft_argmax(heatmaps, 2.0, backend=backend)
        assert xy.dtype == torch.float64 and torch.equal(xy, reference.soft_argmax(heatmaps, 2.0))


@pytest.mark.parametrize("method", ["msra", "softargmax"])
def test_evaluation_dispatch_decodes_through_the_kernel(monkeypatch, openfield_subset_dir, method):
    """Training evaluation (``training.keypoints.evaluate_model``, the two-pass predictor with the PyTorch crop
    runner ``kernels.predict.model_crop_runner``) decodes through the fused kernel with its crop->image epilogue: on
    CUDA by default ("auto"), here on CPU under the interpreter when the Triton backend is asked for. The kernel
    is seen to launch, with the affines, and gives the PyTorch reference's image-pixel keypoints."""
    from test_runtime_support import INPUT_WH, pooling_model

    from tardis_edge.data import load_dataset
    from tardis_edge.predict import PredictConfig
    from training.keypoints import evaluate_model

    launches = []
    launch = triton_decode.launch_decode

    def spy(heatmaps, method, beta=None, crop_to_image=None, **kwargs):
        launches.append((heatmaps.device.type, crop_to_image is not None))
        return launch(heatmaps, method, beta, crop_to_image, **kwargs)

    monkeypatch.setattr(triton_decode, "launch_decode", spy)
    dataset = load_dataset(openfield_subset_dir)
    samples, schema = dataset.samples[-3:], dataset.schema  # three openfield test frames (img0100, 0105, 0115)
    model = pooling_model(schema.num_keypoints).to(DEVICE)
    cfg = PredictConfig(decode=method, flip_test=True, two_pass=True, batch_size=2)  # batches of 2 and 1

    def evaluate(backend: str) -> tuple[dict, np.ndarray, np.ndarray]:
        launches.clear()
        return evaluate_model(model, samples, schema, INPUT_WH, cfg, DEVICE, decode_backend=backend)

    metrics, keypoints, scores = evaluate("triton")
    assert launches == [(DEVICE.type, True)] * 4, "two passes of two batches, each one fused decode to image px"
    ref_metrics, ref_keypoints, ref_scores = evaluate("torch")
    assert launches == []
    assert np.isfinite(ref_keypoints).all() and (ref_scores > 0).all()
    np.testing.assert_array_equal(scores, ref_scores)
    np.testing.assert_allclose(keypoints, ref_keypoints, atol=IMAGE_ATOL, rtol=0)
    assert metrics["rmse_px"] == pytest.approx(ref_metrics["rmse_px"], abs=IMAGE_ATOL)
    # "auto", the default: the kernel on CUDA, the reference elsewhere
    _, auto_keypoints, _ = evaluate("auto")
    assert len(launches) == (4 if ON_CUDA else 0)
    np.testing.assert_allclose(auto_keypoints, ref_keypoints, atol=IMAGE_ATOL, rtol=0)


def test_empty_batch():
    keypoints, scores = kernels.decode_heatmaps(torch.zeros(0, 17, 8, 8, device=DEVICE), "argmax", backend="triton")
    assert keypoints.shape == (0, 17, 2) and scores.shape == (0, 17)


def test_bad_input_is_refused(monkeypatch):
    good = torch.rand(2, 3, 8, 8, device=DEVICE)
    decode = kernels.decode_heatmaps
    with pytest.raises(TypeError, match="float32, float16 or bfloat16.*torch.float64.*backend='torch'"):
        decode(good.double(), "argmax", backend="triton")
    with pytest.raises(ValueError, match=r"contiguous.*\.contiguous\(\)"):
        decode(good.transpose(2, 3), "argmax", backend="triton")
    with pytest.raises(ValueError, match=r"\(N, K, H, W\); got shape \(3, 8, 8\)"):
        decode(good[0], "argmax", backend="triton")
    with pytest.raises(ValueError, match=r"129x128 heatmap \(16512 elements\) does not fit one Triton block"):
        decode(torch.zeros(1, 1, 129, 128, device=DEVICE), "argmax", backend="triton")
    with pytest.raises(ValueError, match=r"65x129 heatmap pads to a 128x256 tile for the DARK kernel"):
        decode(torch.zeros(1, 1, 65, 129, device=DEVICE), "dark", backend="triton")
    with pytest.raises(ValueError, match="DARK blur kernel must be a positive odd size, got 10"):
        decode(good, "dark", blur_kernel=10, backend="triton")
    with pytest.raises(ValueError, match="unknown decode method 'gauss'; choose one of argmax, msra, dark"):
        decode(good, "gauss")
    with pytest.raises(ValueError, match="soft-argmax needs beta"):
        decode(good, "soft-argmax", backend="triton")
    with pytest.raises(ValueError, match="beta must be a positive finite number, got -1.0"):
        kernels.soft_argmax(good, -1.0, backend="triton")
    with pytest.raises(ValueError, match="beta=2.0 is only used by the soft-argmax"):
        decode(good, "msra", 2.0)
    with pytest.raises(ValueError, match="unknown backend 'cuda'; choose one of auto, triton, torch"):
        decode(good, "msra", backend="cuda")
    with pytest.raises(ValueError, match=r"crop_to_image must be \(2, 2, 3\).*got \(1, 2, 3\)"):
        decode(good, "msra", crop_to_image=torch.zeros(1, 2, 3, device=DEVICE), backend="triton")
    with pytest.raises(TypeError, match="crop_to_image must be a float tensor"):
        decode(good, "msra", crop_to_image=np.zeros((2, 2, 3)), backend="triton")
    with pytest.raises(ValueError, match=r"keypoints buffer must be a contiguous torch.float32 tensor of shape"):
        triton_decode.launch_decode(good, "argmax", keypoints=torch.empty(2, 3, 2, dtype=torch.float16, device=DEVICE))
    # CPU tensors reach the kernels only under the interpreter
    monkeypatch.setattr(triton_decode, "INTERPRETED", False)
    with pytest.raises(ValueError, match="the Triton kernels run on CUDA tensors; heatmaps are on cpu"):
        decode(good.cpu(), "argmax", backend="triton")


def test_import_and_cpu_path_work_without_triton():
    """``import kernels`` and the reference path need no triton; asking for Triton says which extra to install."""
    script = (
        "import sys\n"
        "class NoTriton:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'triton' or name.startswith('triton.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTriton())\n"
        "import torch, kernels\n"
        "keypoints, scores = kernels.decode_heatmaps(torch.rand(1, 2, 8, 8), 'msra')\n"
        "assert keypoints.shape == (1, 2, 2) and not kernels.triton_available()\n"
        "try:\n"
        "    kernels.soft_argmax(torch.rand(1, 2, 8, 8), 2.0, backend='triton')\n"
        "except ImportError as error:\n"
        "    print('refused:', error)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "refused: the Triton kernels need triton: pip install 'tardis-edge[kernels]'" in result.stdout


@pytest.mark.gpu
def test_compiled_kernels_match_reference_on_cuda():
    """On a GPU: the compiled kernels (not the interpreter) against the CPU reference, in a fresh process."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "kernels.bench", "--check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
