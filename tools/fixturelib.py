"""Helpers shared by the model fixture generators (tools/make_unet_fixtures.py,
make_adm_fixtures.py, make_ddpm_original_fixtures.py): deterministic JSON and .npy
writing, SHA-256 of a file and of a folder tree, the largest absolute difference,
the `--check` reproducibility test (build the tree twice into temporary
folders and compare the SHA-256 of every file), and the seeded overwrite of a
torch model's parameters the UNet fixtures use.

The scripts import it with their own folder on sys.path, so they run from
anywhere. Needs numpy (and torch for `randomize_parameters`, imported there).
"""

import hashlib
import json
import os
import tempfile

import numpy as np


def write_json(path, obj, sort_keys=True):
    """Indented JSON, keys sorted unless told otherwise, with a final newline."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=sort_keys)
        f.write("\n")


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr))


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sha_tree(root):
    """{path relative to root: SHA-256} for every file under root."""
    res = {}
    for dp, _, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            res[os.path.relpath(p, root)] = sha256_file(p)
    return res


def maxabs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_reproducible(build):
    """`--check`: build(out) twice into fresh temporary folders, print the SHA-256 (first 16 hex
    digits) of every file, and return 0 when both trees are identical, 1 otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        build(a)
        build(b)
        ha, hb = sha_tree(a), sha_tree(b)
        bad = sorted(k for k in set(ha) | set(hb) if ha.get(k) != hb.get(k))
        for k in sorted(ha):
            print(f"{ha[k][:16]}  {k}")
        if bad:
            print("NOT reproducible:", bad)
            return 1
        print(f"reproducible: {len(ha)} files identical")
        return 0


def randomize_parameters(model, seed, gain=1.0):
    """Overwrite every parameter of a torch model from one seeded stream, in `named_parameters`
    order: biases 0.1·N(0, 1); weights of two or more dimensions N(0, 1)·gain/√fan_in (fan_in: the
    product of every dimension but the first); other 1-D parameters (norm scales) 1 + 0.1·N(0, 1).
    gain=None divides by √fan_in instead of multiplying by 1/√fan_in (the original-DDPM fixtures'
    rounding). The model must have no buffers."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith(".bias"):
                new = 0.1 * noise
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                new = noise / math.sqrt(fan_in) if gain is None else noise * (gain / math.sqrt(fan_in))
            elif p.ndim == 1:
                new = 1.0 + 0.1 * noise
            else:
                raise ValueError(f"unexpected parameter {name} {tuple(p.shape)}")
            p.copy_(new.to(p.dtype))
    buffers = [n for n, _ in model.named_buffers()]
    assert not buffers, f"unexpected buffers {buffers}"
