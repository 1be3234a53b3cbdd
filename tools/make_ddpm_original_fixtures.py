#!/usr/bin/env python3
"""Write the original-DDPM checkpoint parity fixtures in tests/fixtures/ddpm_original/.

An "original DDPM" checkpoint is a state dict of the `Model` class in
ermongroup/ddim `models/diffusion.py` (the PyTorch port of Ho et al.'s DDPM
UNet that ermongroup/ddim and pesser/pytorch_diffusion load for CIFAR-10,
CelebA, LSUN church / bedroom / cat). The project loads such a checkpoint into
its diffusers-style UNet2DModel through the key map of diffusers'
`scripts/convert_ddpm_original_checkpoint_to_diffusers.py`. These fixtures are
made with the anchors' own code; neither file is copied into this project, the
script imports them from paths you give it:

  DDPM_MODEL_PY    ermongroup/ddim  models/diffusion.py
                   used: commit e8df66cf02e457719930748b5c26e37e3126dfdd (HEAD,
                   2024-07-26; the file last changed in 587bae79c194, 2020-10-05)
                   https://github.com/ermongroup/ddim/blob/e8df66cf02e457719930748b5c26e37e3126dfdd/models/diffusion.py
  DDPM_CONVERT_PY  huggingface/diffusers  scripts/convert_ddpm_original_checkpoint_to_diffusers.py
                   used: commit 58eb52c0803ea9af3abec60841c2a093bdf1f951 (main,
                   2026-08-23; the file last changed in 1d7b4b60b7b7, 2023-03-27)
                   https://github.com/huggingface/diffusers/blob/58eb52c0803ea9af3abec60841c2a093bdf1f951/scripts/convert_ddpm_original_checkpoint_to_diffusers.py
  (SHA-256 of both files: KNOWN_SOURCES below; the manifest records what was used.)

Get:    mkdir -p out/ddpmsrc   # (out/ is git-ignored) then fetch the two files at the commits above:
        curl -sSfo out/ddpmsrc/diffusion.py https://raw.githubusercontent.com/ermongroup/ddim/e8df66cf02e457719930748b5c26e37e3126dfdd/models/diffusion.py
        curl -sSfo out/ddpmsrc/convert_ddpm_original_checkpoint_to_diffusers.py https://raw.githubusercontent.com/huggingface/diffusers/58eb52c0803ea9af3abec60841c2a093bdf1f951/scripts/convert_ddpm_original_checkpoint_to_diffusers.py
Run:    DDPM_MODEL_PY=out/ddpmsrc/diffusion.py \
        DDPM_CONVERT_PY=out/ddpmsrc/convert_ddpm_original_checkpoint_to_diffusers.py \
        python3 tools/make_ddpm_original_fixtures.py [OUT_DIR]
        (or --model-py PATH --convert-py PATH instead of the environment)
Check:  same with --check: builds the tree twice in temporary folders and
        compares the SHA-256 of every file.
(python3 in a venv made from tools/requirements.txt: torch (CPU), diffusers, numpy, pyyaml.)

Determinism: fixed seeds, one CPU thread, torch.use_deterministic_algorithms,
float32 weights, every file rewritten from scratch.

Per config folder (<name>/; "deeper" keeps only ddpm.json, diffusers_config.json
and diffusers_keys.json, to keep the fixtures small — its parity with diffusers is
still asserted when the script runs):
  model.ckpt            torch.save(model.state_dict()) of ermongroup's Model
                        (zipfile format, float32, no 'module.' prefix: what
                        runners/diffusion.py loads for the pretrained
                        pesser/pytorch_diffusion checkpoints)
  ddpm.json             the ermongroup yml as JSON (yaml.safe_load of YML
                        below, sections data / model / diffusion / training /
                        sampling / optim, typed as in the yml)
  diffusers_config.json the UNet2DModel config (all fields, as save_config
                        writes them) derived from the yml by
                        diffusers_config_from_yml(); the conversion script
                        itself does NOT derive it, its __main__ takes it as a
                        JSON file (--config_file)
  diffusers_keys.json   {original key: UNet2DModel key} for every tensor, the
                        tensors whose shape changes, and what the unmodified
                        script emits where that differs (see below)
  input.npy             float32 (3, 3, 16, 16) N(0, 1)
  timesteps.npy         int64 [0, 500, 999]
  output.npy            float32 Model(input, timesteps), model in float32
  output_f64.npy        float64 same with model.double(), input.double().
                        NOTE: ermongroup's get_timestep_embedding always
                        returns float32 (float32 arange, timesteps.float()), so
                        model.double() raises "mat1 and mat2 must have the same
                        dtype" in temb.dense[0]. The script casts the float32
                        time projection to float64 (a wrapper around the
                        module's function, nothing else changed): output_f64
                        carries a float32 time projection, exactly as
                        diffusers' UNet2DModel does in float64. The manifest's
                        "temb_f32_effect" is the max |difference| to a fully
                        float64 time projection.

Weights: every parameter is overwritten (named_parameters() order, one seeded
torch.Generator): ndim >= 2 weights N(0, 1) / sqrt(fan_in), fan_in =
prod(shape[1:]); 1-D weights (GroupNorm gamma) 1 + 0.1 N(0, 1); biases
0.1 N(0, 1). One float64 backward pass checks that every parameter gets a
non-zero gradient (so a wrong key mapping cannot go unnoticed).

Parameters without effect: literally every gradient is non-zero, but some are
rounding noise (<= 1e-14, against >= 0.1 for the rest; the script uses
max|grad| <= 1e-9 * max over all parameters). These tensors provably do not
change the output, so output parity cannot check their mapping (the key map
in diffusers_keys.json does); the script asserts the observed set equals the
predicted set (no_effect_expected()) and lists it in the manifest:
  * every attention k.bias: q_i . (k_j + b) = q_i . k_j + q_i . b is constant
    over j, softmax ignores it (true for any DDPM checkpoint);
  * with ch = 32 only: GroupNorm(32 groups) over 32 channels normalises each
    channel alone and removes any per-channel constant. So in every resnet
    with 32 output channels conv1.bias and temb_proj (weight and bias; the
    time embedding enters as a per-channel constant) have no effect, and
    since norm_out sees 32 channels, neither do the constants added after the
    last non-linearity of up.0: up.0.block[-1].conv2.bias and .nin_shortcut.bias
    and, when up.0 has attention, up.0.attn[-1].v.bias and .proj_out.bias.
    Real checkpoints (ch = 128, 4 channels per group) have none of these.

The conversion script does not run unmodified on an ermongroup checkpoint
(diffusers_keys.json "script_issues" and manifest "script_probes" record the
exact errors). To obtain the mapping, the script's own convert_ddpm_checkpoint()
is run with ONE input shim and followed by TWO documented fix-ups:
  shim 1  the script reads down.{i}.downsample.op.{weight,bias} (since diffusers
          commit 3100bc9, 2022-07-28; its first version read .conv.), but
          ermongroup/pesser checkpoints name it down.{i}.downsample.conv.*; the
          same tensor is presented under the .op. name as well.
  fix 1   the script renames "in_shortcut" -> "conv_shortcut" (a typo fix in
          diffusers commit 76d492e, 2022-09-16, changed "nin_shortcut" to
          "in_shortcut"), so nin_shortcut becomes "nconv_shortcut"; renamed to
          conv_shortcut (the rule before 76d492e).
  fix 2   the script emits the pre-0.15 attention names query / key / value /
          proj_attn; diffusers' own ModelMixin._fix_state_dict_keys_on_load()
          (what from_pretrained applies) renames them to to_q / to_k / to_v /
          to_out.0.
The resulting state dict loads into UNet2DModel(**diffusers_config) with
strict=True and reproduces output.npy (asserted <= 1e-5, recorded), and equals
the hand-written rule map rule_key() (asserted).
"""

import argparse
import contextlib
import copy
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import warnings

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import yaml  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

diffusers_logging.set_verbosity_error()
warnings.filterwarnings("ignore")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixturelib import (  # noqa: E402
    check_reproducible,
    maxabs,
    randomize_parameters,
    save_npy,
    sha256_file,
    write_json,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "tests", "fixtures", "ddpm_original")

KNOWN_SOURCES = {
    "9ef760c426b51f6a345d0c750dd0dae04b8ad8b308d5b79b1d10c500c59080bf": dict(
        repo="ermongroup/ddim",
        path="models/diffusion.py",
        commit="e8df66cf02e457719930748b5c26e37e3126dfdd",
        file_last_changed_in="587bae79c194b330015f81dbcc69cf794d39e04d",
    ),
    "a4289899af62831a589adac48a9994d1f504a02755fad59b6f0c849f3fb46999": dict(
        repo="huggingface/diffusers",
        path="scripts/convert_ddpm_original_checkpoint_to_diffusers.py",
        commit="58eb52c0803ea9af3abec60841c2a093bdf1f951",
        file_last_changed_in="1d7b4b60b7b7e19a0347da5a04ec76c045d8dbf0",
    ),
}

TIMESTEPS = [0, 500, 999]
BATCH = 3
TOL_DIFFUSERS = 1e-5

# ermongroup-style ymls (structure of configs/church.yml and configs/celeba.yml,
# small values). yaml.safe_load gives exactly the types a real yml gives.
SMALL_YML = """\
data:
    dataset: "LSUN"
    category: "church_outdoor"
    image_size: 16
    channels: 3
    logit_transform: false
    uniform_dequantization: false
    gaussian_dequantization: false
    random_flip: true
    rescaled: true
    num_workers: 4

model:
    type: "simple"
    in_channels: 3
    out_ch: 3
    ch: 32
    ch_mult: [1, 2]
    num_res_blocks: 1
    attn_resolutions: [8, ]
    dropout: 0.0
    var_type: fixedsmall
    ema_rate: 0.9999
    ema: True
    resamp_with_conv: True

diffusion:
    beta_schedule: linear
    beta_start: 0.0001
    beta_end: 0.02
    num_diffusion_timesteps: 1000

training:
    batch_size: 8
    n_epochs: 10
    n_iters: 1000
    snapshot_freq: 500
    validation_freq: 200

sampling:
    batch_size: 4
    last_only: True

optim:
    weight_decay: 0.000
    optimizer: "Adam"
    lr: 0.00002
    beta1: 0.9
    amsgrad: false
    eps: 0.00000001
"""

# Deeper: three levels, two resnets per level, attention at the top level
# (16) and the bottom level (4), dropout 0.1 / fixedlarge / grad_clip as in
# celeba.yml. ch_mult [1, 1, 2] (1.19 M parameters, 4.8 MB) instead of
# [1, 2, 2] (1.65 M, 6.6 MB); [1, 1, 1] (2.4 MB) would leave no level with
# 64 channels, and then the output does not depend on the timestep at all
# (see "Parameters without effect").
DEEPER_YML = """\
data:
    dataset: "CELEBA"
    image_size: 16
    channels: 3
    logit_transform: false
    uniform_dequantization: false
    gaussian_dequantization: false
    random_flip: true
    rescaled: true
    num_workers: 4

model:
    type: "simple"
    in_channels: 3
    out_ch: 3
    ch: 32
    ch_mult: [1, 1, 2]
    num_res_blocks: 2
    attn_resolutions: [16, 4]
    dropout: 0.1
    var_type: fixedlarge
    ema_rate: 0.9999
    ema: True
    resamp_with_conv: True

diffusion:
    beta_schedule: linear
    beta_start: 0.0001
    beta_end: 0.02
    num_diffusion_timesteps: 1000

training:
    batch_size: 8
    n_epochs: 10
    n_iters: 1000
    snapshot_freq: 500
    validation_freq: 200

sampling:
    batch_size: 4
    last_only: True

optim:
    weight_decay: 0.000
    optimizer: "Adam"
    lr: 0.0002
    beta1: 0.9
    amsgrad: false
    eps: 0.00000001
    grad_clip: 1.0
"""

CONFIGS = [
    dict(name="small", seed=3101, yml=SMALL_YML),
    # Key map and configs only: its weights (4.8 MB) would double the fixtures; its parity with
    # diffusers is still checked here, at generation time.
    dict(name="deeper", seed=3102, yml=DEEPER_YML, keys_only=True),
]

FILES = {
    "checkpoint": "model.ckpt",
    "ddpm_config": "ddpm.json",
    "diffusers_config": "diffusers_config.json",
    "diffusers_keys": "diffusers_keys.json",
    "input": "input.npy",
    "timesteps": "timesteps.npy",
    "output": "output.npy",
    "output_f64": "output_f64.npy",
}


# --------------------------------------------------------------------------
# helpers


def exc_text(e):
    return f"{type(e).__name__}: {e}"


def import_file(mod_name, path):
    spec = importlib.util.spec_from_file_location(mod_name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def source_record(path):
    sha = sha256_file(path)
    rec = {"sha256": sha, "file": os.path.basename(path)}
    if sha in KNOWN_SOURCES:
        rec.update(KNOWN_SOURCES[sha])
    else:
        rec["note"] = "unknown version (SHA-256 not in KNOWN_SOURCES)"
        print(f"WARNING: {path}: SHA-256 {sha} is not a known version", file=sys.stderr)
    return rec


def dict2namespace(d):
    """As ermongroup/ddim main.py builds the config object from the yml."""
    ns = argparse.Namespace()
    for k, v in d.items():
        setattr(ns, k, dict2namespace(v) if isinstance(v, dict) else v)
    return ns


# --------------------------------------------------------------------------
# ermongroup model




@contextlib.contextmanager
def temb_as(ddim_mod, dtype, exact=False):
    """Make ermongroup's get_timestep_embedding return `dtype`.

    exact=False: the original float32 computation, cast to dtype.
    exact=True:  the same formula computed in float64 (for temb_f32_effect).
    """
    orig = ddim_mod.get_timestep_embedding

    def patched(timesteps, embedding_dim):
        if not exact:
            return orig(timesteps, embedding_dim).to(dtype)
        half = embedding_dim // 2
        e = math.log(10000) / (half - 1)
        e = torch.exp(torch.arange(half, dtype=torch.float64) * -e)
        e = timesteps.double()[:, None] * e[None, :]
        e = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
        assert embedding_dim % 2 == 0
        return e.to(dtype)

    ddim_mod.get_timestep_embedding = patched
    try:
        yield
    finally:
        ddim_mod.get_timestep_embedding = orig


def run_original(ddim_mod, model, x, ts, dtype, exact_temb=False):
    m = copy.deepcopy(model).to(dtype).eval()
    xt = torch.from_numpy(x).to(dtype)
    tt = torch.tensor(ts, dtype=torch.int64)
    with torch.no_grad():
        if dtype == torch.float32 and not exact_temb:
            out = m(xt, tt)  # unpatched: exactly ermongroup's forward
        else:
            with temb_as(ddim_mod, dtype, exact=exact_temb):
                out = m(xt, tt)
    return out.numpy()


NO_EFFECT_REL = 1e-9


def gradient_check(ddim_mod, model, x, ts):
    """One float64 backward pass. Returns (zero-gradient names, no-effect
    names, largest no-effect / smallest effective relative gradient)."""
    m = copy.deepcopy(model).double().eval()
    m.zero_grad()
    with temb_as(ddim_mod, torch.float64):
        out = m(torch.from_numpy(x).double(), torch.tensor(ts, dtype=torch.int64))
    r = torch.from_numpy(np.random.default_rng(7).standard_normal(out.shape))
    (out * r).sum().backward()
    g = {n: (0.0 if p.grad is None else float(p.grad.abs().max())) for n, p in m.named_parameters()}
    gmax = max(g.values())
    zero = [n for n, v in g.items() if v == 0.0]
    no_effect = [n for n, v in g.items() if v <= NO_EFFECT_REL * gmax]
    eff = [v / gmax for n, v in g.items() if n not in no_effect]
    ne = [g[n] / gmax for n in no_effect]
    return zero, no_effect, (max(ne) if ne else None), min(eff)


def no_effect_expected(model):
    """Parameters that cannot change the output (see the module docstring)."""
    res = set()
    for name, mod in model.named_modules():
        kind = type(mod).__name__
        if kind == "AttnBlock":
            res.add(f"{name}.k.bias")
        if kind == "ResnetBlock" and mod.norm2.num_channels == mod.norm2.num_groups:
            res |= {f"{name}.conv1.bias", f"{name}.temb_proj.weight", f"{name}.temb_proj.bias"}
    if model.norm_out.num_channels == model.norm_out.num_groups:
        top = model.up[0]
        last = f"up.0.block.{len(top.block) - 1}"
        res.add(f"{last}.conv2.bias")
        if hasattr(top.block[-1], "nin_shortcut"):
            res.add(f"{last}.nin_shortcut.bias")
        if len(top.attn) > 0:
            a = f"up.0.attn.{len(top.attn) - 1}"
            res |= {f"{a}.v.bias", f"{a}.proj_out.bias"}
    order = [n for n, _ in model.named_parameters()]
    return [n for n in order if n in res]


# --------------------------------------------------------------------------
# diffusers side


def level_resolutions(ddpm):
    size = ddpm["data"]["image_size"]
    return [size // (2 ** i) for i in range(len(ddpm["model"]["ch_mult"]))]


def diffusers_config_from_yml(ddpm):
    """UNet2DModel kwargs equivalent to ermongroup's Model(config).

    Level i (resolution image_size / 2**i) gets attention iff its resolution is
    in attn_resolutions (ermongroup's curr_res test); up blocks mirror it.
    """
    m = ddpm["model"]
    if not m.get("resamp_with_conv", True):
        raise ValueError("resamp_with_conv: false (avg-pool / conv-less resampling) has no UNet2DModel equivalent")
    if m["type"] != "simple":
        raise ValueError(f"model.type {m['type']!r} (bayesian adds a logvar parameter) not handled")
    attn = set(m["attn_resolutions"])
    res = level_resolutions(ddpm)
    down = ["AttnDownBlock2D" if r in attn else "DownBlock2D" for r in res]
    up = ["AttnUpBlock2D" if r in attn else "UpBlock2D" for r in reversed(res)]
    return dict(
        sample_size=ddpm["data"]["image_size"],
        in_channels=m["in_channels"],
        out_channels=m["out_ch"],
        center_input_sample=False,
        time_embedding_type="positional",
        flip_sin_to_cos=False,  # ermongroup: cat([sin, cos])
        freq_shift=1,  # ermongroup: log(10000) / (half_dim - 1)
        down_block_types=down,
        up_block_types=up,
        block_out_channels=[m["ch"] * k for k in m["ch_mult"]],
        layers_per_block=m["num_res_blocks"],
        mid_block_scale_factor=1,
        downsample_padding=0,  # ermongroup: F.pad (0, 1, 0, 1), conv stride 2 padding 0
        downsample_type="conv",
        upsample_type="conv",
        dropout=m["dropout"],
        act_fn="silu",
        attention_head_dim=None,  # one head of all channels, scale C**-0.5
        norm_num_groups=32,
        norm_eps=1e-6,
        resnet_time_scale_shift="default",
        add_attention=True,
    )


def rule_key(key, num_levels):
    """Hand-written statement of the mapping (checked against the script)."""
    rules = [
        (r"^temb\.dense\.0\.(weight|bias)$", r"time_embedding.linear_1.\1"),
        (r"^temb\.dense\.1\.(weight|bias)$", r"time_embedding.linear_2.\1"),
        (r"^(conv_in|conv_out)\.(weight|bias)$", r"\1.\2"),
        (r"^norm_out\.(weight|bias)$", r"conv_norm_out.\1"),
        (r"^mid\.block_1\.", "mid_block.resnets.0."),
        (r"^mid\.block_2\.", "mid_block.resnets.1."),
        (r"^mid\.attn_1\.", "mid_block.attentions.0."),
        (r"^down\.(\d+)\.block\.(\d+)\.", r"down_blocks.\1.resnets.\2."),
        (r"^down\.(\d+)\.attn\.(\d+)\.", r"down_blocks.\1.attentions.\2."),
        (r"^down\.(\d+)\.downsample\.conv\.", r"down_blocks.\1.downsamplers.0.conv."),
    ]
    new = key
    for pat, rep in rules:
        new = re.sub(pat, rep, new)
    m = re.match(r"^up\.(\d+)\.(block|attn|upsample)\.(.*)$", key)
    if m:
        blk = num_levels - 1 - int(m.group(1))
        kind, rest = m.group(2), m.group(3)
        if kind == "block":
            new = f"up_blocks.{blk}.resnets.{rest}"
        elif kind == "attn":
            new = f"up_blocks.{blk}.attentions.{rest}"
        else:
            assert rest.startswith("conv.")
            new = f"up_blocks.{blk}.upsamplers.0.{rest}"
    if ".resnets." in new:
        new = new.replace(".temb_proj.", ".time_emb_proj.").replace(".nin_shortcut.", ".conv_shortcut.")
    if ".attentions." in new:
        for a, b in ((".norm.", ".group_norm."), (".q.", ".to_q."), (".k.", ".to_k."), (".v.", ".to_v."),
                     (".proj_out.", ".to_out.0.")):
            new = new.replace(a, b)
    return new


def tensor_id(t):
    return (t.data_ptr(), t.dtype, t.numel())


def script_convert(conv_mod, sd, dcfg_full):
    """The script's convert_ddpm_checkpoint with shim 1; returns
    (raw converted dict, {original key: raw key})."""
    shim = dict(sd)
    for k in sd:
        mm = re.match(r"^down\.(\d+)\.downsample\.conv\.(weight|bias)$", k)
        if mm:
            shim[f"down.{mm.group(1)}.downsample.op.{mm.group(2)}"] = sd[k]
    raw = conv_mod.convert_ddpm_checkpoint(shim, dict(dcfg_full))
    by_id = {}
    for k, t in sd.items():
        assert tensor_id(t) not in by_id, f"tensors share storage: {k}"
        by_id[tensor_id(t)] = k
    orig_to_raw = {}
    for rk, t in raw.items():
        ok = by_id[tensor_id(t)]
        assert ok not in orig_to_raw, f"{ok} emitted twice ({orig_to_raw[ok]}, {rk})"
        orig_to_raw[ok] = rk
    missing = [k for k in sd if k not in orig_to_raw]
    assert not missing, f"script dropped tensors: {missing}"
    return raw, orig_to_raw


def fix_nin_shortcut(key):
    return key.replace(".nconv_shortcut.", ".conv_shortcut.")


def time_projection_diff(ddim_mod, ch, ts):
    """Both compute the sinusoids in float32 but round the frequencies
    differently (exp(arange * -(log(1e4) / (h - 1))) vs
    exp(-log(1e4) * arange / (h - 1))); t up to 999 amplifies it. This, not
    the weights, is why the float64 outputs differ by ~1e-6."""
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor(ts, dtype=torch.int64)
    a = ddim_mod.get_timestep_embedding(t, ch)
    b = get_timestep_embedding(t, ch, flip_sin_to_cos=False, downscale_freq_shift=1)
    return maxabs(a.numpy(), b.numpy())


def run_diffusers(model, x, ts, dtype):
    m = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        out = m(torch.from_numpy(x).to(dtype), torch.tensor(ts, dtype=torch.int64)).sample
    return out.numpy()


# --------------------------------------------------------------------------
# build


def build_folder(out, spec, ddim_mod, conv_mod, log):
    name, seed = spec["name"], spec["seed"]
    folder = os.path.join(out, name)
    os.makedirs(folder)
    ddpm = yaml.safe_load(spec["yml"])
    write_json(os.path.join(folder, FILES["ddpm_config"]), ddpm, sort_keys=False)

    # ermongroup model, randomized, saved, reloaded as the runner does.
    torch.manual_seed(seed)
    model = ddim_mod.Model(dict2namespace(ddpm)).eval()
    randomize_parameters(model, seed, gain=None)
    ckpt = os.path.join(folder, FILES["checkpoint"])
    torch.save(model.state_dict(), ckpt)
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert list(sd) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert sd[k].dtype == torch.float32 and torch.equal(sd[k], v), k
    loaded = ddim_mod.Model(dict2namespace(ddpm)).eval()
    loaded.load_state_dict(sd, strict=True)

    rng = np.random.default_rng(seed)
    size, c_in = ddpm["data"]["image_size"], ddpm["model"]["in_channels"]
    x = rng.standard_normal((BATCH, c_in, size, size)).astype(np.float32)
    ts = np.array(TIMESTEPS, dtype=np.int64)
    save_npy(os.path.join(folder, FILES["input"]), x)
    save_npy(os.path.join(folder, FILES["timesteps"]), ts)

    out32 = run_original(ddim_mod, loaded, x, TIMESTEPS, torch.float32).astype(np.float32)
    out64 = run_original(ddim_mod, loaded, x, TIMESTEPS, torch.float64)
    out64_exact = run_original(ddim_mod, loaded, x, TIMESTEPS, torch.float64, exact_temb=True)
    save_npy(os.path.join(folder, FILES["output"]), out32)
    save_npy(os.path.join(folder, FILES["output_f64"]), out64)

    zero, no_effect, ne_max, eff_min = gradient_check(ddim_mod, loaded, x, TIMESTEPS)
    assert not zero, f"{name}: parameters with zero gradient: {zero}"
    expected = no_effect_expected(loaded)
    assert no_effect == expected, f"{name}: no-effect parameters {no_effect} != expected {expected}"

    # diffusers config and conversion.
    dkw = diffusers_config_from_yml(ddpm)
    dmodel = UNet2DModel(**dkw).eval()
    dcfg_full = json.loads(dmodel.to_json_string())
    write_json(os.path.join(folder, FILES["diffusers_config"]), dcfg_full)

    issues = []
    try:  # the unmodified script on the checkpoint as loaded
        conv_mod.convert_ddpm_checkpoint(dict(sd), dict(dcfg_full))
        issues.append({"step": "unmodified script", "result": "ran"})
    except Exception as e:  # noqa: BLE001
        issues.append({"step": "unmodified script", "result": exc_text(e)})

    raw, orig_to_raw = script_convert(conv_mod, sd, dcfg_full)
    res = dmodel.load_state_dict(dict(raw), strict=False)
    issues.append({
        "step": "script output (with shim 1) -> UNet2DModel.load_state_dict, as the script's __main__ does",
        "missing_keys": sorted(res.missing_keys),
        "unexpected_keys": sorted(res.unexpected_keys),
    })
    fixed1 = {fix_nin_shortcut(k): v for k, v in raw.items()}
    fixed = dmodel._fix_state_dict_keys_on_load(dict(fixed1))
    res2 = dmodel.load_state_dict(dict(fixed), strict=False)
    issues.append({
        "step": "fix 2 only (diffusers' _fix_state_dict_keys_on_load, i.e. what from_pretrained would apply)",
        "missing_keys": sorted(dmodel.load_state_dict(
            dmodel._fix_state_dict_keys_on_load(dict(raw)), strict=False).missing_keys),
    })
    assert not res2.missing_keys and not res2.unexpected_keys, (res2.missing_keys, res2.unexpected_keys)
    dmodel.load_state_dict(fixed, strict=True)

    # Final mapping by tensor identity.
    final_by_id = {tensor_id(t): k for k, t in fixed.items()}
    mapping, reshaped, script_differs = {}, [], {}
    n_levels = len(ddpm["model"]["ch_mult"])
    for k, t in sd.items():
        fk = final_by_id[tensor_id(t)]
        mapping[k] = fk
        assert fk == rule_key(k, n_levels), (k, fk, rule_key(k, n_levels))
        ft = fixed[fk]
        assert torch.equal(ft.reshape(t.shape), t)
        if tuple(ft.shape) != tuple(t.shape):
            reshaped.append({"original": k, "diffusers": fk, "shape_before": list(t.shape),
                             "shape_after": list(ft.shape)})
        if orig_to_raw[k] != fk:
            script_differs[k] = orig_to_raw[k]
    assert len(set(mapping.values())) == len(mapping) == len(dmodel.state_dict())
    for k, t in dmodel.state_dict().items():
        assert torch.equal(t, fixed[k]), k

    keys_doc = {
        "mapping": mapping,
        "reshaped": reshaped,
        "reshape_rule": "attention q/k/v/proj_out 1x1 conv weights (C, C, 1, 1) -> linear (C, C) "
                        "(the script squeeze()s every tensor whose new key contains 'attentions'); "
                        "all other tensors keep shape and values",
        "script_output_key_where_different": script_differs,
        "script_issues": issues,
        "shims_and_fixes": {
            "shim_1": "input alias down.{i}.downsample.op.{weight,bias} := down.{i}.downsample.conv.{weight,bias} "
                      "(the script reads .op.; ermongroup checkpoints have .conv.)",
            "fix_1": "nconv_shortcut -> conv_shortcut (script replaces 'in_shortcut' inside 'nin_shortcut')",
            "fix_2": "diffusers ModelMixin._fix_state_dict_keys_on_load: query/key/value/proj_attn -> "
                     "to_q/to_k/to_v/to_out.0 (group_norm unchanged)",
        },
        "num_tensors": len(mapping),
    }
    write_json(os.path.join(folder, FILES["diffusers_keys"]), keys_doc)

    # Parity.
    d32 = run_diffusers(dmodel, x, TIMESTEPS, torch.float32)
    d64 = run_diffusers(dmodel, x, TIMESTEPS, torch.float64)
    diff32 = maxabs(d32, out32)
    diff64 = maxabs(d64, out64)
    assert diff32 <= TOL_DIFFUSERS, f"{name}: diffusers vs original {diff32:.3e} > {TOL_DIFFUSERS}"

    entry = {
        "folder": name,
        "yml_like": "church.yml" if name == "small" else "celeba.yml",
        "output_depends_on_timestep": bool(maxabs(
            run_original(ddim_mod, loaded, x, [TIMESTEPS[1]] * BATCH, torch.float64), out64) > 1e-6),
        "model": ddpm["model"],
        "image_size": size,
        "level_resolutions": level_resolutions(ddpm),
        "num_parameters": int(sum(p.numel() for p in loaded.parameters())),
        "num_tensors": len(sd),
        "num_reshaped": len(reshaped),
        "input_shape": list(x.shape),
        "timesteps": TIMESTEPS,
        "output_shape": list(out32.shape),
        "output_std": float(np.std(out64)),
        "output_max_abs": float(np.max(np.abs(out64))),
        "max_abs_diff_f32_f64": maxabs(out32, out64),
        "temb_f32_effect": maxabs(out64, out64_exact),
        "max_abs_diff_diffusers_vs_original_f32": diff32,
        "max_abs_diff_diffusers_vs_original_f64": diff64,
        "time_projection_f32_max_diff_diffusers_vs_original": time_projection_diff(
            ddim_mod, ddpm["model"]["ch"], TIMESTEPS),
        "diffusers_tolerance": TOL_DIFFUSERS,
        "all_gradients_nonzero": True,
        "parameters_without_effect": no_effect,
        "gradient_rel_max_without_effect": ne_max,
        "gradient_rel_min_with_effect": eff_min,
        "files": dict(FILES),
    }
    if spec.get("keys_only"):
        for f in ("checkpoint", "input", "timesteps", "output", "output_f64"):
            os.remove(os.path.join(folder, FILES[f]))
        entry["files"] = {k: v for k, v in FILES.items() if k in ("ddpm_config", "diffusers_config", "diffusers_keys")}
    entry["sha256"] = {v: sha256_file(os.path.join(folder, v)) for v in sorted(entry["files"].values())}
    log(f"{name}: params {entry['num_parameters']} tensors {len(sd)} out std {entry['output_std']:.3f} "
        f"|f32-f64| {entry['max_abs_diff_f32_f64']:.2e} temb {entry['temb_f32_effect']:.2e} "
        f"|diffusers-orig| f32 {diff32:.2e} f64 {diff64:.2e}")
    return entry


def probes(ddim_mod, conv_mod):
    """Behaviour of the anchors outside the fixtures (recorded in the manifest)."""
    ddpm = yaml.safe_load(SMALL_YML)
    torch.manual_seed(0)
    model = ddim_mod.Model(dict2namespace(ddpm)).eval()
    randomize_parameters(model, 0, gain=None)
    sd = model.state_dict()
    dcfg = json.loads(UNet2DModel(**diffusers_config_from_yml(ddpm)).to_json_string())
    res = {}

    x = torch.zeros(1, 3, 32, 32)
    try:
        with torch.no_grad():
            model(x, torch.tensor([1]))
        res["original_input_size_other_than_image_size"] = "ran"
    except Exception as e:  # noqa: BLE001
        res["original_input_size_other_than_image_size"] = (
            "32x32 input to a 16x16 model: " + exc_text(e) + " (forward asserts x.shape[2] == x.shape[3] == "
            "config.data.image_size); diffusers' UNet2DModel accepts any size divisible by 2**(levels-1)")

    try:
        with torch.no_grad():
            copy.deepcopy(model).double()(x[:, :, :16, :16].double(), torch.tensor([1]))
        res["original_model_double"] = "ran"
    except Exception as e:  # noqa: BLE001
        res["original_model_double"] = exc_text(e) + " (get_timestep_embedding returns float32)"

    try:
        conv_mod.convert_ddpm_checkpoint({"module." + k: v for k, v in sd.items()}, dict(dcfg))
        res["dataparallel_module_prefix"] = "ran"
    except Exception as e:  # noqa: BLE001
        res["dataparallel_module_prefix"] = (
            exc_text(e) + " (the script has no 'module.' handling. ermongroup's own training checkpoints "
            "ckpt.pth are lists [model sd, optimizer, epoch, step, ema shadow]: states[0] has the "
            "DataParallel 'module.' prefix, the EMA shadow states[-1] has none (EMAHelper unwraps "
            "DataParallel); the pretrained pesser checkpoints are plain state dicts without prefix)")

    ddpm_nc = copy.deepcopy(ddpm)
    ddpm_nc["model"]["resamp_with_conv"] = False
    torch.manual_seed(0)
    m_nc = ddim_mod.Model(dict2namespace(ddpm_nc)).eval()
    sd_nc = m_nc.state_dict()
    try:
        raw = conv_mod.convert_ddpm_checkpoint(dict(sd_nc), dict(dcfg))
        raw = {fix_nin_shortcut(k): v for k, v in raw.items()}
        dm = UNet2DModel(**diffusers_config_from_yml(ddpm))
        r = dm.load_state_dict(dm._fix_state_dict_keys_on_load(raw), strict=False)
        res["resamp_with_conv_false"] = {
            "checkpoint": "has no downsample/upsample tensors (avg_pool2d 2x2 down, plain nearest up)",
            "script": "runs (no downsample key -> no .op. lookup); output lacks resampler tensors",
            "missing_in_UNet2DModel": sorted(r.missing_keys),
            "unexpected": sorted(r.unexpected_keys),
            "note": "UNet2DModel's DownBlock2D/UpBlock2D always use conv resamplers (downsample_type 'resnet' "
                    "is a ResnetBlock2D with parameters), so resamp_with_conv false has no diffusers "
                    "equivalent; diffusers_config_from_yml() rejects it",
        }
    except Exception as e:  # noqa: BLE001
        res["resamp_with_conv_false"] = exc_text(e)
    return res


def build(out, ddim_path, conv_path, log=print):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    ddim_mod = import_file("ddim_models_diffusion", ddim_path)
    conv_mod = import_file("diffusers_convert_ddpm_original", conv_path)
    entries = [build_folder(out, spec, ddim_mod, conv_mod, log) for spec in CONFIGS]
    manifest = {
        "generator": "tools/make_ddpm_original_fixtures.py",
        "sources": {
            "ddim_model": source_record(ddim_path),
            "diffusers_conversion_script": source_record(conv_path),
        },
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "numpy": np.__version__,
            "pyyaml": yaml.__version__,
        },
        "weight_init": "every parameter overwritten: ndim>=2 weights N(0,1)/sqrt(fan_in); 1-D weights "
                       "(GroupNorm) 1+0.1*N(0,1); biases 0.1*N(0,1)",
        "output_f64_note": "ermongroup's get_timestep_embedding is float32-only; output_f64 uses its float32 "
                           "result cast to float64 (temb_f32_effect: difference to a float64 time projection)",
        "script_probes": probes(ddim_mod, conv_mod),
        "configs": entries,
    }
    write_json(os.path.join(out, "manifest.json"), manifest)
    return manifest


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="build twice in temp dirs, compare SHA-256")
    ap.add_argument("--model-py", default=os.environ.get("DDPM_MODEL_PY"),
                    help="ermongroup/ddim models/diffusion.py (env DDPM_MODEL_PY)")
    ap.add_argument("--convert-py", default=os.environ.get("DDPM_CONVERT_PY"),
                    help="diffusers scripts/convert_ddpm_original_checkpoint_to_diffusers.py (env DDPM_CONVERT_PY)")
    args = ap.parse_args(argv[1:])
    for flag, p in (("--model-py / DDPM_MODEL_PY", args.model_py), ("--convert-py / DDPM_CONVERT_PY", args.convert_py)):
        if not p or not os.path.isfile(p):
            ap.error(f"{flag}: file not found ({p!r}); see the module docstring for where to get it")
    ddim_path, conv_path = os.path.abspath(args.model_py), os.path.abspath(args.convert_py)
    if args.check:
        return check_reproducible(lambda d: build(d, ddim_path, conv_path, log=lambda s: None))
    out = os.path.abspath(args.out)
    build(out, ddim_path, conv_path)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
