"""Contract tests for the student networks: shapes, gradients, feature_info, deployment form, config, export.

Heavy variants run on small inputs (the contract does not depend on the size); the reference counts are the
published ones: torchvision ResNet-18/50 with the ImageNet classifier, RepVGG-A0 (deployed, with classifier;
Ding et al. 2021, Table 2: 8.30M) and HRNet-W32 with a 1x1 conv to 17 heatmaps (Sun et al. 2019: 28.5M).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tardis_edge.models import (
    BACKBONES,
    HEAD_FINAL_CONV,
    HeatmapHead,
    ModelConfig,
    TopDownNeck,
    build_model,
    hrnet_w32,
    model_from_checkpoint,
    repvgg_a0,
    resnet18,
    resnet50,
)

# Input side per variant (the 256 px case is test_full_size_heatmaps_are_64x64_for_256_input): small to stay fast.
TEST_SIDE = {"resnet18": 128, "repvgg_a0": 128, "resnet50": 64, "hrnet_w32": 64}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rgb_batch(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255.0  # RGB 0..255


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Give every BatchNorm real running statistics (cumulative average over a few train-mode passes)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for chunk in images.split(2):
            model(chunk)
    model.eval()


def test_published_parameter_counts():
    assert n_params(resnet18(num_classes=1000)) == 11_689_512
    assert n_params(resnet50(num_classes=1000)) == 25_557_032
    deployed = repvgg_a0(num_classes=1000).eval()
    deployed.reparameterize()
    assert n_params(deployed) == 8_309_384
    hrnet_with_simple_head = n_params(hrnet_w32()) + n_params(nn.Conv2d(32, 17, 1))
    assert abs(hrnet_with_simple_head - 28.5e6) < 0.05e6, hrnet_with_simple_head


@pytest.mark.parametrize("name", list(BACKBONES))
def test_feature_info_matches_feature_maps(name):
    backbone = BACKBONES[name].build().eval()
    height, width = 64, 96  # non-square: each axis is checked against each reduction
    with torch.no_grad():
        maps = backbone.forward_features(torch.randn(1, 3, height, width))
    assert len(maps) == len(backbone.feature_info)
    for feature, info in zip(maps, backbone.feature_info, strict=True):
        assert feature.shape == (1, info["num_chs"], height // info["reduction"], width // info["reduction"])
        backbone.get_submodule(info["module"])  # the named producer exists
    assert [info["reduction"] for info in backbone.feature_info] == [4, 8, 16, 32]


@pytest.mark.parametrize("name", list(BACKBONES))
def test_pose_model_contract(name):
    torch.manual_seed(0)
    teacher_channels, num_keypoints = 48, 3  # deliberately not a DINOv2 width: the decoder must size itself
    model = build_model(
        ModelConfig(backbone=name, teacher_channels=teacher_channels, num_keypoints=num_keypoints, use_head=True)
    ).train()
    side = TEST_SIDE[name]
    outputs = model(rgb_batch(2, side, side))
    assert set(outputs) == {"features", "heatmaps"}
    assert outputs["features"].shape == (2, teacher_channels, side // 4, side // 4)
    assert outputs["heatmaps"].shape == (2, num_keypoints, side // 4, side // 4)
    assert all(torch.isfinite(t).all() for t in outputs.values())

    # Squares, not means: a mean's gradient through a BatchNorm'd map can vanish exactly.
    loss = outputs["features"].square().mean() + outputs["heatmaps"].square().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad[:10]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_full_size_heatmaps_are_64x64_for_256_input():
    model = build_model(ModelConfig(backbone="repvgg_a0", use_decoder=False, use_head=True, num_keypoints=4)).eval()
    with torch.no_grad():
        out = model(rgb_batch(1, 256, 256))
    assert list(out) == ["heatmaps"] and out["heatmaps"].shape == (1, 4, 64, 64)
    assert model.out_stride == 4 and model.max_stride == 32


def test_normalisation_is_inside_the_model():
    model = build_model(ModelConfig(backbone="resnet18")).eval()
    seen = {}
    model.backbone.conv1.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0]))
    z = torch.randn(1, 3, 64, 64)
    mean = torch.tensor(model.config.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(model.config.std).reshape(1, 3, 1, 1)
    with torch.no_grad():
        model.encode((mean + std * z) * 255.0)  # an RGB 0..255 image whose ImageNet normalisation is z
    torch.testing.assert_close(seen["x"], z, atol=1e-5, rtol=1e-5)


def test_input_side_not_multiple_of_stride_is_rejected():
    model = build_model(ModelConfig(backbone="repvgg_a0"))
    with pytest.raises(ValueError, match=r"input width 250 is not a multiple of 32.*\(e\.g\. 256\)"):
        model(rgb_batch(1, 256, 250))
    with pytest.raises(ValueError, match=r"input height 100 is not a multiple of 32"):
        model(rgb_batch(1, 100, 64))
    with pytest.raises(ValueError, match=r"expects RGB images \(N, 3, H, W\).*got shape \(1, 1, 64, 64\)"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"input_size \(256, 200\) has a side not divisible by 32"):
        build_model(ModelConfig(backbone="resnet18", input_size=(256, 200)))


def test_repvgg_deployment_form_matches_training_form():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="repvgg_a0", teacher_channels=64, use_head=True, num_keypoints=4))
    calibrate_batchnorm(model, rgb_batch(4, 64, 64, seed=1))
    images = rgb_batch(2, 64, 64, seed=2)
    with torch.no_grad():
        reference = model(images)
        model.reparameterize()
        deployed = model(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert {type(m) for m in model.backbone.modules() if not list(m.children())} == {nn.Conv2d, nn.ReLU}
    for key in reference:
        assert (reference[key] - deployed[key]).abs().max() < 1e-4, key
        assert reference[key].abs().max() > 1e-2  # the comparison is not between two near-zero maps


def test_repvgg_fusion_is_exact_in_float64():
    torch.manual_seed(0)
    backbone = repvgg_a0().double()
    calibrate_batchnorm(backbone, torch.randn(4, 3, 64, 64, dtype=torch.float64))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        reference = backbone(x)
        backbone.reparameterize()
        deployed = backbone(x)
    for a, b in zip(reference, deployed, strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


def test_freeze_encoder_keeps_backbone_and_neck_fixed():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", use_decoder=False, use_head=True, num_keypoints=2))
    model.freeze_encoder()
    model.train()
    assert not model.backbone.bn1.training and not model.neck.training and model.head.training
    stats_before = model.backbone.bn1.running_mean.clone()
    model(rgb_batch(2, 64, 64))["heatmaps"].square().mean().backward()
    torch.testing.assert_close(model.backbone.bn1.running_mean, stats_before, rtol=0, atol=0)
    assert all(p.grad is None for m in model.encoder_modules() for p in m.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    model.unfreeze_encoder()
    assert model.backbone.bn1.training and all(p.requires_grad for p in model.parameters())


def test_stage_transition_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", teacher_channels=32))
    model.drop_decoder()
    model.add_head(num_keypoints=4, head_depth=1)
    assert model.head.final is model.get_submodule(HEAD_FINAL_CONV)
    path = tmp_path / "student.pt"
    torch.save(model.checkpoint(), path)

    restored = model_from_checkpoint(path)  # torch.load(weights_only=True) inside
    assert restored.config == model.config
    assert (restored.config.use_decoder, restored.config.use_head, restored.config.num_keypoints) == (False, True, 4)
    images = rgb_batch(1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(images), model.eval()(images), rtol=0, atol=0)
    with pytest.raises(KeyError, match=r"lacks model_config; a PoseModel checkpoint holds"):
        model_from_checkpoint({"model": model.state_dict()})


def test_model_without_outputs_is_an_error():
    model = build_model(ModelConfig(backbone="resnet18"))
    model.drop_decoder()
    with pytest.raises(RuntimeError, match=r"neither a feature decoder nor a heatmap head; call add_head"):
        model(rgb_batch(1, 64, 64))


def test_model_config_is_checked():
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg16'; known backbones: resnet18, resnet50, hrnet_w32"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match=r"unknown key\(s\) neck_width; known keys: backbone, neck_channels"):
        ModelConfig.from_dict({"neck_width": 64})
    with pytest.raises(TypeError, match=r"neck_channels must be of type int, got '128'"):
        ModelConfig.from_dict({"neck_channels": "128"})
    with pytest.raises(TypeError, match=r"use_head must be of type bool, got 1"):
        ModelConfig.from_dict({"use_head": 1})
    with pytest.raises(ValueError, match=r"teacher_channels must be >= 1, got 0"):
        ModelConfig(teacher_channels=0)
    # YAML/JSON lists become tuples, so a config survives a round trip through a checkpoint or a YAML file.
    cfg = ModelConfig.from_dict({"input_size": [192, 256], "mean": [0.5, 0.5, 0.5]})
    assert cfg.input_size == (192, 256) and cfg.mean == (0.5, 0.5, 0.5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_neck_and_head_building_blocks():
    with pytest.raises(ValueError, match=r"finest first with integer stride ratios; got reductions \[8, 4\]"):
        TopDownNeck([{"num_chs": 8, "reduction": 8}, {"num_chs": 8, "reduction": 4}])
    neck = TopDownNeck([{"num_chs": 8, "reduction": 4}, {"num_chs": 16, "reduction": 16}], out_channels=12)
    out = neck([torch.randn(1, 8, 16, 16), torch.randn(1, 16, 4, 4)])
    assert out.shape == (1, 12, 16, 16)
    head = HeatmapHead(12, num_keypoints=5, depth=0)  # SimpleBaseline-style lone 1x1
    assert len(head.layers) == 0 and head(out).shape == (1, 5, 16, 16)


def test_onnx_export_of_deployed_edge_model(tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra: pip install tardis-edge[export]")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'export' extra: pip install tardis-edge[export]")
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="repvgg_a0", use_decoder=False, use_head=True, num_keypoints=4))
    calibrate_batchnorm(model, rgb_batch(4, 64, 64, seed=1))
    model.reparameterize()
    path = tmp_path / "edge.onnx"
    torch.onnx.export(
        model,
        (rgb_batch(1, 64, 64),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["heatmaps"],
        dynamic_axes={"image": {0: "batch"}, "heatmaps": {0: "batch"}},
    )
    graph = onnx.load(str(path)).graph
    # Only ops TensorRT runs natively in INT8/FP16 (Identity/Constant are folded by any runtime).
    allowed = {"Conv", "Relu", "Add", "Resize", "Sub", "Div", "Identity", "Constant"}
    assert {node.op_type for node in graph.node} <= allowed
    assert "/head/final/Conv" in {node.name for node in graph.node}

    images = rgb_batch(3, 64, 64, seed=3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (heatmaps,) = session.run(None, {"image": images.numpy()})
    with torch.no_grad():
        reference = model(images)["heatmaps"]
    torch.testing.assert_close(torch.from_numpy(heatmaps), reference, atol=1e-4, rtol=1e-4)
