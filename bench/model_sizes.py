"""Parameter count and CPU forward time of each network at its default configuration.

    python bench/model_sizes.py [--size 512] [--repeats 3] [--models unet att_unet ...]

Builds `oct_seg.models.<module>.build_<name>()` with its defaults (input 512 x 512 x 1), runs a
batch of 1 once to warm up, then prints the median of `repeats` timed forward passes: wall
seconds, and CPU seconds of the process (all threads; less sensitive to other jobs on a
shared machine).
Extend NETWORKS as networks are added (module, builder name).
"""
import argparse
import importlib
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

NETWORKS = {
    "unet": ("oct_seg.models.unet", "build_unet"),
    "att_unet": ("oct_seg.models.att_unet", "build_att_unet"),
    "r2_unet": ("oct_seg.models.r2_unet", "build_r2_unet"),
    "unet3plus": ("oct_seg.models.unet3plus", "build_unet3plus"),
}


def measure(name, size=512, repeats=3):
    """(parameters, median wall s, median CPU s) of a forward pass of NETWORKS[name]."""
    module, builder = NETWORKS[name]
    model = getattr(importlib.import_module(module), builder)()
    h, w, c = model.input_shape[1:]
    x = np.random.default_rng(0).random((1, h or size, w or size, c), dtype=np.float32)
    model(x, training=False)  # warm-up (graph building, oneDNN kernels)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        model(x, training=False)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return model.count_params(), statistics.median(wall), statistics.median(cpu)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--size", type=int, default=512, help="H = W for any-size inputs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"forward pass, batch 1, {args.size} x {args.size} x 1, median of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'network':<12}{'parameters':>14}{'wall s':>10}{'CPU s':>10}")
    for name in args.models:
        params, wall, cpu = measure(name, args.size, args.repeats)
        print(f"{name:<12}{params:>14,}{wall:>10.2f}{cpu:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
