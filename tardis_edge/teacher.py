"""Stage 1 teacher: a frozen DINOv2 ViT in plain PyTorch that loads the official checkpoints.

The model mirrors facebookresearch/dinov2 ``vision_transformer.py`` at inference: patchify conv, CLS token,
optional register tokens, bicubic positional-embedding interpolation with the reference's 0.1 offset, pre-norm
blocks with LayerScale, a GELU MLP (ViT-S/B/L) or SwiGLU (ViT-g), and a final LayerNorm (eps 1e-6). Attention
runs through ``torch.nn.functional.scaled_dot_product_attention``; no xformers, no torch.hub, no network.

The architecture is read from the tensor shapes of the state dict (``infer_dinov2_config``), so the same
``load_dinov2`` takes ViT-S/14 to ViT-g/14, with or without registers.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6
HEAD_DIM = 64  # the DINOv2 rule: num_heads = embed_dim / 64 (ViT-S 6, B 12, L 16, g 24)


@dataclass(frozen=True)
class DinoV2Config:
    """The shape of one DINOv2 ViT, as far as inference needs it."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 14
    in_chans: int = 3
    pos_grid: int = 37  # positional embeddings are learnt on a pos_grid x pos_grid patch grid (518 px / 14)
    num_register_tokens: int = 0
    ffn: str = "mlp"  # "mlp" (fc1, GELU, fc2) or "swiglu" (w12, SiLU gate, w3; ViT-g)
    ffn_hidden: int = 1536  # fc1 output width (mlp) or the gated width (swiglu)
    layer_scale: bool = True
    qkv_bias: bool = True
    interpolate_offset: float = 0.1  # the reference's scale-factor kludge, kept for numerical parity
    interpolate_antialias: bool = False


# Official shapes (dinov2 hub/backbones.py): embed dim, depth, FFN kind. ViT-g's SwiGLU hidden width is
# ((int(4 * 1536 * 2 / 3) + 7) // 8) * 8 = 4096, as SwiGLUFFNFused computes it.
_VARIANTS: dict[str, tuple[int, int, str, int]] = {
    "vits14": (384, 12, "mlp", 4 * 384),
    "vitb14": (768, 12, "mlp", 4 * 768),
    "vitl14": (1024, 24, "mlp", 4 * 1024),
    "vitg14": (1536, 40, "swiglu", 4096),
}
VARIANTS = tuple(sorted(_VARIANTS)) + tuple(sorted(f"{v}_reg4" for v in _VARIANTS))


def variant_config(variant: str, depth: int | None = None) -> DinoV2Config:
    """The official architecture of ``variant`` (e.g. ``"vits14"``, ``"vitl14_reg4"``), optionally shallower."""
    base, _, reg = variant.partition("_")
    if base not in _VARIANTS or reg not in ("", "reg4"):
        raise ValueError(f"unknown DINOv2 variant {variant!r}; known: {', '.join(VARIANTS)}")
    dim, official_depth, ffn, hidden = _VARIANTS[base]
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return DinoV2Config(
        embed_dim=dim,
        depth=official_depth if depth is None else depth,
        num_heads=dim // HEAD_DIM,
        num_register_tokens=4 if reg else 0,
        ffn=ffn,
        ffn_hidden=hidden,
    )


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, T, C / heads)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, cfg: DinoV2Config) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = _Attention(dim, cfg.num_heads, cfg.qkv_bias)
        self.ls1 = _LayerScale(dim) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = _SwiGLU(dim, cfg.ffn_hidden) if cfg.ffn == "swiglu" else _Mlp(dim, cfg.ffn_hidden)
        self.ls2 = _LayerScale(dim) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: DinoV2Config) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)


class DinoV2(nn.Module):
    """DINOv2 ViT backbone (inference only); parameter names match the official checkpoints."""

    def __init__(self, cfg: DinoV2Config) -> None:
        super().__init__()
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(f"num_heads {cfg.num_heads} does not divide embed_dim {cfg.embed_dim}")
        self.cfg = cfg
        dim = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, dim))
        if cfg.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # used only by DINOv2 training; kept for the layout
        self.patch_embed = _PatchEmbed(cfg)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.autocast_dtype: torch.dtype | None = torch.bfloat16  # used on CUDA only; CPU runs float32
        self._fingerprint: str | None = None

    @property
    def patch_size(self) -> int:
        return self.cfg.patch_size

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Positional embeddings ``(1, 1 + grid_h * grid_w, C)`` for a ``grid_h x grid_w`` patch grid.

        Bicubic with a scale factor of ``(grid + 0.1) / pos_grid`` and no antialiasing, exactly as the
        reference does; the learnt grid itself is returned untouched for a square input of the learnt size.
        """
        pos = self.pos_embed
        m = self.cfg.pos_grid
        if grid_h == m and grid_w == m:
            return pos
        pos = pos.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = pos.shape[-1]
        kwargs: dict = {}
        if self.cfg.interpolate_offset:
            off = self.cfg.interpolate_offset
            kwargs["scale_factor"] = ((grid_h + off) / m, (grid_w + off) / m)
        else:
            kwargs["size"] = (grid_h, grid_w)
        patch_pos = F.interpolate(
            patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2),  # (1, C, m, m)
            mode="bicubic",
            antialias=self.cfg.interpolate_antialias,
            **kwargs,
        )
        assert patch_pos.shape[-2:] == (grid_h, grid_w), patch_pos.shape
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([cls_pos, patch_pos], dim=1).to(self.pos_embed.dtype)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: ``(N, 1 + R + h * w, C)`` in the order CLS, registers, patches."""
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"teacher input must be (N, {self.cfg.in_chans}, H, W), got {tuple(x.shape)}")
        p = self.cfg.patch_size
        height, width = x.shape[-2:]
        if height % p or width % p:
            raise ValueError(
                f"teacher input {height}x{width} (HxW) is not a multiple of the patch size {p}; "
                f"resize or crop to e.g. {max(p, height // p * p)}x{max(p, width // p * p)}"
            )
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (N, h * w, C)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(height // p, width // p).to(tokens.dtype)
        if self.cfg.num_register_tokens:
            regs = self.register_tokens.expand(x.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised features of ``x`` ``(N, 3, H, W)`` (ImageNet-normalised RGB; H, W multiples of the patch).

        Returns:
            ``patch_tokens`` ``(N, C, H / p, W / p)``, ``cls_token`` ``(N, C)`` and, for models with registers,
            ``register_tokens`` ``(N, R, C)``; all after the final LayerNorm, float32. On CUDA the forward runs
            under autocast in ``self.autocast_dtype`` (bf16 by default; None for float32).
        """
        use_autocast = x.device.type == "cuda" and self.autocast_dtype is not None
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, enabled=use_autocast):
            tokens = self.forward_tokens(x).float()
        r = self.cfg.num_register_tokens
        n, _, height, width = x.shape
        p = self.cfg.patch_size
        patches = tokens[:, 1 + r :].transpose(1, 2).reshape(n, -1, height // p, width // p)
        out = {"patch_tokens": patches, "cls_token": tokens[:, 0]}
        if r:
            out["register_tokens"] = tokens[:, 1 : 1 + r]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-token map ``(N, C, H / p, W / p)``."""
        return self.features(x)["patch_tokens"]

    def fingerprint(self) -> str:
        """sha256 over the weights (names, dtypes, shapes, bytes), stable across processes and devices."""
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(self.state_dict())
        return self._fingerprint


def state_dict_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex digest of a state dict, independent of key order and device."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_CHUNKED_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _normalise_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unwrap ``{"model": ...}`` / ``{"state_dict": ...}``, drop ``module.``/``backbone.`` prefixes and flatten
    the ``blocks.{chunk}.{i}`` layout of checkpoints trained with block chunks to ``blocks.{i}``."""
    for wrapper in ("state_dict", "model", "teacher"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("dino_head.", "ibot_head.")):  # projection heads of a training checkpoint
            continue
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        chunked = _CHUNKED_BLOCK.match(key)  # blocks.{chunk}.{i}.rest, i counted over the whole model
        if chunked:
            key = f"blocks.{chunked.group(2)}.{chunked.group(3)}"
        out[key] = value
    return out


def infer_dinov2_config(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None) -> DinoV2Config:
    """Read the architecture off the tensor shapes of an official-layout DINOv2 state dict.

    Args:
        state_dict: the checkpoint (tensors may live on the ``meta`` device: only shapes are read).
        num_heads: attention heads; default ``embed_dim / 64`` (the DINOv2 rule). Shapes cannot tell the head
            count, so models outside the rule (such as the tiny golden ViT: 64 dims, 2 heads) need it here.
    """
    sd = _normalise_keys(state_dict)
    required = ("patch_embed.proj.weight", "pos_embed", "cls_token", "norm.weight", "blocks.0.attn.qkv.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        sample = ", ".join(sorted(sd)[:8])
        raise KeyError(
            f"not a DINOv2 state dict in the official layout: missing {missing} (first keys: {sample}); "
            "pass the backbone weights, e.g. dinov2_vits14_pretrain.pth"
        )
    proj = sd["patch_embed.proj.weight"]  # (C, in_chans, p, p)
    dim, in_chans, patch, patch_w = proj.shape
    if patch != patch_w:
        raise ValueError(f"patch_embed.proj.weight has non-square patches {tuple(proj.shape)}")
    num_pos = sd["pos_embed"].shape[1] - 1
    grid = math.isqrt(num_pos)
    if grid * grid != num_pos:
        raise ValueError(f"pos_embed holds {num_pos} patch positions, not a square grid")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := _BLOCK.match(k)))
    if "blocks.0.mlp.w12.weight" in sd:
        ffn, hidden = "swiglu", sd["blocks.0.mlp.w12.weight"].shape[0] // 2
    elif "blocks.0.mlp.fc1.weight" in sd:
        ffn, hidden = "mlp", sd["blocks.0.mlp.fc1.weight"].shape[0]
    else:
        raise KeyError("blocks.0.mlp has neither fc1 (MLP) nor w12 (SwiGLU) weights; not a DINOv2 checkpoint")
    heads = num_heads if num_heads is not None else max(1, dim // HEAD_DIM)
    if heads < 1 or dim % heads:
        raise ValueError(f"num_heads={heads} does not divide the embedding dimension {dim}; pass num_heads=")
    return DinoV2Config(
        embed_dim=int(dim),
        depth=depth,
        num_heads=int(heads),
        patch_size=int(patch),
        in_chans=int(in_chans),
        pos_grid=grid,
        num_register_tokens=int(sd["register_tokens"].shape[1]) if "register_tokens" in sd else 0,
        ffn=ffn,
        ffn_hidden=int(hidden),
        layer_scale="blocks.0.ls1.gamma" in sd,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
    )


def _check_layout(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {expected[k]}"
        for k in sorted(set(expected) & set(sd))
        if tuple(sd[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched}")
        raise ValueError(
            f"{source} does not match the DINOv2 architecture inferred from its shapes: " + "; ".join(parts)
        )


def load_dinov2(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
) -> DinoV2:
    """Build a frozen DINOv2 teacher from an official checkpoint file or state dict.

    Args:
        path_or_state_dict: ``.pth`` file (loaded with ``weights_only=True``) or a state dict.
        num_heads: override of the ``embed_dim / 64`` head rule (see ``infer_dinov2_config``).
        device: where the weights go.

    Returns:
        The model in eval mode with ``requires_grad`` off on every parameter.
    """
    if isinstance(path_or_state_dict, str | Path):
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"teacher checkpoint {path} not found; pass a DINOv2 .pth file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (
            RuntimeError,
            ValueError,
            EOFError,
            OSError,
            pickle.UnpicklingError,
        ) as exc:  # truncated, not a zip, ...
            raise ValueError(
                f"teacher checkpoint {path} cannot be read as a weights file ({str(exc).splitlines()[0][:120]}); pass "
                "an official DINOv2 .pth (dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth)"
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"teacher checkpoint {path} holds a {type(state).__name__}, not a DINOv2 state dict")
        source = str(path)
    else:
        state, source = path_or_state_dict, "the DINOv2 state dict"
    try:
        sd = _normalise_keys(state)
        cfg = infer_dinov2_config(sd, num_heads=num_heads)
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise type(exc)(f"{source}: {message}") from None
    with torch.device("meta"):
        model = DinoV2(cfg)
    _check_layout(model, sd, source)
    on_meta = any(v.is_meta for v in sd.values())
    target = torch.device("meta") if on_meta else torch.device(device)
    model.load_state_dict({k: v.to(device=target, dtype=torch.float32) for k, v in sd.items()}, assign=True)
    model.requires_grad_(False)
    return model.eval()


def random_dinov2(
    variant: str = "vits14", depth: int | None = None, seed: int = 0, device: str | torch.device = "cpu"
) -> DinoV2:
    """A randomly initialised teacher with the official shapes of ``variant`` (tests, built-in default).

    Weights are drawn on the CPU from ``seed``, so the same arguments give the same ``fingerprint()`` anywhere.
    Its features carry no semantics: label anything built with it as random.
    """
    cfg = variant_config(variant, depth)
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in DinoV2(cfg).state_dict().items()}
    sd: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name.endswith(("ls1.gamma", "ls2.gamma")) or (name.endswith(".weight") and len(shape) == 1):
            sd[name] = torch.ones(shape)  # LayerNorm weights and LayerScale at the reference's init_values=1
        elif name.endswith(".bias"):
            sd[name] = torch.zeros(shape)
        else:
            sd[name] = torch.randn(shape, generator=gen).mul_(0.02).clamp_(-0.04, 0.04)  # ~trunc_normal(0.02)
    model = load_dinov2(sd, num_heads=cfg.num_heads, device=device)
    return model


def describe(model: DinoV2) -> dict:
    """JSON-friendly description of a teacher (architecture + fingerprint) for manifests and logs."""
    return {"config": asdict(model.cfg), "fingerprint": model.fingerprint()}
