"""DINOv2 teacher: golden parity, architecture inference from official shapes, layout errors, fingerprint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tardis_edge.teacher import infer_dinov2_config, load_dinov2, random_dinov2, state_dict_fingerprint

# Shapes of the official checkpoints (dinov2_vits14_pretrain.pth, dinov2_vitl14_reg4_pretrain.pth,
# dinov2_vitg14_pretrain.pth), written out here independently of tardis_edge.teacher.
OFFICIAL = {
    "vits14": dict(dim=384, depth=12, heads=6, regs=0, ffn="mlp", hidden=1536),
    "vitl14_reg4": dict(dim=1024, depth=24, heads=16, regs=4, ffn="mlp", hidden=4096),
    "vitg14": dict(dim=1536, depth=40, heads=24, regs=0, ffn="swiglu", hidden=4096),
}


def official_shapes(dim: int, depth: int, regs: int, ffn: str, hidden: int, **_) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1370, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, 14, 14),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    if regs:
        shapes["register_tokens"] = (1, regs, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (dim,),
            b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim),
            b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim),
            b + "attn.proj.bias": (dim,),
            b + "ls1.gamma": (dim,),
            b + "norm2.weight": (dim,),
            b + "norm2.bias": (dim,),
            b + "ls2.gamma": (dim,),
        }
        if ffn == "swiglu":
            shapes |= {
                b + "mlp.w12.weight": (2 * hidden, dim),
                b + "mlp.w12.bias": (2 * hidden,),
                b + "mlp.w3.weight": (dim, hidden),
                b + "mlp.w3.bias": (dim,),
            }
        else:
            shapes |= {
                b + "mlp.fc1.weight": (hidden, dim),
                b + "mlp.fc1.bias": (hidden,),
                b + "mlp.fc2.weight": (dim, hidden),
                b + "mlp.fc2.bias": (dim,),
            }
    return shapes


@pytest.fixture(scope="module")
def golden(golden_dir):
    spec = json.loads((golden_dir / "golden.json").read_text())["dinov2"][0]
    return spec, np.load(golden_dir / "dinov2_vit_tiny.npz"), golden_dir / "dinov2_vit_tiny.pth"


def test_golden_parity(golden):
    spec, ref, path = golden
    model = load_dinov2(path, num_heads=spec["heads"])
    cfg = model.cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) == (
        spec["embed_dim"],
        spec["depth"],
        spec["heads"],
        spec["patch_size"],
    )
    assert cfg.pos_grid * cfg.patch_size == spec["img_size"]
    assert cfg.interpolate_offset == spec["interpolate_offset"]
    assert cfg.interpolate_antialias == spec["interpolate_antialias"]
    for h, w in spec["sizes_hw"]:
        x = torch.from_numpy(ref[f"input_{h}x{w}"])
        with torch.no_grad():
            out = model.features(x)
        patches = out["patch_tokens"]
        assert patches.shape == (x.shape[0], spec["embed_dim"], h // 14, w // 14)
        tokens = patches.flatten(2).transpose(1, 2).numpy()  # (N, h*w, C), row-major like the reference
        np.testing.assert_allclose(tokens, ref[f"patchtokens_{h}x{w}"], rtol=0, atol=1e-4, err_msg=f"{h}x{w}")
        np.testing.assert_allclose(out["cls_token"].numpy(), ref[f"clstoken_{h}x{w}"], rtol=0, atol=1e-4)


def test_golden_needs_the_right_head_count(golden):
    """The default embed_dim/64 rule gives the tiny model 1 head; its outputs must then disagree."""
    _, ref, path = golden
    model = load_dinov2(path)
    assert model.cfg.num_heads == 1
    with torch.no_grad():
        cls = model.features(torch.from_numpy(ref["input_224x224"]))["cls_token"].numpy()
    assert np.abs(cls - ref["clstoken_224x224"]).max() > 1e-2


def test_chunked_block_layout_loads_the_same(golden):
    spec, ref, path = golden
    sd = torch.load(path, weights_only=True)
    # blocks.{chunk}.{i}: the layout of checkpoints trained with block_chunks (one block per chunk here)
    chunked = {}
    for key, value in sd.items():
        parts = key.split(".")
        chunked[".".join([parts[0], parts[1], *parts[1:]]) if parts[0] == "blocks" else key] = value
    assert "blocks.1.1.norm1.weight" in chunked
    x = torch.from_numpy(ref["input_168x280"])
    with torch.no_grad():
        a = load_dinov2(sd, num_heads=spec["heads"])(x)
        b = load_dinov2({"model": chunked}, num_heads=spec["heads"])(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("variant", sorted(OFFICIAL))
def test_infers_official_architectures_on_meta(variant):
    spec = OFFICIAL[variant]
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in official_shapes(**spec).items()}
    cfg = infer_dinov2_config(sd)
    model = load_dinov2(sd)  # full depth, no memory: shapes only
    assert model.cfg == cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (spec["dim"], spec["depth"], spec["heads"])
    assert (cfg.num_register_tokens, cfg.ffn, cfg.ffn_hidden) == (spec["regs"], spec["ffn"], spec["hidden"])
    assert (cfg.patch_size, cfg.pos_grid) == (14, 37)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_shapes(**spec)


@pytest.mark.parametrize("variant", sorted(OFFICIAL))
def test_reduced_depth_official_shapes_load_and_run(variant):
    spec = OFFICIAL[variant] | {"depth": 1}
    gen = torch.Generator().manual_seed(3)
    sd = {k: torch.randn(s, generator=gen) * 0.02 for k, s in official_shapes(**spec).items()}
    model = load_dinov2(sd)
    for name, value in model.state_dict().items():
        assert torch.equal(value, sd[name]), name  # every tensor landed where its name says
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    with torch.no_grad():
        out = model.features(torch.randn(2, 3, 28, 42, generator=gen))
    assert out["patch_tokens"].shape == (2, spec["dim"], 2, 3)
    assert out["cls_token"].shape == (2, spec["dim"])
    if spec["regs"]:
        assert out["register_tokens"].shape == (2, spec["regs"], spec["dim"])
    else:
        assert "register_tokens" not in out
    assert torch.isfinite(out["patch_tokens"]).all()


def test_random_teacher_matches_official_shapes():
    model = random_dinov2("vitl14_reg4", depth=2)
    expected = official_shapes(**(OFFICIAL["vitl14_reg4"] | {"depth": 2}))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    with pytest.raises(ValueError, match="unknown DINOv2 variant 'vitx14'.*vits14"):
        random_dinov2("vitx14")


def test_layout_errors_name_the_keys(golden):
    spec, _, path = golden
    sd = torch.load(path, weights_only=True)
    broken = dict(sd)
    del broken["blocks.1.ls2.gamma"]
    broken["blocks.1.attn.extra"] = torch.zeros(3)
    broken["blocks.0.mlp.fc2.bias"] = torch.zeros(65)
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.ls2.gamma'\]") as err:
        load_dinov2(broken, num_heads=2)
    assert "unexpected keys ['blocks.1.attn.extra']" in str(err.value)
    assert "blocks.0.mlp.fc2.bias: checkpoint (65,) vs model (64,)" in str(err.value)
    with pytest.raises(KeyError, match="missing.*patch_embed.proj.weight"):
        load_dinov2({k: v for k, v in sd.items() if not k.startswith("patch_embed")})
    with pytest.raises(ValueError, match="num_heads=3 does not divide the embedding dimension 64"):
        load_dinov2(sd, num_heads=3)
    with pytest.raises(FileNotFoundError, match="nope.pth not found"):
        load_dinov2(path.parent / "nope.pth")


def test_input_side_must_be_a_patch_multiple():
    model = random_dinov2("vits14", depth=1)
    with pytest.raises(ValueError, match=r"30x28 \(HxW\) is not a multiple of the patch size 14"):
        model.features(torch.zeros(1, 3, 30, 28))


def test_fingerprint_is_stable_and_sensitive():
    a, b = random_dinov2("vits14", depth=1, seed=0), random_dinov2("vits14", depth=1, seed=0)
    assert a.fingerprint() == b.fingerprint() == state_dict_fingerprint(dict(reversed(a.state_dict().items())))
    assert random_dinov2("vits14", depth=1, seed=1).fingerprint() != a.fingerprint()
    sd = {k: v.clone() for k, v in a.state_dict().items()}
    sd["norm.bias"][0] += 1e-3
    assert state_dict_fingerprint(sd) != a.fingerprint()
