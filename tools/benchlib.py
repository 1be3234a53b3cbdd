"""The timing harness shared by the reference UNet benchmarks (tools/bench_diffusers.py,
tools/bench_adm.py): one warm-up call, then `repeats` timed forward passes at varied timesteps,
and the report BENCHMARKS.md quotes (median, min and max per batch, per map, maps per second,
peak resident and device memory). Needs torch.
"""

import resource
import statistics
import time

import torch


def time_forward(forward, device, repeats):
    """Seconds of each of `repeats` calls `forward(t)` (t = 0, 97, 194, ... mod 1000), after one
    warm-up call at t = 500, synchronizing a CUDA device around each."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with torch.no_grad():
        forward(500)
        sync()
        for i in range(repeats):
            t = time.perf_counter()
            forward((i * 97) % 1000)
            sync()
            times.append(time.perf_counter() - t)
    return times


def print_report(header, times, batch, device):
    """Prints `header`, then the median, min and max milliseconds per batch and per map and the
    peak memory."""
    med = statistics.median(times)
    print(header)
    print(f"UNet forward: median {1e3 * med:.1f} ms per batch ({1e3 * med / batch:.2f} ms per map, "
          f"{batch / med:.1f} maps/s) over {len(times)} runs; min {1e3 * min(times):.1f} ms, max {1e3 * max(times):.1f} ms")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if device.startswith("cuda"):
        print(f"peak device memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
