#!/usr/bin/env python3
"""Write the guided-diffusion (ADM) UNetModel parity fixtures in tests/fixtures/adm/.

Reference implementation: openai/guided-diffusion as packaged on PyPI,
    guided-diffusion-sdk==1.0.0
      (sdist guided_diffusion_sdk-1.0.0.tar.gz, sha256
       ab7578c5d7bf0a74cfe5d6d10da95f46527457ca4d52785f1db2eb446d08f365)
installed next to, not into, the reference venv (tools/requirements.txt), from the
repository root:
    .venv-ref/bin/pip install --no-deps --target .venv-gdsdk -r tools/requirements-adm.txt
Its UNetModel / AttentionBlock / ResBlock / QKVAttention* / nn.py /
script_util.create_model / gaussian_diffusion.get_named_beta_schedule are
identical to openai/guided-diffusion@22e0df8 except that upstream's
AttentionBlock.forward always routes through its gradient-checkpoint function
(flag True) and the SDK's CheckpointFunction stores tensors differently: the
forward numerics are the same. Only guided_diffusion.script_util,
.unet, .nn and .gaussian_diffusion are imported (those need nothing beyond
torch and numpy; dist_util / image_datasets / train_util, which need blobfile
and mpi4py, are never imported, so nothing is stubbed).

Run:                PYTHONPATH=.venv-gdsdk python3 tools/make_adm_fixtures.py [OUT_DIR]
Reproducibility:    PYTHONPATH=.venv-gdsdk python3 tools/make_adm_fixtures.py --check
Read-back check:    PYTHONPATH=.venv-gdsdk python3 tools/make_adm_fixtures.py --verify [DIR]
Benchmark model:    PYTHONPATH=.venv-gdsdk python3 tools/make_adm_fixtures.py --bench-model NAME OUT_DIR
(python3 in the reference venv; from the repository root, as PYTHONPATH is relative.)
(OUT_DIR defaults to tests/fixtures/adm next to this script's repository.)

Determinism: fixed seeds (one torch.Generator / numpy default_rng per model),
torch.set_num_threads(1), torch.use_deterministic_algorithms(True), every
file rewritten from scratch (the output folder is deleted first). torch.save
(zipfile format) is byte-deterministic for the same file name and content.
`--check` writes the whole tree twice into temporary folders and compares the
SHA-256 of every file.

Models: built ONLY with guided_diffusion.script_util.create_model(**flags),
flags = model_and_diffusion_defaults() updated with the per-model overrides,
restricted to create_model's parameters. NOTE: the defaults that matter are
those of model_and_diffusion_defaults() (what guided-diffusion's scripts feed
create_model through argparse), NOT create_model's own keyword defaults, which
differ: num_heads 4 vs 1, use_scale_shift_norm True vs False,
attention_resolutions "16,8" vs "16". GroupNorm32 has 32 groups, so every
channel count must be a multiple of 32 (num_channels >= 32).
All inputs are 16x16 maps: image_size only sets the derived channel_mult and
the attention downsample rates ds = image_size // res.

  legacy_heads       image_size 16, num_channels 32, num_res_blocks 1,
                     channel_mult "1,1", attention_resolutions "8" (ds 2),
                     num_heads 2, num_head_channels -1 (2 heads x 16 ch),
                     use_scale_shift_norm False, resblock_updown False
                     (conv Downsample / Upsample), use_new_attention_order
                     False (QKVAttentionLegacy), learn_sigma False.
  p2_like            image_size 16, num_channels 32, num_res_blocks 1,
                     channel_mult "1,1", attention_resolutions "8",
                     num_head_channels 16 (2 heads; num_heads keeps its
                     default 4 and must be ignored), use_scale_shift_norm True,
                     resblock_updown True, learn_sigma True (6 output
                     channels). adm.json holds ONLY the keys that differ from
                     model_and_diffusion_defaults() (missing keys take the
                     upstream defaults, e.g. use_scale_shift_norm True).
  new_order          image_size 16, num_channels 32, num_res_blocks 2,
                     channel_mult "1,1", attention_resolutions "16,8" (ds 1
                     and 2), num_heads 4 (8 ch/head), num_heads_upsample 2
                     (output-block attentions: 2 heads x 16 ch; the middle
                     block uses num_heads), use_new_attention_order True
                     (QKVAttention), use_scale_shift_norm True.
  defaults_fp16      image_size 16, channel_mult "1,1", num_channels 32,
                     num_res_blocks 1, everything else at guided-diffusion's
                     defaults (attention_resolutions "16,8" -> ds 1 and 2,
                     num_heads 4, use_scale_shift_norm True). model.pt
                     stores the state dict in float16; all reference outputs
                     are computed from exactly those fp16-rounded weights
                     loaded into a float32 (float64) model, as the Rust test
                     does. (use_fp16 stays False: in guided-diffusion that flag
                     only sets UNetModel.dtype / the scripts' convert_to_fp16,
                     it is not a storage format.)
Size: the brief's "1,2" channel_mult for legacy_heads / p2_like / new_order
(and num_head_channels 32 for p2_like) made 0.7-1.1 M parameters per model;
they were shrunk to "1,1" (p2_like to 16 channels per head to keep 2 heads)
to fit the fixture budget. A derived channel_mult (empty flag) needs image_size
>= 64 and so >= 3.75 M parameters (7.5 MB even in fp16): it is covered instead
by layouts.json, the tensor names and shapes of the two 256x256 benchmark
architectures (channel_mult derived from image_size 256), which the Rust test
builds its network against without weights.

Weights: create_model zero-initialises the ResBlock out convs, proj_out and
the final out conv (released models have no zero layers), so after
construction EVERY parameter is overwritten, in named_parameters() order,
from one seeded torch.Generator per model (float32 draws):
  * weight with ndim >= 2 (conv / linear): N(0, 1) * GAIN / sqrt(fan_in),
    fan_in = prod(shape[1:]), GAIN = 1;
  * 1-D weight (GroupNorm gamma): 1 + 0.1 * N(0, 1);
  * bias: 0.1 * N(0, 1).
One backward pass of the float64 model checks that every parameter tensor
gets a non-zero gradient (asserted).

Per model folder <name>/:
  adm.json         guided-diffusion flag names/types as in
                   model_and_diffusion_defaults() (ints, bools, strings
                   "16,8" / ""): every create_model key plus learn_sigma,
                   diffusion_steps 1000, noise_schedule "linear",
                   predict_xstart false, rescale_timesteps false (p2_like:
                   non-default keys only).
  model.pt         torch.save(model.state_dict()) (zipfile serialization);
                   float16 tensors for defaults_fp16, else float32.
  input.npy        float32 (3, 3, 16, 16), N(0, 1), numpy default_rng(seed)
  timesteps.npy    int64 [0, 500, 999] (passed as a torch.long tensor, as
                   guided-diffusion's samplers do with rescale_timesteps off)
  output.npy       float32: model(input, timesteps), model in float32 running
                   guided-diffusion's code unmodified; all output channels.
  output_f64.npy   float64: the same, computed in true float64 (see below).
The manifest records per model max|output - output_f64| (the float32 noise
floor of the reference), the output std, the attention layout, the effective
channel_mult and attention ds, parameter counts and file SHA-256s.

True float64 run. model.double() is not enough: guided-diffusion forces
float32 in four places; inside float64 runs only, these are monkeypatched
(context manager precision_patches(), restored afterwards):
  1. UNetModel.forward casts h = x.type(self.dtype), self.dtype being
     torch.float32 (float16 if use_fp16): the instance attribute is set
     model.dtype = torch.float64 after model.double().
  2. nn.GroupNorm32.forward = super().forward(x.float()).type(x.dtype):
     replaced by nn.GroupNorm.forward(self, x) (no float32 round trip).
  3. guided_diffusion.unet.timestep_embedding (the name UNetModel.forward
     calls; nn.timestep_embedding builds freqs with a float32 arange and
     does timesteps.float()): replaced by the same formula computed in
     float64 (freqs = exp(-ln(10000) * arange(half, float64) / half),
     args = timesteps.double() * freqs, [cos(args), sin(args)]).
  4. QKVAttentionLegacy.forward and QKVAttention.forward do
     softmax(weight.float()).type(weight.dtype): replaced by verbatim copies
     without the .float() upcast.
The patched functions are written with a compute dtype; applied with float32
they reproduce guided-diffusion's unpatched float32 output bit for bit
(asserted for every model), so they are faithful copies.

DDIM reference (ddim/): the p2_like model (learn_sigma: eps = the first 3
of 6 output channels), run twice: float64 (patched float64 model, float64
arithmetic) and float32 (unpatched float32 model, float32 arithmetic with
coefficients sqrt(abar) computed in float64 and cast).
  alphas_cumprod.npy  float64 (1000,): cumprod(1 - betas) in float64,
                      betas = gaussian_diffusion.get_named_beta_schedule(
                      "linear", 1000) (np.linspace(1e-4, 0.02, 1000));
                      asserted equal to GaussianDiffusion.alphas_cumprod of
                      script_util.create_gaussian_diffusion(...).
  grid: N = 6, t0 = 500, seq[k] = (k * t0) // (N - 1) -> [0,100,...,500].
  step(x, eps, a, b): x0_hat = (x - sqrt(1-abar_a) eps) / sqrt(abar_a);
                      x_b = sqrt(abar_b) x0_hat + sqrt(1-abar_b) eps;
                      level "clean" has abar = 1.
  inversion:  x = x0; for k in 0..N-2: x = step(x, eps(x, seq[k]), seq[k],
              seq[k+1]); latents = x (N-1 model evaluations).
  generation: x = latents; for k = N-1 down to 1: x = step(x, eps(x, seq[k]),
              seq[k], seq[k-1]); then x = step(x, eps(x, 0), 0, clean)
              (N evaluations).
  files: x0.npy float32 (2, 3, 16, 16) (periodic Gaussian blur, sigma 2, of
  N(0,1) noise, each image scaled to max |x| = 0.95), latents.npy and
  reconstruction.npy (float32 casts of the float64 results), grid.json
  (rules, seq, float32-vs-float64 max differences).

not_a_state_dict.pt: torch.save of a dict without tensors ({"epoch": 3, ...}),
for the "not a state dict" error.

layouts.json: for each --bench-model architecture below, its full adm.json,
parameter count, attention layout and the state-dict keys with shapes in
state_dict() order (create_model on the meta device, no weights), so the
Rust key mapping of the real 256x256 layouts can be checked without the
multi-GB checkpoints.

Benchmark models (`--bench-model NAME OUT_DIR`, never committed): adm.json +
model.pt (float32, same init rule, fixed seed), no forward pass.
  imagenet256_uncond  guided-diffusion README, "256x256 model
                      (unconditional)" MODEL_FLAGS: --attention_resolutions
                      32,16,8 --class_cond False --diffusion_steps 1000
                      --image_size 256 --learn_sigma True --noise_schedule
                      linear --num_channels 256 --num_head_channels 64
                      --num_res_blocks 2 --resblock_updown True --use_fp16
                      True --use_scale_shift_norm True  (552,814,086 params).
  afhqdog256_p2       jychoi118/P2-weighting README.md (commit 3da0947,
                      "Sampling from pre-trained models"; the README gives
                      one set of model flags for all its 256x256 models,
                      FFHQ, CelebA-HQ, CUB, AFHQ-Dogs, Flowers, MetFaces):
                      --attention_resolutions 16 --class_cond False
                      --diffusion_steps 1000 --dropout 0.0 --image_size 256
                      --learn_sigma True --noise_schedule linear
                      --num_channels 128 --num_res_blocks 1
                      --num_head_channels 64 --resblock_updown True
                      --use_fp16 False --use_scale_shift_norm True
                      (93,563,910 params, the README's "93M").
"""

import collections
import contextlib
import copy
import importlib.metadata
import inspect
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
warnings.filterwarnings("ignore")

import torch.nn as tnn  # noqa: E402

import guided_diffusion.gaussian_diffusion as gd  # noqa: E402
import guided_diffusion.nn as gnn  # noqa: E402
import guided_diffusion.unet as gunet  # noqa: E402
from guided_diffusion.script_util import (  # noqa: E402
    create_gaussian_diffusion,
    create_model,
    model_and_diffusion_defaults,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixturelib import check_reproducible, maxabs, randomize_parameters, save_npy, sha256_file, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, os.pardir))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "adm")

PACKAGE = "guided-diffusion-sdk"
GAIN = 1.0
TIMESTEPS = [0, 500, 999]
INPUT_SHAPE = (3, 3, 16, 16)

DEFAULTS = model_and_diffusion_defaults()
CREATE_KEYS = [k for k in inspect.signature(create_model).parameters if k in DEFAULTS]
assert len(CREATE_KEYS) == len(inspect.signature(create_model).parameters), "create_model key missing from defaults"
DIFFUSION_KEYS = ["learn_sigma", "diffusion_steps", "noise_schedule", "predict_xstart", "rescale_timesteps"]
JSON_KEYS = CREATE_KEYS + [k for k in DIFFUSION_KEYS if k not in CREATE_KEYS]

# name, seed, overrides of model_and_diffusion_defaults(), adm.json style, weight storage
MODELS = [
    dict(
        name="legacy_heads",
        seed=3001,
        overrides=dict(
            image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,1", attention_resolutions="8",
            num_heads=2, num_head_channels=-1, use_scale_shift_norm=False, resblock_updown=False,
            use_new_attention_order=False, learn_sigma=False,
        ),
        json="full",
        storage="float32",
    ),
    dict(
        name="p2_like",
        seed=3002,
        overrides=dict(
            image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,1", attention_resolutions="8",
            num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
            use_new_attention_order=False, learn_sigma=True,
        ),
        json="non_default",
        storage="float32",
    ),
    dict(
        name="new_order",
        seed=3003,
        overrides=dict(
            image_size=16, num_channels=32, num_res_blocks=2, channel_mult="1,1", attention_resolutions="16,8",
            num_heads=4, num_heads_upsample=2, num_head_channels=-1, use_new_attention_order=True,
            use_scale_shift_norm=True, resblock_updown=False, learn_sigma=False,
        ),
        json="full",
        storage="float32",
    ),
    dict(
        name="defaults_fp16",
        seed=3004,
        overrides=dict(image_size=16, channel_mult="1,1", num_channels=32, num_res_blocks=1),
        json="full",
        storage="float16",
    ),
]

BENCH_MODELS = {
    "imagenet256_uncond": dict(
        seed=3101,
        source="openai/guided-diffusion README.md, '256x256 model (unconditional)' MODEL_FLAGS",
        overrides=dict(
            attention_resolutions="32,16,8", class_cond=False, diffusion_steps=1000, image_size=256,
            learn_sigma=True, noise_schedule="linear", num_channels=256, num_head_channels=64,
            num_res_blocks=2, resblock_updown=True, use_fp16=True, use_scale_shift_norm=True,
        ),
    ),
    "afhqdog256_p2": dict(
        seed=3102,
        source="jychoi118/P2-weighting README.md @3da0947, 'Sampling from pre-trained models' (one flag set "
               "for all its 256x256 models incl. AFHQ-Dogs)",
        overrides=dict(
            attention_resolutions="16", class_cond=False, diffusion_steps=1000, dropout=0.0, image_size=256,
            learn_sigma=True, noise_schedule="linear", num_channels=128, num_res_blocks=1, num_head_channels=64,
            resblock_updown=True, use_fp16=False, use_scale_shift_norm=True,
        ),
    ),
}

DDIM_MODEL = "p2_like"
DDIM_STEPS = 6
DDIM_T0 = 500
DDIM_SEED = 4343


# --------------------------------------------------------------------------
# helpers


def write_json_compact_lists(path, obj):
    """write_json, but lists of numbers and [name, [numbers]] pairs on one line."""
    text = json.dumps(obj, indent=2, sort_keys=True)
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    text = re.sub(r"\[\s*(\"[^\"]*\"),\s*(\[[^\]\n]*\])\s*\]", r"[\1, \2]", text)
    assert json.loads(text) == obj
    with open(path, "w") as f:
        f.write(text + "\n")


def all_flags(overrides):
    """model_and_diffusion_defaults() updated with overrides (unknown keys rejected)."""
    unknown = set(overrides) - set(DEFAULTS)
    assert not unknown, f"unknown flags {unknown}"
    d = dict(DEFAULTS)
    d.update(overrides)
    return d


def create_kwargs(flags):
    return {k: flags[k] for k in CREATE_KEYS}


def adm_json(flags, style):
    full = {k: flags[k] for k in JSON_KEYS}
    if style == "full":
        return full
    assert style == "non_default"
    return {k: v for k, v in full.items() if v != DEFAULTS[k]}


def model_from_adm_json(obj):
    """What a consumer of adm.json does: missing keys take upstream defaults."""
    return create_model(**create_kwargs(all_flags(obj))).eval()




def state_dict_as(model, dtype):
    sd = model.state_dict()
    out = collections.OrderedDict((k, v.detach().to(dtype).contiguous()) for k, v in sd.items())
    out._metadata = copy.deepcopy(sd._metadata)
    return out


# --------------------------------------------------------------------------
# precision patches (see module docstring, "True float64 run")


def _groupnorm_forward_nocast(self, x):
    return tnn.GroupNorm.forward(self, x)


def _make_timestep_embedding(dtype):
    def timestep_embedding(timesteps, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=dtype) / half).to(
            device=timesteps.device)
        args = timesteps[:, None].to(dtype) * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    return timestep_embedding


def _legacy_attention_nocast(self, qkv):
    bs, width, length = qkv.shape
    assert width % (3 * self.n_heads) == 0
    ch = width // (3 * self.n_heads)
    q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight, dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v)
    return a.reshape(bs, -1, length)


def _new_attention_nocast(self, qkv):
    bs, width, length = qkv.shape
    assert width % (3 * self.n_heads) == 0
    ch = width // (3 * self.n_heads)
    q, k, v = qkv.chunk(3, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum(
        "bct,bcs->bts",
        (q * scale).view(bs * self.n_heads, ch, length),
        (k * scale).view(bs * self.n_heads, ch, length),
    )
    weight = torch.softmax(weight, dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v.reshape(bs * self.n_heads, ch, length))
    return a.reshape(bs, -1, length)


@contextlib.contextmanager
def precision_patches(dtype):
    saved = (gnn.GroupNorm32.forward, gunet.timestep_embedding, gunet.QKVAttentionLegacy.forward,
             gunet.QKVAttention.forward)
    gnn.GroupNorm32.forward = _groupnorm_forward_nocast
    gunet.timestep_embedding = _make_timestep_embedding(dtype)
    gunet.QKVAttentionLegacy.forward = _legacy_attention_nocast
    gunet.QKVAttention.forward = _new_attention_nocast
    try:
        yield
    finally:
        (gnn.GroupNorm32.forward, gunet.timestep_embedding, gunet.QKVAttentionLegacy.forward,
         gunet.QKVAttention.forward) = saved


def as_dtype(model, dtype):
    """A copy of the model in dtype with UNetModel.dtype (the torso cast) set to it."""
    m = copy.deepcopy(model).to(dtype).eval()
    m.dtype = dtype
    return m


class Runner:
    """model(x, t) in float32 (unpatched guided-diffusion) or float64 (patched)."""

    def __init__(self, model, dtype, patched=None):
        self.model = as_dtype(model, dtype)
        self.dtype = dtype
        self.patched = (dtype == torch.float64) if patched is None else patched

    def __call__(self, x, timesteps, grad=False):
        x = x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))
        x = x.to(self.dtype)
        ts = torch.as_tensor(timesteps, dtype=torch.int64)
        ctx = precision_patches(self.dtype) if self.patched else contextlib.nullcontext()
        with ctx, torch.set_grad_enabled(grad):
            return self.model(x, ts)


def all_params_reach_output(model, x, timesteps):
    r = Runner(model, torch.float64)
    r.model.zero_grad()
    out = r(x, timesteps, grad=True)
    w = torch.from_numpy(np.random.default_rng(7).standard_normal(tuple(out.shape)))
    (out * w).sum().backward()
    return [n for n, p in r.model.named_parameters() if p.grad is None or float(p.grad.abs().max()) == 0.0]


def attention_layout(model):
    res = {}
    for name, mod in model.named_modules():
        if isinstance(mod, gunet.AttentionBlock):
            heads = mod.attention.n_heads
            res[name] = {
                "channels": mod.channels,
                "heads": heads,
                "head_channels": mod.channels // heads,
                "order": "new (QKVAttention)" if isinstance(mod.attention, gunet.QKVAttention)
                else "legacy (QKVAttentionLegacy)",
            }
    return res


# --------------------------------------------------------------------------
# model folders


def build_model_folder(out, spec, log):
    name = spec["name"]
    folder = os.path.join(out, name)
    os.makedirs(folder)
    flags = all_flags(spec["overrides"])
    kwargs = create_kwargs(flags)
    model = create_model(**kwargs).eval()
    randomize_parameters(model, spec["seed"], GAIN)

    storage = {"float32": torch.float32, "float16": torch.float16}[spec["storage"]]
    jobj = adm_json(flags, spec["json"])
    write_json(os.path.join(folder, "adm.json"), jobj)
    torch.save(state_dict_as(model, storage), os.path.join(folder, "model.pt"))

    # Reload from disk exactly as a consumer would: adm.json (+ upstream
    # defaults) -> create_model, model.pt -> load_state_dict (casts fp16 -> fp32).
    with open(os.path.join(folder, "adm.json")) as f:
        jread = json.load(f)
    loaded = model_from_adm_json(jread)
    sd = torch.load(os.path.join(folder, "model.pt"), map_location="cpu", weights_only=True)
    assert all(v.dtype == storage for v in sd.values())
    loaded.load_state_dict(sd, strict=True)
    assert create_kwargs(all_flags(jread)) == kwargs
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.to(storage).float()), k

    rng = np.random.default_rng(spec["seed"])
    x = rng.standard_normal(INPUT_SHAPE).astype(np.float32)
    ts = np.array(TIMESTEPS, dtype=np.int64)
    save_npy(os.path.join(folder, "input.npy"), x)
    save_npy(os.path.join(folder, "timesteps.npy"), ts)

    out32 = Runner(loaded, torch.float32)(x, ts).numpy()
    assert out32.dtype == np.float32
    out64 = Runner(loaded, torch.float64)(x, ts).numpy()
    assert out64.dtype == np.float64
    # The patched functions are faithful: in float32 they give guided-diffusion's own output bit for bit.
    out32_patched = Runner(loaded, torch.float32, patched=True)(x, ts).numpy()
    assert np.array_equal(out32, out32_patched), f"{name}: float32-patched model differs from guided-diffusion"
    save_npy(os.path.join(folder, "output.npy"), out32)
    save_npy(os.path.join(folder, "output_f64.npy"), out64)

    dead = all_params_reach_output(loaded, x, ts)
    assert not dead, f"{name}: parameters without gradient: {dead}"

    d = maxabs(out32, out64)
    n_out = int(out32.shape[1])
    files = ["adm.json", "model.pt", "input.npy", "timesteps.npy", "output.npy", "output_f64.npy"]
    entry = {
        "folder": name,
        "seed": spec["seed"],
        "create_model_flags": kwargs,
        "adm_json_keys": sorted(jread),
        "adm_json_style": "all create_model keys + diffusion keys" if spec["json"] == "full"
        else "only keys that differ from model_and_diffusion_defaults()",
        "model_pt_dtype": spec["storage"],
        "effective_channel_mult": [float(m) if isinstance(m, float) else int(m) for m in loaded.channel_mult],
        "attention_ds": sorted(int(v) for v in loaded.attention_resolutions),
        "attention_blocks": attention_layout(loaded),
        "num_parameters": int(sum(p.numel() for p in loaded.parameters())),
        "num_tensors": len(sd),
        "input_shape": list(x.shape),
        "timesteps": TIMESTEPS,
        "output_shape": list(out32.shape),
        "output_channels": n_out,
        "output_std": float(np.std(out64)),
        "output_max_abs": float(np.max(np.abs(out64))),
        "max_abs_diff_f32_f64": d,
        "all_parameters_reach_output": True,
        "float32_patched_equals_unpatched": True,
        "sha256": {fn: sha256_file(os.path.join(folder, fn)) for fn in files},
    }
    log(f"{name}: {entry['num_parameters']} params ({spec['storage']}), out {tuple(out32.shape)} "
        f"std {entry['output_std']:.3f} max|out| {entry['output_max_abs']:.3f} max|f32-f64| {d:.3e}")
    return entry, loaded


# --------------------------------------------------------------------------
# DDIM


def smooth_images(rng, shape, sigma=2.0):
    """Periodic Gaussian blur of N(0,1) noise, each image scaled to max |x| = 0.95."""
    noise = rng.standard_normal(shape)
    r = int(math.ceil(3 * sigma))
    offs = np.arange(-r, r + 1)
    kern = np.exp(-0.5 * (offs / sigma) ** 2)
    kern /= kern.sum()
    img = np.zeros(shape)
    for o, w in zip(offs, kern):
        img += w * np.roll(noise, o, axis=2)
    blurred = np.zeros(shape)
    for o, w in zip(offs, kern):
        blurred += w * np.roll(img, o, axis=3)
    for i in range(shape[0]):
        blurred[i] *= 0.95 / np.max(np.abs(blurred[i]))
    return blurred.astype(np.float32)


def linear_alphas_cumprod():
    betas = gd.get_named_beta_schedule("linear", 1000)
    assert betas.dtype == np.float64
    ac = np.cumprod(1.0 - betas, axis=0)
    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear")
    assert np.array_equal(ac, diffusion.alphas_cumprod)
    return ac


class DDIM:
    def __init__(self, model, dtype, abar):
        self.run = Runner(model, dtype)
        self.dtype = dtype
        self.abar = abar
        self.n_evals = 0

    def ab(self, level):
        return 1.0 if level == "clean" else float(self.abar[level])

    def coef(self, v):
        return torch.tensor(v, dtype=torch.float64).to(self.dtype)

    def eps(self, x, level):
        self.n_evals += 1
        out = self.run(x, [level] * x.shape[0])
        return out[:, : x.shape[1]]

    def step(self, x, eps, a, b):
        aa, abb = self.ab(a), self.ab(b)
        x0 = (x - self.coef(math.sqrt(1 - aa)) * eps) / self.coef(math.sqrt(aa))
        return self.coef(math.sqrt(abb)) * x0 + self.coef(math.sqrt(1 - abb)) * eps

    def invert(self, x, seq):
        for a, b in zip(seq[:-1], seq[1:]):
            x = self.step(x, self.eps(x, a), a, b)
        return x

    def generate(self, z, seq):
        rev = list(reversed(seq))
        x = z
        for a, b in zip(rev[:-1], rev[1:]):
            x = self.step(x, self.eps(x, a), a, b)
        return self.step(x, self.eps(x, rev[-1]), rev[-1], "clean")


def ddim_reference(out, models, log):
    folder = os.path.join(out, "ddim")
    os.makedirs(folder)
    model = models[DDIM_MODEL]
    assert model.out_channels == 6 and model.in_channels == 3
    abar = linear_alphas_cumprod()
    save_npy(os.path.join(folder, "alphas_cumprod.npy"), abar)
    x0 = smooth_images(np.random.default_rng(DDIM_SEED), (2, 3, 16, 16))
    save_npy(os.path.join(folder, "x0.npy"), x0)
    seq = [(k * DDIM_T0) // (DDIM_STEPS - 1) for k in range(DDIM_STEPS)]

    res = {}
    for dtype in (torch.float64, torch.float32):
        d = DDIM(model, dtype, abar)
        z = d.invert(torch.from_numpy(x0).to(dtype), seq)
        n_inv = d.n_evals
        rec = d.generate(z, seq)
        res[dtype] = dict(z=z.numpy(), rec=rec.numpy(), n_inv=n_inv, n_gen=d.n_evals - n_inv)
        assert res[dtype]["z"].dtype == {torch.float64: np.float64, torch.float32: np.float32}[dtype]
    r64, r32 = res[torch.float64], res[torch.float32]
    assert r64["n_inv"] == DDIM_STEPS - 1 and r64["n_gen"] == DDIM_STEPS
    save_npy(os.path.join(folder, "latents.npy"), r64["z"].astype(np.float32))
    save_npy(os.path.join(folder, "reconstruction.npy"), r64["rec"].astype(np.float32))

    files = ["alphas_cumprod.npy", "x0.npy", "latents.npy", "reconstruction.npy"]
    grid = {
        "model": DDIM_MODEL,
        "eps": "model(x, t)[:, :3] (learn_sigma: 6 output channels, the first 3 are eps)",
        "steps": DDIM_STEPS,
        "t0": DDIM_T0,
        "seq": seq,
        "seq_rule": "seq[k] = (k * t0) // (steps - 1), k = 0..steps-1 (integer arithmetic)",
        "alphas_cumprod": "alphas_cumprod.npy: numpy.cumprod(1 - betas) in float64, betas = "
                          "guided_diffusion.gaussian_diffusion.get_named_beta_schedule('linear', 1000) = "
                          "np.linspace(1e-4, 0.02, 1000, float64); equal to GaussianDiffusion.alphas_cumprod; "
                          "level t uses abar[t], level 'clean' uses abar = 1",
        "timesteps": "the model gets a torch.long tensor [t] * batch, as guided-diffusion's samplers do "
                     "(rescale_timesteps false)",
        "step": "x0_hat = (x_a - sqrt(1-abar_a) eps) / sqrt(abar_a); x_b = sqrt(abar_b) x0_hat + sqrt(1-abar_b) eps",
        "inversion": "x = x0; for k in 0..steps-2: x = step(x, eps(x, seq[k]), seq[k], seq[k+1]); latents = x. "
                     "steps-1 model evaluations",
        "generation": "x = latents; for k = steps-1 down to 1: x = step(x, eps(x, seq[k]), seq[k], seq[k-1]); "
                      "then x = step(x, eps(x, 0), 0, clean). steps model evaluations",
        "dtype": "latents.npy / reconstruction.npy: float32 casts of the float64 run (patched float64 model, "
                 "float64 arithmetic). The float32 run uses guided-diffusion's unpatched float32 model and float32 "
                 "arithmetic with sqrt coefficients computed in float64 and cast",
        "x0": "x0.npy float32 (2, 3, 16, 16): periodic Gaussian blur (sigma 2) of N(0,1) noise "
              f"(numpy default_rng({DDIM_SEED})), each image scaled to max |x| = 0.95",
        "model_evaluations": {"inversion": r64["n_inv"], "generation": r64["n_gen"]},
        "max_abs_diff_f32_run_vs_f64": {"latents": maxabs(r32["z"], r64["z"]),
                                        "reconstruction": maxabs(r32["rec"], r64["rec"])},
        "reconstruction_mse_vs_x0": float(np.mean((r64["rec"] - x0.astype(np.float64)) ** 2)),
        "max_abs": {"latents": float(np.max(np.abs(r64["z"]))),
                    "reconstruction": float(np.max(np.abs(r64["rec"])))},
        "sha256": {fn: sha256_file(os.path.join(folder, fn)) for fn in files},
    }
    write_json(os.path.join(folder, "grid.json"), grid)
    log(f"ddim: seq {seq}; f32 vs f64 {grid['max_abs_diff_f32_run_vs_f64']}; "
        f"reconstruction MSE {grid['reconstruction_mse_vs_x0']:.4e}")
    return grid


# --------------------------------------------------------------------------


PATCH_NOTES = [
    "model.double(); model.dtype = torch.float64 (UNetModel.forward casts h to self.dtype, float32 by default)",
    "guided_diffusion.nn.GroupNorm32.forward -> torch.nn.GroupNorm.forward(self, x) (no x.float() round trip)",
    "guided_diffusion.unet.timestep_embedding -> same formula with float64 arange / timesteps.double()",
    "QKVAttentionLegacy.forward / QKVAttention.forward -> copies without softmax(weight.float())",
]


def bench_layouts():
    """State-dict keys / shapes of the benchmark architectures (built on the meta device, no weights)."""
    res = {}
    for name, spec in BENCH_MODELS.items():
        flags = all_flags(spec["overrides"])
        with torch.device("meta"):
            model = create_model(**create_kwargs(flags))
        sd = model.state_dict()
        res[name] = {
            "source": spec["source"],
            "adm_json": adm_json(flags, "full"),
            "num_parameters": int(sum(p.numel() for p in model.parameters())),
            "num_tensors": len(sd),
            "attention_blocks": attention_layout(model),
            "tensors": [[k, list(v.shape)] for k, v in sd.items()],
        }
    return res


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
    # A torch.save file that is not a state dict (a training log): loading it must fail clearly.
    torch.save({"epoch": 3, "step": 1200, "lr": 1e-4}, os.path.join(out, "not_a_state_dict.pt"))
    layouts = bench_layouts()
    write_json_compact_lists(os.path.join(out, "layouts.json"), layouts)
    for name, lay in layouts.items():
        log(f"layout {name}: {lay['num_parameters']} params, {lay['num_tensors']} tensors")
    manifest = {
        "generator": "tools/make_adm_fixtures.py",
        "package": {"name": PACKAGE, "version": importlib.metadata.version(PACKAGE),
                    "install": "pip install --no-deps --target .venv-gdsdk -r tools/requirements-adm.txt"},
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "model_and_diffusion_defaults": DEFAULTS,
        "weight_init": "every parameter overwritten in named_parameters() order from torch.Generator(seed): "
                       "ndim>=2 weights N(0,1)*%g/sqrt(fan_in), fan_in=prod(shape[1:]); 1-D weights (GroupNorm) "
                       "1+0.1*N(0,1); biases 0.1*N(0,1)" % GAIN,
        "float64_patches": PATCH_NOTES,
        "models": entries,
        "layouts": {"file": "layouts.json", "models": sorted(layouts),
                    "note": "state-dict keys and shapes (in state_dict order) of the --bench-model architectures, "
                            "from create_model on the meta device; no weights"},
        "ddim": {"folder": "ddim", "grid": "ddim/grid.json", "model": grid["model"], "seq": grid["seq"],
                 "max_abs_diff_f32_run_vs_f64": grid["max_abs_diff_f32_run_vs_f64"]},
    }
    write_json(os.path.join(out, "manifest.json"), manifest)
    return manifest


def verify(folder):
    """Rebuild every model from adm.json + model.pt and recompute output.npy (float32)."""
    with open(os.path.join(folder, "manifest.json")) as f:
        man = json.load(f)
    ok = True
    for m in man["models"]:
        d = os.path.join(folder, m["folder"])
        with open(os.path.join(d, "adm.json")) as f:
            model = model_from_adm_json(json.load(f))
        model.load_state_dict(torch.load(os.path.join(d, "model.pt"), map_location="cpu", weights_only=True))
        o = Runner(model, torch.float32)(np.load(os.path.join(d, "input.npy")),
                                         np.load(os.path.join(d, "timesteps.npy"))).numpy()
        same = np.array_equal(o, np.load(os.path.join(d, "output.npy")))
        print(f"{m['folder']}: {'ok' if same else 'MISMATCH'}")
        ok &= same
    return 0 if ok else 1


def bench_model(name, folder):
    spec = BENCH_MODELS[name]
    flags = all_flags(spec["overrides"])
    model = create_model(**create_kwargs(flags)).eval()
    randomize_parameters(model, spec["seed"], GAIN)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    write_json(os.path.join(folder, "adm.json"), adm_json(flags, "full"))
    path = os.path.join(folder, "model.pt")
    torch.save(state_dict_as(model, torch.float32), path)
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} parameters, {os.path.getsize(path)} bytes -> {folder}  (flags: {spec['source']})")
    return 0


def main(argv):
    if argv[1:2] == ["--check"]:
        return check_reproducible(lambda d: build(d, log=lambda s: None))
    if argv[1:2] == ["--verify"]:
        return verify(os.path.abspath(argv[2] if len(argv) > 2 else DEFAULT_OUT))
    if argv[1:2] == ["--bench-model"]:
        if len(argv) != 4 or argv[2] not in BENCH_MODELS:
            print(f"usage: {argv[0]} --bench-model {{{','.join(BENCH_MODELS)}}} OUT_DIR", file=sys.stderr)
            return 2
        return bench_model(argv[2], os.path.abspath(argv[3]))
    out = os.path.abspath(argv[1] if len(argv) > 1 else DEFAULT_OUT)
    build(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
