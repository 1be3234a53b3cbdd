#!/usr/bin/env python3
"""Write the diffusers UNet2DModel parity fixtures in tests/fixtures/unet/.

Every model folder is a small, randomly initialised `diffusers.UNet2DModel`
saved with `save_pretrained(dir, safe_serialization=True)` (config.json +
diffusion_pytorch_model.safetensors) plus a DDPMScheduler
`scheduler_config.json` and reference inputs / outputs computed by diffusers
on the CPU. `manifest.json` describes every folder; the Rust tests read only
the manifest, the configs, the safetensors and the .npy arrays, so they run
without Python.

Run from anywhere:  python3 tools/make_unet_fixtures.py [OUT_DIR]
Reproducibility:    python3 tools/make_unet_fixtures.py --check
Read-back check:    python3 tools/make_unet_fixtures.py --verify [DIR]

(python3 in a venv made from tools/requirements.txt: torch (CPU), diffusers,
safetensors and numpy.)

Determinism: fixed seeds (torch.Generator / numpy default_rng per model), one
CPU thread, torch.use_deterministic_algorithms(True), float32 weights, every
file rewritten from scratch. `--check` writes the whole tree twice into
temporary folders and compares SHA-256 sums of every file.

Weights: diffusers' own init leaves GroupNorm weights at 1 / biases at 0 (and
some layers may be zero-initialised), so after construction EVERY parameter is
overwritten (in named_parameters() order, from one seeded generator):
  * weight with ndim >= 2 (conv / linear): N(0, 1) * GAIN / sqrt(fan_in),
    fan_in = prod(shape[1:])  (keeps activations O(1));
  * weight with ndim == 1 (GroupNorm gamma): 1 + 0.1 * N(0, 1);
  * bias: 0.1 * N(0, 1).
The script checks (one backward pass in float64) that every parameter tensor
has a non-zero gradient, i.e. every weight reaches the output, so a wrong key
mapping cannot go unnoticed.

Reference arrays per model folder:
  input.npy        float32 (2, C_in, 16, 16), N(0, 1)
  timesteps.npy    int64 [3, 917] (one per batch element)
  output.npy       float32 model(input, timesteps).sample, model in float32
  output_f64.npy   float64 same with model.double() and input.double().
                   NOTE: diffusers computes the sinusoidal time projection in
                   float32 even then (get_timestep_embedding uses float32
                   arange / timesteps.float()) and casts it to float64 before
                   time_embedding.linear_1, so output_f64 carries a float32
                   time projection (see manifest "temb_f32_effect").
  alphas_cumprod.npy        float64: the DDPMScheduler's alphas_cumprod
                            (diffusers builds it in float32; upcast exactly)
  alphas_cumprod_exact.npy  float64: the same schedule computed in float64
attn_multihead also has input32.npy / output32.npy / output32_f64.npy
(2, 3, 32, 32) to show the model is size independent.

Folders: attn_multihead, ddpm_legacy, ddpm_legacy_keys (same weights as
ddpm_legacy, old attention names query/key/value/proj_attn), learned_sigma,
gray_deep, no_attention_key (attn_multihead's weights/input/output, but
config.json without "attention_head_dim": diffusers then uses the __init__
default 8, NOT None; an explicit null means one head per block), and
mid_scale_attn (extra: one level, mid-block attention with
mid_block_scale_factor != 1, which no other model exercises).

DDIM reference (ddim/): deterministic DDIM inversion / generation with the
attn_multihead model in float64, see ddim/grid.json and ddim_reference().
"""

import copy
import json
import math
import os
import shutil
import sys
import warnings

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import safetensors  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

diffusers_logging.set_verbosity_error()
warnings.filterwarnings("ignore")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixturelib import check_reproducible, maxabs, randomize_parameters, save_npy, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "tests", "fixtures", "unet")

GAIN = 1.0
TIMESTEPS = [3, 917]
WEIGHTS = "diffusion_pytorch_model.safetensors"

# Old (diffusers < 0.15 `AttentionBlock`) attention parameter names -> current
# `Attention` names; this is the inverse of what
# ModelMixin._fix_state_dict_keys_on_load() converts on load, for every module
# built with `_from_deprecated_attn_block=True` (the attentions of
# AttnDownBlock2D / AttnUpBlock2D / UNetMidBlock2D). `group_norm` keeps its
# name in both versions.
LEGACY_RENAME = {
    "to_q": "query",
    "to_k": "key",
    "to_v": "value",
    "to_out.0": "proj_attn",
}

ATTN_MULTIHEAD = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=8,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    add_attention=True,
)

LINEAR_SCHED = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)
COSINE_SCHED = dict(beta_schedule="squaredcos_cap_v2", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)

# name, seed, UNet2DModel kwargs, scheduler kwargs, options
MODELS = [
    dict(name="attn_multihead", seed=1001, config=ATTN_MULTIHEAD, sched=LINEAR_SCHED, input32=True),
    dict(
        name="ddpm_legacy",
        seed=1002,
        config=dict(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            norm_eps=1e-6,  # as in google/ddpm-cifar10-32 and ddpm-ema-church-256
            attention_head_dim=None,
            downsample_padding=0,
            flip_sin_to_cos=False,
            freq_shift=1,
        ),
        sched=LINEAR_SCHED,
        legacy_copy="ddpm_legacy_keys",
    ),
    dict(
        name="learned_sigma",
        seed=1003,
        config=dict(
            sample_size=16,
            in_channels=3,
            out_channels=6,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=None,
        ),
        sched=LINEAR_SCHED,
    ),
    dict(
        name="gray_deep",
        seed=1004,
        config=dict(
            sample_size=16,
            in_channels=1,
            out_channels=1,
            block_out_channels=(16, 16, 32),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            norm_eps=1e-6,
            add_attention=False,
            center_input_sample=True,
            mid_block_scale_factor=1.414,
            attention_head_dim=8,
        ),
        sched=COSINE_SCHED,
    ),
    dict(
        name="no_attention_key",
        # Same seed as attn_multihead: identical weights (byte-identical
        # safetensors, one git blob), input and output; only config.json
        # differs (no "attention_head_dim" key -> diffusers' default 8).
        seed=1001,
        config=ATTN_MULTIHEAD,
        sched=LINEAR_SCHED,
        drop_config_keys=["attention_head_dim"],
    ),
    dict(
        name="mid_scale_attn",
        seed=1006,
        extra=True,
        config=dict(
            sample_size=16,
            in_channels=2,
            out_channels=2,
            block_out_channels=(16,),
            layers_per_block=1,
            down_block_types=("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",),
            norm_num_groups=4,
            attention_head_dim=4,
            mid_block_scale_factor=1.5,
            add_attention=True,
        ),
        sched=LINEAR_SCHED,
    ),
]

DDIM_MODEL = "attn_multihead"
DDIM_STEPS = 6
DDIM_T0 = 900
DDIM_FIXED_POINT_ITERS = 3


# --------------------------------------------------------------------------
# helpers




def run_model(model, x, timesteps, dtype):
    m = model.to(dtype)
    with torch.no_grad():
        out = m(torch.from_numpy(x).to(dtype), torch.tensor(timesteps, dtype=torch.int64)).sample
    return out.numpy()


def attention_heads(model):
    """{module path: (heads, head_dim)} for every Attention module."""
    from diffusers.models.attention_processor import Attention

    res = {}
    for name, mod in model.named_modules():
        if isinstance(mod, Attention):
            res[name] = [int(mod.heads), int(mod.inner_dim // mod.heads)]
    return res


def all_params_reach_output(model, x, timesteps):
    """True if every parameter gets a non-zero gradient (float64)."""
    m = copy.deepcopy(model).double()
    m.zero_grad()
    out = m(torch.from_numpy(x).double(), torch.tensor(timesteps, dtype=torch.int64)).sample
    r = torch.from_numpy(np.random.default_rng(7).standard_normal(out.shape))
    (out * r).sum().backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or float(p.grad.abs().max()) == 0.0]
    return dead


def f64_time_proj_output(model, x, timesteps):
    """Output of model.double() with the sinusoidal time projection in float64
    too (diffusers computes it in float32 and casts)."""
    from diffusers.models.embeddings import Timesteps

    m = copy.deepcopy(model).double()
    tp = m.time_proj
    assert isinstance(tp, Timesteps)

    def forward64(ts):
        half = tp.num_channels // 2
        exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float64)
        exponent = exponent / (half - tp.downscale_freq_shift)
        emb = ts[:, None].double() * torch.exp(exponent)[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        if tp.flip_sin_to_cos:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        return emb

    tp.forward = forward64
    with torch.no_grad():
        return m(torch.from_numpy(x).double(), torch.tensor(timesteps, dtype=torch.int64)).sample.numpy()


def exact_alphas_cumprod(sched_kwargs):
    """The DDPMScheduler schedule computed in float64 throughout."""
    T = sched_kwargs["num_train_timesteps"]
    if sched_kwargs["beta_schedule"] == "linear":
        betas = torch.linspace(sched_kwargs["beta_start"], sched_kwargs["beta_end"], T, dtype=torch.float64)
    elif sched_kwargs["beta_schedule"] == "squaredcos_cap_v2":

        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    else:
        raise ValueError(sched_kwargs["beta_schedule"])
    return torch.cumprod(1.0 - betas, dim=0).numpy()


def to_legacy_state_dict(sd, attn_paths):
    out = {}
    for k, v in sd.items():
        nk = k
        for path in attn_paths:
            if k.startswith(path + "."):
                rest = k[len(path) + 1 :]
                for new, old in LEGACY_RENAME.items():
                    if rest.startswith(new + "."):
                        nk = f"{path}.{old}.{rest[len(new) + 1:]}"
        out[nk] = v.contiguous()
    return out


def summarize_config(cfg):
    keys = [
        "sample_size",
        "in_channels",
        "out_channels",
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "mid_block_type",
        "norm_num_groups",
        "norm_eps",
        "attention_head_dim",
        "downsample_padding",
        "flip_sin_to_cos",
        "freq_shift",
        "add_attention",
        "center_input_sample",
        "mid_block_scale_factor",
        "time_embedding_type",
        "act_fn",
        "resnet_time_scale_shift",
        "attn_norm_num_groups",
        "downsample_type",
        "upsample_type",
        "class_embed_type",
        "num_class_embeds",
        "time_embedding_dim",
    ]
    return {k: (list(cfg[k]) if isinstance(cfg[k], (tuple, list)) else cfg[k]) for k in keys}


# --------------------------------------------------------------------------
# models


def build_model_folder(out, spec, log):
    name = spec["name"]
    folder = os.path.join(out, name)
    os.makedirs(folder)
    torch.manual_seed(spec["seed"])
    model = UNet2DModel(**spec["config"]).eval()
    randomize_parameters(model, spec["seed"], GAIN)
    model.save_pretrained(folder, safe_serialization=True)

    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        saved_cfg = json.load(f)
    for k in spec.get("drop_config_keys", []):
        del saved_cfg[k]
    write_json(cfg_path, saved_cfg)

    sched = DDPMScheduler(**spec["sched"])
    sched.save_pretrained(folder)
    ac = sched.alphas_cumprod.double().numpy()
    ac_exact = exact_alphas_cumprod(spec["sched"])
    save_npy(os.path.join(folder, "alphas_cumprod.npy"), ac)
    save_npy(os.path.join(folder, "alphas_cumprod_exact.npy"), ac_exact)

    # Reload from disk: the reference outputs come from what the Rust side loads.
    loaded = UNet2DModel.from_pretrained(folder).eval()
    sd_mem = model.state_dict()
    sd_disk = loaded.state_dict()
    assert list(sd_mem) == list(sd_disk)
    for k in sd_mem:
        assert torch.equal(sd_mem[k], sd_disk[k]), k

    cfg = loaded.config
    rng = np.random.default_rng(spec["seed"])
    c_in = cfg["in_channels"]
    x = rng.standard_normal((2, c_in, 16, 16)).astype(np.float32)
    ts = np.array(TIMESTEPS, dtype=np.int64)
    save_npy(os.path.join(folder, "input.npy"), x)
    save_npy(os.path.join(folder, "timesteps.npy"), ts)

    out32 = run_model(copy.deepcopy(loaded), x, TIMESTEPS, torch.float32).astype(np.float32)
    out64 = run_model(copy.deepcopy(loaded), x, TIMESTEPS, torch.float64)
    save_npy(os.path.join(folder, "output.npy"), out32)
    save_npy(os.path.join(folder, "output_f64.npy"), out64)
    d = maxabs(out32, out64)
    out64_t64 = f64_time_proj_output(loaded, x, TIMESTEPS)
    d_temb = maxabs(out64, out64_t64)

    files = {
        "config": "config.json",
        "weights": WEIGHTS,
        "scheduler_config": "scheduler_config.json",
        "alphas_cumprod": "alphas_cumprod.npy",
        "alphas_cumprod_exact": "alphas_cumprod_exact.npy",
        "input": "input.npy",
        "timesteps": "timesteps.npy",
        "output": "output.npy",
        "output_f64": "output_f64.npy",
    }
    entry = {
        "folder": name,
        "extra": bool(spec.get("extra", False)),
        "config": summarize_config(cfg),
        "config_keys_removed": spec.get("drop_config_keys", []),
        "effective_attention_head_dim": cfg["attention_head_dim"],
        "attention_heads": attention_heads(loaded),
        "num_parameters": int(sum(p.numel() for p in loaded.parameters())),
        "num_tensors": len(sd_disk),
        "scheduler": dict(spec["sched"]),
        "files": files,
        "input_shape": list(x.shape),
        "timesteps": TIMESTEPS,
        "output_shape": list(out32.shape),
        "output_max_abs": float(np.max(np.abs(out64))),
        "output_std": float(np.std(out64)),
        "max_abs_diff_f32_f64": d,
        "temb_f32_effect": d_temb,
        "max_abs_diff_alphas_cumprod_f32_vs_exact": maxabs(ac, ac_exact),
    }
    log(f"{name}: out {tuple(out32.shape)} std {entry['output_std']:.3f} max|out| {entry['output_max_abs']:.3f} "
        f"max|f32-f64| {d:.3e}  f32-temb effect in f64 {d_temb:.3e}")

    if spec.get("input32"):
        x32 = rng.standard_normal((2, c_in, 32, 32)).astype(np.float32)
        o32 = run_model(copy.deepcopy(loaded), x32, TIMESTEPS, torch.float32).astype(np.float32)
        o64 = run_model(copy.deepcopy(loaded), x32, TIMESTEPS, torch.float64)
        save_npy(os.path.join(folder, "input32.npy"), x32)
        save_npy(os.path.join(folder, "output32.npy"), o32)
        save_npy(os.path.join(folder, "output32_f64.npy"), o64)
        files.update(input32="input32.npy", output32="output32.npy", output32_f64="output32_f64.npy")
        entry["max_abs_diff_f32_f64_32x32"] = maxabs(o32, o64)
        log(f"{name}: 32x32 max|f32-f64| {entry['max_abs_diff_f32_f64_32x32']:.3e}")

    # Every weight must reach the output.
    dead = all_params_reach_output(loaded, x, TIMESTEPS)
    assert not dead, f"{name}: parameters without gradient: {dead}"
    entry["all_parameters_reach_output"] = True

    # How much a wrong head count would change the output (shows the fixture
    # discriminates head-dim semantics). Alternative: None <-> 8.
    alt_hd = 8 if cfg["attention_head_dim"] is None else None
    if attention_heads(loaded):
        alt_cfg = dict(spec["config"], attention_head_dim=alt_hd)
        alt = UNet2DModel(**alt_cfg).eval()
        alt.load_state_dict(sd_disk)
        alt_out = run_model(alt, x, TIMESTEPS, torch.float64)
        entry["wrong_head_dim_check"] = {
            "attention_head_dim": alt_hd,
            "attention_heads": attention_heads(alt),
            "max_abs_diff_vs_output_f64": maxabs(alt_out, out64),
        }

    if spec.get("legacy_copy"):
        entry["legacy_copy"] = build_legacy_copy(out, spec, loaded, x, out32, log)
    return entry, loaded


def build_legacy_copy(out, spec, loaded, x, out32, log):
    """Same weights/config with the pre-0.15 attention parameter names."""
    lname = spec["legacy_copy"]
    src = os.path.join(out, spec["name"])
    dst = os.path.join(out, lname)
    os.makedirs(dst)
    for fn in ["config.json", "scheduler_config.json", "alphas_cumprod.npy", "alphas_cumprod_exact.npy",
               "input.npy", "timesteps.npy", "output.npy", "output_f64.npy"]:
        shutil.copyfile(os.path.join(src, fn), os.path.join(dst, fn))
    sd = load_file(os.path.join(src, WEIGHTS))
    attn_paths = list(attention_heads(loaded))
    legacy = to_legacy_state_dict(sd, attn_paths)
    save_file(legacy, os.path.join(dst, WEIGHTS), metadata={"format": "pt"})
    renamed = {k2: k1 for (k1, k2) in zip(sd, legacy) if k1 != k2}
    # sd and legacy iterate in the same order (dict insertion order)
    assert len(renamed) == 8 * len(attn_paths)

    # diffusers must load it (ModelMixin._fix_state_dict_keys_on_load) and
    # give bit-identical outputs.
    reloaded = UNet2DModel.from_pretrained(dst).eval()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, reloaded.state_dict()[k]), k
    o = run_model(reloaded, x, TIMESTEPS, torch.float32)
    assert np.array_equal(o, out32)
    log(f"{lname}: {len(renamed)} attention tensors renamed; diffusers loads it, identical output")
    return {
        "folder": lname,
        "renamed_keys": dict(sorted(renamed.items())),
        "diffusers_loads_and_matches": True,
    }


# --------------------------------------------------------------------------
# DDIM


def smooth_images(rng, shape):
    """Sums of low-frequency sinusoids, scaled into [-0.95, 0.95]."""
    b, c, h, w = shape
    yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    img = np.zeros(shape)
    for i in range(b):
        for j in range(c):
            acc = np.zeros((h, w))
            for _ in range(4):
                fy, fx = rng.integers(0, 3, size=2)
                ph = rng.uniform(0, 2 * np.pi)
                amp = rng.uniform(0.3, 1.0)
                acc += amp * np.cos(2 * np.pi * (fy * yy + fx * xx) + ph)
            acc = acc - acc.mean()
            img[i, j] = 0.95 * acc / max(np.max(np.abs(acc)), 1e-12)
    return img.astype(np.float32)


class DDIM:
    """Deterministic DDIM (eta = 0) on levels of a linear beta schedule.

    abar[t] = cumprod(1 - linspace(1e-4, 0.02, 1000, float64))[t]; level
    "clean" has abar = 1. step(x_a, eps, a, b):
        x0_hat = (x_a - sqrt(1 - abar_a) eps) / sqrt(abar_a)
        x_b    = sqrt(abar_b) x0_hat + sqrt(1 - abar_b) eps
    """

    def __init__(self, model, dtype):
        self.model = copy.deepcopy(model).to(dtype)
        self.dtype = dtype
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        self.abar = torch.cumprod(1.0 - betas, dim=0)
        self.n_evals = 0

    def ab(self, level):
        return torch.tensor(1.0, dtype=torch.float64) if level == "clean" else self.abar[level]

    def eps(self, x, level):
        self.n_evals += 1
        ts = torch.full((x.shape[0],), level, dtype=torch.int64)
        with torch.no_grad():
            return self.model(x, ts).sample[:, : x.shape[1]]

    def step(self, x, eps, a, b):
        aa, abb = self.ab(a).to(self.dtype), self.ab(b).to(self.dtype)
        x0 = (x - torch.sqrt(1 - aa) * eps) / torch.sqrt(aa)
        return torch.sqrt(abb) * x0 + torch.sqrt(1 - abb) * eps

    def invert(self, x, seq, fixed_point_iters=0):
        """Returns (latents, trajectory, diagnostics). Diagnostics per step:
        fixed-point residuals max|x_b^(k) - x_b^(k-1)| and the round-trip
        error max|step(x_b, eps(x_b, b), b, a) - x_a| (0 for an exact
        inversion)."""
        traj = [x]
        diag = []
        for a, b in zip(seq[:-1], seq[1:]):
            e = self.eps(x, a)
            xb = self.step(x, e, a, b)
            res = []
            for _ in range(fixed_point_iters):
                e = self.eps(xb, b)
                xn = self.step(x, e, a, b)
                res.append(float((xn - xb).abs().max()))
                xb = xn
            with torch.no_grad():
                back = self.step(xb, self.eps(xb, b), b, a)
            self.n_evals -= 1  # diagnostics only
            diag.append({"from": a, "to": b, "fixed_point_residuals": res,
                         "roundtrip_max_abs": float((back - x).abs().max())})
            x = xb
            traj.append(x)
        return x, traj, diag

    def generate(self, z, seq):
        rev = list(reversed(seq))
        x = z
        traj = [x]
        for a, b in zip(rev[:-1], rev[1:]):
            x = self.step(x, self.eps(x, a), a, b)
            traj.append(x)
        x = self.step(x, self.eps(x, rev[-1]), rev[-1], "clean")
        traj.append(x)
        return x, traj


def ddim_reference(out, models, log):
    folder = os.path.join(out, "ddim")
    os.makedirs(folder)
    model = models[DDIM_MODEL]
    rng = np.random.default_rng(4242)
    c = model.config["in_channels"]
    x0 = smooth_images(rng, (2, c, 16, 16))
    seq = [(k * DDIM_T0) // (DDIM_STEPS - 1) for k in range(DDIM_STEPS)]

    res = {}
    for dtype in (torch.float64, torch.float32):
        d = DDIM(model, dtype)
        x = torch.from_numpy(x0).to(dtype)
        z, inv_traj, diag = d.invert(x, seq)
        rec, gen_traj = d.generate(z, seq)
        zf, _, diagf = d.invert(x, seq, DDIM_FIXED_POINT_ITERS)
        recf, gen_trajf = d.generate(zf, seq)
        res[dtype] = dict(z=z.numpy(), rec=rec.numpy(), zf=zf.numpy(), recf=recf.numpy(),
                          inv=torch.stack(inv_traj).numpy(), gen=torch.stack(gen_traj).numpy(),
                          level0=gen_traj[-2].numpy(), level0f=gen_trajf[-2].numpy(),
                          diag=diag, diagf=diagf, evals=d.n_evals)

    r = res[torch.float64]
    save_npy(os.path.join(folder, "x0.npy"), x0)
    save_npy(os.path.join(folder, "latents.npy"), r["z"].astype(np.float32))
    save_npy(os.path.join(folder, "reconstruction.npy"), r["rec"].astype(np.float32))
    save_npy(os.path.join(folder, "latents_fixed_point3.npy"), r["zf"].astype(np.float32))
    save_npy(os.path.join(folder, "reconstruction_fixed_point3.npy"), r["recf"].astype(np.float32))
    save_npy(os.path.join(folder, "inversion_trajectory.npy"), r["inv"].astype(np.float32))
    save_npy(os.path.join(folder, "generation_trajectory.npy"), r["gen"].astype(np.float32))

    x64 = x0.astype(np.float64)
    mse_plain = float(np.mean((r["rec"] - x64) ** 2))
    mse_fp = float(np.mean((r["recf"] - x64) ** 2))
    mse_l0 = float(np.mean((r["level0"] - x64) ** 2))
    mse_l0f = float(np.mean((r["level0f"] - x64) ** 2))
    r32 = res[torch.float32]
    f32_diff = {k: maxabs(r32[k], r[k]) for k in ["z", "rec", "zf", "recf"]}
    grid = {
        "model": DDIM_MODEL,
        "steps": DDIM_STEPS,
        "t0": DDIM_T0,
        "seq": seq,
        "seq_rule": "seq[k] = (k * t0) // (steps - 1), k = 0..steps-1 (integer arithmetic)",
        "alphas_cumprod": "cumprod(1 - torch.linspace(1e-4, 0.02, 1000, float64)); level t uses abar[t]; "
                          "level 'clean' uses abar = 1. Bit-identical to attn_multihead/alphas_cumprod_exact.npy "
                          "(numpy.linspace differs from torch.linspace by 1 ulp in some entries; cumprod "
                          "differences stay below 1e-16)",
        "step": "eps = model(x_a, timestep=a).sample[:, :C]; x0_hat = (x_a - sqrt(1-abar_a) eps) / sqrt(abar_a); "
                "x_b = sqrt(abar_b) x0_hat + sqrt(1-abar_b) eps",
        "inversion": "x = x0 (level seq[0] = 0); for k in 0..steps-2: x = step(x, eps(x, seq[k]), seq[k], seq[k+1]); "
                     "latents = x (level t0). steps-1 model evaluations",
        "generation": "x = latents; for k = steps-1 down to 1: x = step(x, eps(x, seq[k]), seq[k], seq[k-1]); then "
                      "x = step(x, eps(x, 0), 0, clean) (= x0_hat). steps model evaluations",
        "fixed_point": {
            "iterations": DDIM_FIXED_POINT_ITERS,
            "file": "latents_fixed_point3.npy",
            "reconstruction_file": "reconstruction_fixed_point3.npy",
            "rule": "for each inversion step a -> b: x_b = step(x_a, eps(x_a, a), a, b); then K times: "
                    "e = eps(x_b, b); x_b = step(x_a, e, a, b)  (x_a fixed; eps re-evaluated at the TARGET level "
                    "b with the current estimate of x_b: fixed-point iteration for the implicit / backward-Euler "
                    "DDIM inversion). 1 + K model evaluations per step; generation is the plain generation above",
        },
        "dtype": "float64 model (model.double(), diffusers' time projection stays float32 and is cast) and float64 "
                 "arithmetic; stored as float32",
        "files": {
            "x0": "x0.npy",
            "latents": "latents.npy",
            "reconstruction": "reconstruction.npy",
            "latents_fixed_point3": "latents_fixed_point3.npy",
            "reconstruction_fixed_point3": "reconstruction_fixed_point3.npy",
            "inversion_trajectory": "inversion_trajectory.npy (steps, B, C, H, W): x at seq[0..steps-1]",
            "generation_trajectory": "generation_trajectory.npy (steps+1, B, C, H, W): x at seq[steps-1..0], clean",
        },
        "reconstruction_mse": {"plain": mse_plain, "fixed_point3": mse_fp},
        "level0_mse": {"plain": mse_l0, "fixed_point3": mse_l0f,
                       "note": "MSE of the generation state at level 0 (before the final 0 -> clean step) vs x0; "
                               "an exact inversion makes this 0, the final step then still moves x by "
                               "sqrt(1-abar_0)/sqrt(abar_0)*eps ~ 0.01*eps"},
        "diagnostics": {
            "plain": r["diag"],
            "fixed_point3": r["diagf"],
            "note": "random-weight eps network: eps(x, t) changes a lot between levels and is not a contraction "
                    "at high noise levels, so inversion is far from exact and the fixed-point iteration does not "
                    "converge for the late steps; the arrays are still an exact numerical reference for the "
                    "algorithm",
        },
        "model_evaluations": {"plain_inversion": DDIM_STEPS - 1, "generation": DDIM_STEPS,
                              "fixed_point_inversion": (DDIM_STEPS - 1) * (1 + DDIM_FIXED_POINT_ITERS)},
        "max_abs_diff_f32_run_vs_f64": f32_diff,
        "max_abs": {k: float(np.max(np.abs(r[k]))) for k in ["z", "rec", "zf", "recf"]},
    }
    write_json(os.path.join(folder, "grid.json"), grid)
    log(f"ddim: seq {seq}; reconstruction MSE plain {mse_plain:.4e}, fixed-point(3) {mse_fp:.4e}; "
        f"level-0 MSE plain {mse_l0:.4e}, fixed-point(3) {mse_l0f:.4e}; "
        f"f32 vs f64 {f32_diff}")
    return grid


# --------------------------------------------------------------------------


def build(out, log=print):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    entries = []
    models = {}
    for spec in MODELS:
        entry, model = build_model_folder(out, spec, log)
        entries.append(entry)
        models[spec["name"]] = model
    grid = ddim_reference(out, models, log)
    manifest = {
        "generator": "tools/make_unet_fixtures.py",
        "versions": {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "safetensors": safetensors.__version__,
        },
        "weight_init": "every parameter overwritten: ndim>=2 weights N(0,1)*%g/sqrt(fan_in); 1-D weights "
                       "(GroupNorm) 1+0.1*N(0,1); biases 0.1*N(0,1)" % GAIN,
        "legacy_attention_names": LEGACY_RENAME,
        "models": entries,
        "ddim": {"folder": "ddim", "grid": "ddim/grid.json", "model": grid["model"],
                 "reconstruction_mse": grid["reconstruction_mse"]},
    }
    write_json(os.path.join(out, "manifest.json"), manifest)
    return manifest


def verify(folder):
    """Reload every folder with diffusers and recompute output.npy."""
    with open(os.path.join(folder, "manifest.json")) as f:
        man = json.load(f)
    ok = True
    names = [m["folder"] for m in man["models"]] + [m["legacy_copy"]["folder"] for m in man["models"]
                                                     if "legacy_copy" in m]
    for name in names:
        d = os.path.join(folder, name)
        model = UNet2DModel.from_pretrained(d).eval()
        x = np.load(os.path.join(d, "input.npy"))
        ts = np.load(os.path.join(d, "timesteps.npy")).tolist()
        o = run_model(model, x, ts, torch.float32)
        same = np.array_equal(o, np.load(os.path.join(d, "output.npy")))
        print(f"{name}: {'ok' if same else 'MISMATCH'}")
        ok &= same
    return 0 if ok else 1


def main(argv):
    if argv[1:2] == ["--check"]:
        return check_reproducible(lambda d: build(d, log=lambda s: None))
    if argv[1:2] == ["--verify"]:
        return verify(os.path.abspath(argv[2] if len(argv) > 2 else DEFAULT_OUT))
    out = os.path.abspath(argv[1] if len(argv) > 1 else DEFAULT_OUT)
    build(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
