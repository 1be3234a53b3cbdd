"""The Python module against the command line on the shipped model and maps: the same numbers byte
for byte, the documented exceptions, the GIL released, Ctrl-C honoured.

EXPANSE_BIN names the command-line binary to compare with (default: target/debug/expanse, which
the README's test command builds)."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import expanse

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "data/models/expanse-natural-32"
CLOUDS = ROOT / "data/samples/clouds_64.fits"
BIN = os.environ.get("EXPANSE_BIN", str(ROOT / "target/debug/expanse"))
ENV = dict(os.environ, SOURCE_DATE_EPOCH="1796601600")


def cli(*args):
    done = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(autouse=True, scope="module")
def ctrl_c_is_keyboard_interrupt():
    """Ctrl-C as in an interactive session, whatever this process inherited: a shell's background
    job (`cmd &`, nohup) starts with SIGINT ignored, and Python then leaves it ignored, so that
    no KeyboardInterrupt could come."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def model():
    return expanse.Model(MODEL, batch=4)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Eight clouds in model space, written by `expanse ingest`."""
    path = tmp_path_factory.mktemp("stack") / "stack.npy"
    cli("ingest", CLOUDS, "--transform", "log10", "--size", 32, "--max-maps", 8, "--channels", 3, "--out", path)
    return path


def test_read_maps_gives_the_file_s_maps_and_units():
    maps, info = expanse.read_maps(CLOUDS)
    assert maps.dtype == np.float32 and maps.shape == (32, 64, 64)
    assert info["units"] == "cm-2" and len(info["maps"]) == 32 and info["maps"][3]["plane"] == 3
    with pytest.raises(FileNotFoundError, match="missing.fits"):
        expanse.read_maps(ROOT / "missing.fits")


def test_invert_and_generate_are_the_cli_s_byte_for_byte(model, stack, tmp_path):
    z_cli, x_cli = tmp_path / "z.npy", tmp_path / "x.npy"
    grid = ["--steps", 6, "--t0", 300, "--batch", 4]
    cli("invert", "--model", MODEL, "--input", stack, *grid, "--out", z_cli)
    cli("generate", "--model", MODEL, "--latents", z_cli, *grid, "--out", x_cli)
    calls = []
    z = model.invert(np.load(stack), steps=6, t0=300, progress=lambda done, total: calls.append((done, total)))
    assert z.dtype == np.float32 and z.shape == (8, 3, 32, 32)
    assert z.tobytes() == np.load(z_cli).tobytes()
    assert calls == [(4, 8), (8, 8)]
    x = model.generate(z, steps=6, t0=300)
    assert x.tobytes() == np.load(x_cli).tobytes()
    back, psnr = model.reconstruct(np.load(stack), steps=6, t0=300)
    assert back.tobytes() == x.tobytes() and len(psnr) == 8 and min(psnr) > 20


def _cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_bf16_is_the_cli_s_on_avx512_bf16_cpus_and_a_value_error_elsewhere(stack, tmp_path):
    if not {"avx512f", "avx512bw", "avx512_bf16"} <= _cpu_flags():
        with pytest.raises(ValueError, match="avx512_bf16"):
            expanse.Model(MODEL, dtype="bf16")
        return
    model = expanse.Model(MODEL, dtype="bf16", batch=4)
    z_cli = tmp_path / "z.npy"
    cli("invert", "--model", MODEL, "--input", stack, "--dtype", "bf16", "--batch", 4, "--out", z_cli)
    z = model.invert(np.load(stack))
    assert z.tobytes() == np.load(z_cli).tobytes()
    z32 = expanse.Model(MODEL, batch=4).invert(np.load(stack))
    rel = np.sqrt(np.mean((z - z32) ** 2) / np.mean(z32**2))
    assert 0 < rel < 1e-2


def test_bad_input_raises_the_documented_exception(model, stack):
    maps = np.load(stack)
    with pytest.raises(TypeError, match="float32, got float64"):
        model.invert(maps.astype(np.float64))
    with pytest.raises(ValueError, match="got 2 dimension"):
        model.invert(maps[0, 0])
    with pytest.raises(ValueError, match="NaN"):
        model.invert(np.full((1, 3, 32, 32), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="maps"):
        model.invert(maps[:, :1])
    with pytest.raises(ValueError, match="steps"):
        model.invert(maps, steps=20, t0=10)
    with pytest.raises(ValueError, match="batch"):
        expanse.Model(MODEL, batch=0)
    with pytest.raises(ValueError, match="unknown"):
        expanse.Model(MODEL, device="tpu")
    with pytest.raises(FileNotFoundError):
        expanse.Model(ROOT / "no-such-model")


def test_a_model_folder_that_does_not_make_a_model_is_a_value_error(tmp_path):
    src = ROOT / "tests/fixtures/unet/attn_multihead"
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"norm_num_groups": 8', '"norm_num_groups": "eight"'))
    with pytest.raises(ValueError, match="config.json"):
        expanse.Model(tmp_path)


def test_a_bad_run_config_leaves_nothing_behind(tmp_path):
    config = tmp_path / "bad.toml"
    text = (ROOT / "configs/quickstart.toml").read_text().replace('"../data/', f'"{ROOT}/data/')
    config.write_text(text.replace('kind = "empirical"', 'kind = "full"'))
    with pytest.raises(ValueError, match="prior.kind: unknown prior kind 'full'"):
        expanse.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_gil_is_released_and_ctrl_c_stops_between_batches(model, stack):
    maps = np.repeat(np.load(stack), 4, axis=0)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.01)

    t = threading.Thread(target=count)
    t.start()
    start = time.perf_counter()
    model.invert(maps[:8], steps=6, t0=300)
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    assert len(during) >= 0.5 * (end - start) / 0.01, "the other thread ran while inverting"

    # Ctrl-C (a real SIGINT, from another thread) while the second batch runs: the inversion
    # stops after that batch. A signal seen only after the last batch would land in the sleep and
    # fail the count below.
    seen = []

    def progress(done, total):
        seen.append(done)
        if len(seen) == 1:
            threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()

    with pytest.raises(KeyboardInterrupt):
        model.invert(maps, steps=6, t0=300, progress=progress)
        time.sleep(5)
    assert len(seen) < len(maps) // 4, f"stopped after {len(seen)} of {len(maps) // 4} batches"


def test_run_writes_the_cli_s_maps_and_returns_its_summary(tmp_path):
    config = tmp_path / "quick.toml"
    text = (ROOT / "configs/quickstart.toml").read_text()
    text = text.replace('"../data/', f'"{ROOT}/data/').replace("iterations = 25", "iterations = 5")
    text = text.replace("count = 16", "count = 4")
    config.write_text(text)
    cli("run", config, "--out", tmp_path / "cli")
    os.environ["SOURCE_DATE_EPOCH"] = ENV["SOURCE_DATE_EPOCH"]
    summary = expanse.run(config, tmp_path / "py")
    assert summary["dir"] == str(tmp_path / "py") and summary["domains"][0]["name"] == "clouds"
    assert summary["domains"][0]["sampling"]["accepted"] == 4
    for f in ["samples/clouds.fits", "samples/clouds.h5"]:
        a, b = expanse.read_maps(tmp_path / "cli" / f)[0], expanse.read_maps(tmp_path / "py" / f)[0]
        assert a.size > 0 and a.tobytes() == b.tobytes(), f
    a, b = (np.load(tmp_path / d / "samples/clouds.latents.npy") for d in ["cli", "py"])
    assert a.tobytes() == b.tobytes()
    with pytest.raises(OSError, match="not empty"):
        expanse.run(config, tmp_path / "py")
    # Ctrl-C after a run is still Python's KeyboardInterrupt (the run's lock handler is gone).
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


def test_validate_takes_arrays_and_returns_the_report(tmp_path):
    maps, _ = expanse.read_maps(CLOUDS)
    report = expanse.validate(maps[:16], maps[16:], tmp_path / "report", statistics=["power_spectrum", "pdf"])
    assert (tmp_path / "report/report.json").exists()
    assert abs(report["slopes"]["welch_t"]) < 3
    with pytest.raises(TypeError):
        expanse.validate(maps[:16].astype(float), maps[16:], tmp_path / "r2")


def test_normalizer_fits_the_config_s_transforms_and_round_trips():
    maps, info = expanse.read_maps(CLOUDS)
    n = expanse.Normalizer.fit(maps, transform="log10", units=info["units"])
    y = n.forward(maps)
    assert y.dtype == np.float32 and y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    assert np.allclose(n.inverse(y), maps, rtol=1e-5) and n.units == "cm-2" and "log10" in n.transform
    with pytest.raises(ValueError, match="transform: unknown transform 'sqrt'"):
        expanse.Normalizer.fit(maps, transform="sqrt")
    with pytest.raises(ValueError, match="softening"):
        expanse.Normalizer.fit(maps, transform="log10", softening=2.0)


def test_prepare_fit_and_sample_are_the_run_s_stages(model, stack):
    x, mask, normalizer = expanse.prepare(CLOUDS, max_maps=8, transform="log10", size=32, channels=3)
    assert x.tobytes() == np.load(stack).tobytes(), "expanse ingest's stack"
    assert mask.shape == (8, 32, 32) and mask.dtype == np.uint8 and not mask.any()
    z = model.invert(x, steps=6, t0=300)
    prior = expanse.fit_prior(z, kind="diagonal", name="clouds")
    assert prior.kind == "diagonal" and prior.shape == (3, 32, 32)
    a, record = prior.sample(count=3, seed=5, k=4)
    b, _ = prior.sample(count=3, seed=5, k=4)
    assert a.shape == (3, 3, 32, 32) and a.tobytes() == b.tobytes() and record["accepted"] == 3
    assert record["tried"] >= 3 and record["seed"] == 5
    maps = normalizer.inverse(model.generate(a, steps=6, t0=300))
    assert maps.shape == (3, 32, 32) and np.all(maps > 0), "physical column densities"
    refined, rec = expanse.refine(model.generate(a, steps=6, t0=300), x, iterations=5)
    assert refined.shape == a.shape and np.mean(rec["loss_after"]) < np.mean(rec["loss_before"])
    with pytest.raises(ValueError, match="kind"):
        expanse.fit_prior(z, kind="full")
    with pytest.raises(ValueError, match="band"):
        prior.sample(count=3, band=(60, 50))
    with pytest.raises(ValueError, match="transform"):
        expanse.prepare(CLOUDS, transform="ln")
    with pytest.raises(FileNotFoundError):
        expanse.prepare(ROOT / "missing" / "*.fits")


def test_the_readme_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text().split("## Python", 1)[1]
    code = readme.split("```python\n", 1)[1].split("```", 1)[0].replace('"out/report"', repr(str(tmp_path)))
    monkeypatch.chdir(ROOT)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["synthetic"].shape == (16, 32, 32) and (tmp_path / "report.json").exists()


def test_statistic_curves_are_the_cli_s_per_map_values(tmp_path):
    maps, _ = expanse.read_maps(CLOUDS)
    values, axes = expanse.statistic_curves(maps[:4], "minkowski", thresholds="-2:2:9")
    assert values.shape == (4, 27) and [c["name"] for c in axes] == ["v0", "v1", "v2"]
    csv = tmp_path / "mf.csv"
    cli("minkowski", CLOUDS, "--thresholds", "-2:2:9", "--out", csv)
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    all_values, _ = expanse.statistic_curves(maps, "minkowski", thresholds="-2:2:9")
    assert np.allclose(rows[:, 1], all_values[:, :9].mean(axis=0), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="statistic: unknown statistic 'genus'"):
        expanse.statistic_curves(maps, "genus")
    with pytest.raises(ValueError, match="thresholds"):
        expanse.statistic_curves(maps, "minkowski", thresholds="3:1:4")


def test_a_guide_sees_every_step_s_clean_image_and_can_replace_it(model, stack):
    z = model.invert(np.load(stack)[:4], steps=6, t0=300)
    plain = model.generate(z, steps=6, t0=300)
    seen = []

    def watch(t, x0):
        seen.append((t, x0.shape))
        return None

    assert model.generate(z, steps=6, t0=300, guide=watch).tobytes() == plain.tobytes()
    assert seen == [(t, (4, 3, 32, 32)) for t in [300, 240, 180, 120, 60]], "every step but the last, one batch"
    flat = model.generate(z, steps=6, t0=300, guide=lambda t, x0: np.zeros_like(x0) if t == 60 else None)
    assert np.abs(flat).mean() < 0.5 * np.abs(plain).mean(), "the last step builds on the guide's image"

    def fail(t, x0):
        raise ZeroDivisionError("no")

    with pytest.raises(ZeroDivisionError):
        model.generate(z, steps=6, t0=300, guide=fail)
    with pytest.raises(ValueError, match="guide's return"):
        model.generate(z, steps=6, t0=300, guide=lambda t, x0: x0[:1])
