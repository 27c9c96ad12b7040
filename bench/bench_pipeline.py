"""Input pipeline throughput vs TransUNet training step rate, in one run.

    .venv/bin/python bench/bench_pipeline.py [--data DIR] [--size 512] [--batch 2]
                                             [--epochs 2] [--steps 5] [--no-model]

Pipeline: make_dataset(training=True, full default augmentation + noise_std=0.02) on the real
Duke DME folder ($OCT_SEG_DATA/duke_dme, default ../shared/data/duke_dme) or, when absent,
on 88 synthetic phantoms; one warm-up epoch, then images/s over --epochs epochs (decode and
size fitting happen once, before the timing, and are reported separately).
Model: build_transunet() (paper Table 2 network) at --size, Adam + get_loss("combined"),
train_on_batch on pipeline batches; one warm-up step (graph tracing), then --steps timed steps.
Prints a table and the pipeline/model ratio (goal: >= 10x so the input never starves training).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from oct_seg.data import make_dataset, read_dataset, write_phantom_dataset  # noqa: E402


def _data(path: pathlib.Path, tmp: pathlib.Path):
    if (path / "index.csv").is_file():
        return read_dataset(path), f"Duke DME ({path})"
    out = write_phantom_dataset(tmp / "phantoms", n_subjects=8, per_subject=11, seed=0)
    return read_dataset(out), "synthetic phantoms (real data not found)"


def bench_pipeline(scans, size, batch, epochs):
    t0 = time.perf_counter()
    ds = make_dataset(scans.images, scans.masks, image_size=(size, size), batch_size=batch,
                      training=True, augment=True, noise_std=0.02, seed=0)
    build = time.perf_counter() - t0
    for _ in ds:          # warm-up epoch (tracing, thread pools)
        pass
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for x, _y in ds:
            n += int(x.shape[0])
    return ds, build, (n / (time.perf_counter() - t0), n / (time.process_time() - c0))


def bench_model(ds, steps, batch):
    import keras

    from oct_seg.losses import get_loss
    from oct_seg.models.transunet import build_transunet

    model = build_transunet()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("combined"))
    batches = [(x.numpy(), y.numpy()) for x, y in ds.take(steps + 1)]
    while len(batches) < steps + 1:
        batches += batches
    model.train_on_batch(*batches[0])      # warm-up: traces the train step
    t0, c0 = time.perf_counter(), time.process_time()
    for x, y in batches[1:steps + 1]:
        model.train_on_batch(x, y)
    n = steps * batch
    return model.count_params(), (n / (time.perf_counter() - t0), n / (time.process_time() - c0))


def _rate(rate):
    return f"{rate[0]:8.2f} images/s wall, {rate[1]:8.2f} images/CPU-s"


def main(argv=None):
    default = pathlib.Path(os.environ.get("OCT_SEG_DATA", REPO.parent / "shared" / "data")) / "duke_dme"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=pathlib.Path, default=default)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-model", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scans, source = _data(args.data, pathlib.Path(tmp))
        read_s = time.perf_counter() - t0
        ds, build_s, pipe_rate = bench_pipeline(scans, args.size, args.batch, args.epochs)
    rows = [("decode + read (once)", f"{len(scans)} scans in {read_s:.1f} s"),
            ("fit to size + cache (once)", f"{build_s:.1f} s"),
            (f"pipeline, full augmentation, {args.size}x{args.size}", _rate(pipe_rate))]
    model_rate = None
    if not args.no_model:
        try:
            n_params, model_rate = bench_model(ds, args.steps, args.batch)
            rows.append((f"TransUNet train step ({n_params:,} params, batch {args.batch})",
                         _rate(model_rate)))
        except ImportError as err:
            rows.append(("TransUNet train step", f"skipped: {err}"))
    import tensorflow as tf

    print(f"# bench_pipeline: {source}; {os.cpu_count()} CPUs; {platform.processor() or platform.machine()}; "
          f"TF {tf.__version__}; load average {os.getloadavg()[0]:.1f}")
    print("# images/s per wall-clock second, and per CPU-second of this process (fair under contention)")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if model_rate:
        wall, cpu = pipe_rate[0] / model_rate[0], pipe_rate[1] / model_rate[1]
        verdict = "OK" if min(wall, cpu) >= 10 else "BELOW"
        print(f"{'ratio pipeline / model':<{width}}  {wall:8.1f}x wall, {cpu:.1f}x CPU  ({verdict} vs the 10x goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
