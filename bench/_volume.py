"""Time the clinic job: one OCT volume file -> fluid masks, overlays and fluid CSVs.

The volume: `--slices` (61) real 496 x 768 Duke DME B-scans (cycled when fewer), written as
one uint8 multi-page TIFF in a temporary folder. Network: oct_seg's default, the paper's
TransUNet (`build_transunet()`, 512 x 512 input, untrained weights: timing only).

Paths (--paths):
  stock       oct_seg.predict.predict_files(model, [volume.tif], out) as `oct-seg predict`
              runs it (batch 4, float32); stages timed by wrapping its steps (read_input,
              predict_image = preprocess + model + postprocess, PNG writing).
  stock-bf16  the same with precision="mixed_bfloat16" (`oct-seg predict --precision
              mixed_bfloat16`).
  fast        the same outputs with the network run as one compiled (tf.function) predict
              over batches of --batch and every stage timed separately (read / preprocess /
              model / postprocess / write): where the time goes, and what compiling adds.
Writes a JSON with per-stage seconds (--out-json).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DUKE = Path(os.environ.get("OCT_SEG_DATA", Path(__file__).resolve().parents[2] / "shared" /
                           "data")) / "duke_dme" / "images"


def make_volume(folder: Path, n: int) -> Path:
    """Write the n-slice uint8 multi-page TIFF (one page per B-scan); return its path."""
    import numpy as np
    import tifffile
    from PIL import Image

    files = sorted(DUKE.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no Duke B-scans in {DUKE} (set OCT_SEG_DATA)")
    slices = []
    for k in range(n):
        img = np.asarray(Image.open(files[k % len(files)]).convert("L"))
        if img.shape != (496, 768):
            img = np.asarray(Image.fromarray(img).resize((768, 496)))
        slices.append(img)
    tif = folder / "volume.tif"
    tifffile.imwrite(tif, np.stack(slices), photometric="minisblack")
    return tif


class Timer:
    """Accumulate wall and process-CPU seconds per stage: with timer("read"): ...

    CPU seconds (all threads of this process) do not grow when other jobs share the cores;
    on an idle 2-core machine a stage's wall time is about CPU / 2 for the multi-threaded
    model and CPU / 1 for the single-threaded read / write stages.
    """

    def __init__(self):
        self.times = {}
        self.cpu = {}

    def __call__(self, stage):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0, self.c0 = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                timer.times[stage] = timer.times.get(stage, 0.0) + time.perf_counter() - self.t0
                timer.cpu[stage] = timer.cpu.get(stage, 0.0) + time.process_time() - self.c0

        return _Ctx()

    def wrap(self, stage, fn):
        def wrapped(*a, **k):
            with self(stage):
                return fn(*a, **k)
        return wrapped


def run_stock(model, tif, out_dir, precision=None):
    """predict_files on the TIFF volume; stage times by wrapping its steps."""
    import oct_seg.inference as inference
    import oct_seg.predict as predict

    timer = Timer()
    saved = (predict.read_input, inference.predict_image, predict._save_png)
    predict.read_input = timer.wrap("read", predict.read_input)
    inference.predict_image = timer.wrap("predict_image", inference.predict_image)
    predict._save_png = timer.wrap("write", predict._save_png)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        areas = predict.predict_files(model, [tif], out_dir, progress=False,
                                      precision=precision)
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        predict.read_input, inference.predict_image, predict._save_png = saved
    t = timer.times
    t["total"] = total
    t["other"] = total - sum(v for k, v in t.items() if k != "total")
    c = timer.cpu
    c["total"] = total_cpu
    c["other"] = total_cpu - sum(v for k, v in c.items() if k != "total")
    return dict(name=f"stock predict_files (batch 4, {precision or 'float32'})", times=t, cpu=c,
                n_slices=len(areas), n_rows=len(areas))


def run_fast(model, tif, out_dir, batch):
    """Same outputs; one read, one batched resize, one compiled predict, same writers."""
    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from oct_seg import predict
    from oct_seg.volumes import read_input

    timer = Timer()
    t0, c0 = time.perf_counter(), time.process_time()
    with timer("read"):
        (volume,) = read_input(tif)
        bscans = volume.bscans
    with timer("preprocess"):
        x = np.stack(bscans)[..., None].astype(np.float32)
        h, w = x.shape[1:3]
        target = tuple(model.inputs[0].shape[1:3])
        x = keras.ops.convert_to_numpy(keras.ops.image.resize(
            x, target, interpolation="bilinear", antialias=True))
    infer = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    with timer("model"):
        outs = [infer(tf.constant(x[i:i + batch])).numpy() for i in range(0, len(x), batch)]
        y = np.concatenate(outs)
    with timer("postprocess"):
        y = np.clip(keras.ops.convert_to_numpy(keras.ops.image.resize(
            y, (h, w), interpolation="bilinear", antialias=True)), 0, 1)
        labels = [predict.fluid_mask(p, 0.5) for p in y]
    with timer("write"):
        (out_dir / "masks").mkdir(parents=True)
        (out_dir / "overlays").mkdir()
        names = [f"{volume.name}_b{k:03d}" for k in range(len(labels))]
        for img, lab, name in zip(bscans, labels, names):
            predict._save_png(lab * 255, out_dir / "masks" / f"{name}.png")
            predict._save_png(predict.overlay(img, lab), out_dir / "overlays" / f"{name}.png")
        areas = pd.DataFrame(predict.area_rows(volume, labels, volume.spacing, names))
        areas.to_csv(out_dir / "fluid_areas.csv", index=False)
        predict.volume_table(areas).to_csv(out_dir / "fluid_volumes.csv", index=False)
    timer.times["total"] = time.perf_counter() - t0
    timer.cpu["total"] = time.process_time() - c0
    return dict(name=f"fast (batch {batch}, compiled predict, float32)", times=timer.times,
                cpu=timer.cpu, n_slices=len(bscans), n_rows=len(areas))


PATHS = {"stock": lambda model, tif, out, a: run_stock(model, tif, out),
         "stock-bf16": lambda model, tif, out, a: run_stock(model, tif, out, "mixed_bfloat16"),
         "fast": lambda model, tif, out, a: run_fast(model, tif, out, a.batch)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--slices", type=int, default=61)
    p.add_argument("--paths", default="stock,stock-bf16,fast", help=f"some of {', '.join(PATHS)}")
    p.add_argument("--batch", type=int, default=4, help="batch of the fast path")
    p.add_argument("--quick", action="store_true", help="tiny TransUNet (smoke test)")
    p.add_argument("--out-json", required=True)
    a = p.parse_args(argv)
    paths = [n for n in a.paths.split(",") if n]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        p.error(f"unknown --paths {unknown}; use {', '.join(PATHS)}")

    import keras

    from oct_seg.models.transunet import build_transunet

    kw = dict(filter_num=[4, 8, 16, 32, 64], embed_dim=16, num_mlp=32) if a.quick else {}
    keras.utils.set_random_seed(0)
    model = build_transunet(**kw)
    network = "build_transunet(" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
    result = dict(n_slices=a.slices, height=496, width=768, network=network,
                  params=int(model.count_params()),
                  model_input=tuple(model.inputs[0].shape[1:]), paths=[], notes=[])
    with tempfile.TemporaryDirectory(prefix="octseg_bench_") as tmp:
        tmp = Path(tmp)
        tif = make_volume(tmp, a.slices)
        for name in paths:
            res = PATHS[name](model, tif, tmp / f"out_{name}", a)
            result["paths"].append(res)
            print(json.dumps(res), flush=True)
    result["notes"].append("first-call graph tracing is included in 'model' / 'predict_image' "
                           "(a clinic run pays it once per volume)")
    Path(a.out_json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
