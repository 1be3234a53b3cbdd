#!/usr/bin/env python3
"""Train expanse's small natural-image base DDPM (a diffusers `UNet2DModel`).

Standard DDPM (Ho et al. 2020): epsilon prediction, MSE loss, uniform integer
timesteps t in [0, 1000), DDPMScheduler(num_train_timesteps=1000,
beta_schedule="linear", beta_start=1e-4, beta_end=0.02), trained on 32x32 RGB
random crops of the CC0 / public-domain photographs in data/natural/ (see
data/natural/README.md for their sources and licences).

Run from the repository root (one CPU thread; the script forces it):
    python3 tools/train_base.py --steps 20 --out out/bench-train     # benchmark
    mkdir -p out && nohup python3 tools/train_base.py --steps N --minutes 75 \\
        --out data/models/expanse-natural-32 > out/train_base.log 2>&1 &

(python3 in a venv made from tools/requirements.txt: torch (CPU), diffusers, safetensors, numpy,
pillow.)

Data, per sample (numpy Generator seeded with --seed):
  * pick one of the images uniformly (grayscale ones are loaded as 3 equal
    channels);
  * crop side s uniform integer in [32, min(H, W, 160)] (scale jitter);
  * crop position uniform; horizontal flip with probability 1/2;
  * downsample s x s -> 32 x 32 with area averaging
    (torch.nn.functional.interpolate(mode="area"));
  * pixel values mapped from [0, 255] to [-1, 1].

Model: UNet2DModel(sample_size=32, in/out_channels=3,
block_out_channels=(32, 64, 64), layers_per_block=1,
down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
attention_head_dim=None (one head spanning all channels), norm_num_groups=8,
add_attention=True (mid-block attention), flip_sin_to_cos=True, freq_shift=0,
downsample_padding=1), float32, diffusers' default initialisation.

Optimisation: AdamW(lr=2e-4, betas=(0.9, 0.999), weight_decay=0), linear
warm-up of the learning rate over the first 200 steps then constant, batch 32,
gradient-norm clipping at 1.0. EMA of the weights with decay
min(0.999, (1 + step) / (10 + step)) (the warm-up formula of diffusers'
EMAModel, so a short run is not dominated by the initial weights); the EMA
weights are what gets saved.

Output folder (--out), rewritten every --checkpoint-every steps and at the end:
  config.json, diffusion_pytorch_model.safetensors   EMA UNet (save_pretrained,
                                                     safe_serialization=True)
  scheduler_config.json                              DDPMScheduler.save_pretrained
  training_log.csv     step, loss (mean of the last 50 per-step losses), seconds
                       (one row every 50 steps and at every checkpoint)
  training.json        all settings, steps done, final smoothed loss, wall time,
                       parameter count, torch / diffusers versions, the data
                       files with their sha256.
Every checkpoint is first written into a sibling temp folder and then swapped
in with renames, so the folder is never half-written (there is only a window of
two rename() calls in which it does not exist).

Reproducing the shipped model: `python tools/train_base.py` (the defaults are the shipped run's:
2400 steps, seed 0, batch 32, one thread; the shipped run also had `--minutes 75` as a safety
net, and stopped on its step count after 3986 s). The run is deterministic for a given torch build
on one thread; training.json records the SHA-256 of the weights it wrote, and the shipped one is
dd9226e4902a7f85625e384ff97024dc61284a9d95b6675ae98c84fd20aaf615 (torch 2.15.0, diffusers 0.42.1).

Stopping: after --steps steps, or when --minutes of wall clock have passed
(checked after every step), or on SIGINT / SIGTERM: the current step finishes,
a final checkpoint is written and the script exits with status 0.

Resuming (optional): with --state FILE the full training state (model, EMA,
optimizer, step, RNG states, log) is saved to FILE (atomically) at every
checkpoint and, if FILE exists at start, training continues from it. The state
file is NOT part of the shipped model; keep it outside data/.

Determinism: seed 0 by default for python `random`, numpy and torch (model
init, timesteps, noise); one CPU thread.
"""

import os

# One thread, set before torch / numpy are imported.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import csv
import hashlib
import json
import math
import platform
import random
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import diffusers
from diffusers import DDPMScheduler, UNet2DModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO, "data", "natural")
DATA_FILES = [
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
    "camera.png", "brick.png", "grass.png", "gravel.png", "coins.png",
]

RES = 32
MAX_CROP = 160
WARMUP_STEPS = 200
EMA_DECAY = 0.999
LOSS_WINDOW = 50
LOG_EVERY = 50

MODEL_CONFIG = dict(
    sample_size=RES,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    norm_num_groups=8,
    add_attention=True,
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_images(data_dir):
    """Every image as a float32 tensor (3, H, W) in [-1, 1]."""
    images, info = [], []
    for name in DATA_FILES:
        path = os.path.join(data_dir, name)
        im = Image.open(path)
        mode = im.mode
        # RGB stays RGB; a grayscale ("L") image becomes 3 equal channels.
        arr = np.asarray(im.convert("RGB"))
        t = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).contiguous() / 127.5 - 1.0
        images.append(t)
        info.append(dict(file=os.path.relpath(path, REPO), sha256=sha256(path), mode=mode,
                         width=int(arr.shape[1]), height=int(arr.shape[0])))
    return images, info


class CropSampler:
    def __init__(self, images, rng):
        self.images = images
        self.rng = rng

    def sample(self, batch):
        out = torch.empty(batch, 3, RES, RES)
        for i in range(batch):
            img = self.images[int(self.rng.integers(len(self.images)))]
            _, h, w = img.shape
            s = int(self.rng.integers(RES, min(h, w, MAX_CROP) + 1))
            y = int(self.rng.integers(0, h - s + 1))
            x = int(self.rng.integers(0, w - s + 1))
            crop = img[:, y:y + s, x:x + s]
            if self.rng.random() < 0.5:
                crop = crop.flip(-1)
            if s != RES:
                crop = F.interpolate(crop[None], size=(RES, RES), mode="area")[0]
            out[i] = crop
        return out


def atomic_write_dir(final_dir, fill):
    """Call fill(tmp_dir), then swap tmp_dir in place of final_dir."""
    final_dir = os.path.abspath(final_dir)
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(final_dir)
    tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}")
    old = os.path.join(parent, f".{base}.old-{os.getpid()}")
    for p in (tmp, old):
        if os.path.exists(p):
            shutil.rmtree(p)
    os.makedirs(tmp)
    fill(tmp)
    for name in os.listdir(tmp):  # ordinary permissions; flush file contents before the swap
        os.chmod(os.path.join(tmp, name), 0o644)
        fd = os.open(os.path.join(tmp, name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if os.path.exists(final_dir):
        os.rename(final_dir, old)
    os.rename(tmp, final_dir)
    if os.path.exists(old):
        shutil.rmtree(old)


def atomic_torch_save(obj, path):
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def lr_at(step, base_lr):
    """Learning rate for the (0-based) optimizer step `step`."""
    return base_lr * min(1.0, (step + 1) / WARMUP_STEPS)


def ema_decay_at(step):
    """EMA decay after `step` optimizer steps have been taken (step >= 1)."""
    return min(EMA_DECAY, (1.0 + step) / (10.0 + step))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2400, help="optimizer steps (default 2400, the shipped run)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="wall-clock budget in minutes; stop cleanly (with a checkpoint) when exceeded")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--out", default=os.path.join(REPO, "data", "models", "expanse-natural-32"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--data", default=DATA_DIR, help="folder with the training photographs")
    ap.add_argument("--state", default=None,
                    help="optional full-state file for resuming (kept outside the model folder)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    data_rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    images, data_info = load_images(args.data)
    sampler = CropSampler(images, data_rng)

    model = UNet2DModel(**MODEL_CONFIG)
    model.train()
    ema = UNet2DModel(**MODEL_CONFIG)
    ema.load_state_dict(model.state_dict())
    ema.eval().requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    n_params = sum(p.numel() for p in model.parameters())

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.0)

    step = 0
    losses = []          # per-step losses (only the last LOSS_WINDOW are needed)
    log_rows = []        # (step, smoothed loss, seconds)
    elapsed_before = 0.0
    resumed_from = None
    if args.state and os.path.exists(args.state):
        st = torch.load(args.state, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        losses = st["losses"]
        log_rows = [tuple(r) for r in st["log_rows"]]
        elapsed_before = st["elapsed"]
        random.setstate(st["py_random"])
        np.random.set_state(st["np_global"])
        data_rng.bit_generator.state = st["np_data"]
        torch.set_rng_state(st["torch_global"])
        gen.set_state(st["torch_gen"])
        resumed_from = step
        print(f"resumed from {args.state} at step {step}", flush=True)

    alphas_cumprod = scheduler.alphas_cumprod.float()
    sqrt_ac = alphas_cumprod.sqrt()
    sqrt_1mac = (1.0 - alphas_cumprod).sqrt()

    stop = {"reason": None}

    def on_signal(signum, frame):
        stop["reason"] = f"signal {signal.Signals(signum).name}"
        print(f"received {signal.Signals(signum).name}; stopping after this step", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.time()

    def elapsed():
        return elapsed_before + (time.time() - t0)

    def smoothed():
        w = losses[-LOSS_WINDOW:]
        return float(sum(w) / len(w)) if w else float("nan")

    def settings_json(final):
        return dict(
            description="expanse natural-image base DDPM: diffusers UNet2DModel trained as a standard "
                        "DDPM (epsilon prediction, MSE) on 32x32 random crops of CC0 / public-domain "
                        "photographs (data/natural/, from scikit-image 0.26's data bundle)",
            script="tools/train_base.py",
            command=" ".join([os.path.basename(sys.executable)] + sys.argv),
            model_config=MODEL_CONFIG,
            scheduler_config=SCHEDULER_CONFIG,
            parameters=n_params,
            objective="epsilon prediction, MSE (mean over all elements), t ~ uniform{0..999}",
            data=dict(
                files=data_info,
                resolution=RES,
                crop_side="uniform integer in [32, min(H, W, 160)], then area downsampling to 32x32",
                position="uniform", hflip_probability=0.5,
                grayscale="converted to 3 equal channels",
                pixel_range=[-1.0, 1.0],
            ),
            optimizer=dict(name="AdamW", lr=args.lr, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
                           warmup_steps=WARMUP_STEPS, schedule="linear warm-up, then constant",
                           grad_clip_norm=1.0),
            ema=dict(decay=EMA_DECAY, formula="min(decay, (1 + step) / (10 + step))",
                     saved_weights="EMA"),
            batch=args.batch,
            steps_requested=args.steps,
            minutes_budget=args.minutes,
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
            threads=torch.get_num_threads(),
            steps_done=step,
            samples_seen=step * args.batch,
            final=final,
            stop_reason=stop["reason"] if final else None,
            smoothed_loss=smoothed(),
            loss_window=LOSS_WINDOW,
            wall_seconds=round(elapsed(), 1),
            seconds_per_step=round(elapsed() / max(step, 1), 4),
            resumed_from_step=resumed_from,
            versions=dict(python=platform.python_version(), torch=torch.__version__,
                          diffusers=diffusers.__version__, numpy=np.__version__),
            platform=platform.platform(),
            written_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    def checkpoint(final=False):
        if not log_rows or log_rows[-1][0] != step:
            log_rows.append((step, smoothed(), round(elapsed(), 1)))

        def fill(d):
            ema.save_pretrained(d, safe_serialization=True)
            scheduler.save_pretrained(d)
            with open(os.path.join(d, "training_log.csv"), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "loss", "seconds"])
                for s, l, sec in log_rows:
                    w.writerow([s, f"{l:.6f}", f"{sec:.1f}"])
            record = settings_json(final)
            # The hash of the weights just written: tests/unet_parity.rs checks the shipped file.
            record["weights_sha256"] = sha256(os.path.join(d, "diffusion_pytorch_model.safetensors"))
            with open(os.path.join(d, "training.json"), "w") as f:
                json.dump(record, f, indent=2)
                f.write("\n")

        atomic_write_dir(args.out, fill)
        if args.state:
            atomic_torch_save(dict(
                model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step,
                losses=losses[-LOSS_WINDOW:], log_rows=log_rows, elapsed=elapsed(),
                py_random=random.getstate(), np_global=np.random.get_state(),
                np_data=data_rng.bit_generator.state, torch_global=torch.get_rng_state(),
                torch_gen=gen.get_state(), args=vars(args),
            ), args.state)
        print(f"checkpoint step {step} -> {args.out} (smoothed loss {smoothed():.5f}, "
              f"{elapsed():.0f}s)", flush=True)

    print(f"UNet2DModel: {n_params} parameters; threads={torch.get_num_threads()}; "
          f"batch={args.batch}; steps={args.steps}; minutes={args.minutes}; out={args.out}", flush=True)

    ema_params = list(ema.parameters())
    model_params = list(model.parameters())
    while step < args.steps:
        if args.minutes is not None and elapsed() > args.minutes * 60.0:
            stop["reason"] = f"wall-clock budget of {args.minutes} min exceeded"
        if stop["reason"]:
            break
        x0 = sampler.sample(args.batch)
        t = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = sqrt_ac[t].view(-1, 1, 1, 1) * x0 + sqrt_1mac[t].view(-1, 1, 1, 1) * noise
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr)
        pred = model(xt, t).sample
        loss = F.mse_loss(pred, noise)
        lv = float(loss.item())
        if not math.isfinite(lv):  # stop before the bad step touches the weights / EMA
            stop["reason"] = f"non-finite loss at step {step + 1}"
            print(stop["reason"], flush=True)
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model_params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1.0 - ema_decay_at(step))
        losses.append(lv)
        if len(losses) > 4 * LOSS_WINDOW:
            del losses[:-LOSS_WINDOW]
        if step % LOG_EVERY == 0 or step <= 5:
            if step % LOG_EVERY == 0:
                log_rows.append((step, smoothed(), round(elapsed(), 1)))
            print(f"step {step} loss {lv:.5f} smoothed {smoothed():.5f} lr {lr_at(step - 1, args.lr):.2e} "
                  f"{elapsed():.1f}s ({elapsed() / step:.3f} s/step)", flush=True)
        if args.checkpoint_every > 0 and step % args.checkpoint_every == 0:
            checkpoint(final=False)
    if stop["reason"] is None:
        stop["reason"] = f"reached --steps {args.steps}"
    checkpoint(final=True)
    print(f"done: {stop['reason']}; {step} steps in {elapsed():.1f}s", flush=True)


if __name__ == "__main__":
    main()
