"""Time the clinic job: one OCT volume file -> fluid masks, overlays and fluid CSVs.

The volume: `--slices` (61) real 496 x 768 Duke DME B-scans (cycled when fewer), written as
one uint8 multi-page TIFF in a temporary folder. Network: oct_seg's default, the paper's
TransUNet (`build_transunet()`, 512 x 512 input, untrained weights: timing only).

Paths (--paths):
  stock  oct_seg.predict.predict_files(model, [volume], out) as the CLI runs it; stages
         timed by wrapping its steps (read_input, predict_image, mask/overlay/PNG writing).
         If predict_files does not accept a multi-page TIFF, the same slices as PNG files
         are given instead (noted in the output).
  fast   the same outputs with the volume read once, all slices resized in one call, the
         network run as one compiled (tf.function) predict over batches of --batch, and
         the same writers: read / preprocess / model / postprocess / write timed separately.
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


def make_volume(folder: Path, n: int, quick=False) -> tuple[Path, list[Path]]:
    """Write the n-slice uint8 multi-page TIFF (and the slices as PNGs); return the paths."""
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
    stack = np.stack(slices)
    tif = folder / "volume.tif"
    tifffile.imwrite(tif, stack)  # one page per B-scan
    pngs = []
    (folder / "slices").mkdir()
    for k, img in enumerate(slices):
        pngs.append(folder / "slices" / f"volume_b{k:03d}.png")
        Image.fromarray(img).save(pngs[-1])
    return tif, pngs


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


def run_stock(model, tif, pngs, out_dir):
    """predict_files on the TIFF (or the PNG slices); stage times by wrapping its steps."""
    import oct_seg.inference as inference
    import oct_seg.predict as predict

    timer = Timer()
    saved = (predict.read_input, inference.predict_image, predict._save_png)
    predict.read_input = timer.wrap("read", predict.read_input)
    inference.predict_image = timer.wrap("predict_image", inference.predict_image)
    predict._save_png = timer.wrap("write", predict._save_png)
    note = None
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            areas = predict.predict_files(model, [tif], out_dir, progress=False)
            inputs = "multi-page TIFF"
        except ValueError as err:
            note = (f"predict_files does not read the multi-page TIFF ({str(err)[:160]}); "
                    "timed on the same slices as PNG files")
            timer.times.clear()
            timer.cpu.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            areas = predict.predict_files(model, pngs, Path(str(out_dir) + "_png"),
                                          progress=False)
            inputs = "PNG slices"
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        predict.read_input, inference.predict_image, predict._save_png = saved
    t = timer.times
    t["total"] = total
    t["other"] = total - sum(v for k, v in t.items() if k != "total")
    c = timer.cpu
    c["total"] = total_cpu
    c["other"] = total_cpu - sum(v for k, v in c.items() if k != "total")
    return dict(name=f"stock predict_files ({inputs}, {len(pngs)} B-scans)", times=t, cpu=c,
                n_slices=len(pngs), n_rows=len(areas), note=note)


def run_fast(model, tif, out_dir, batch, precision="float32"):
    """Same outputs; one read, one batched resize, one compiled predict, same writers."""
    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from oct_seg import predict
    from oct_seg.volumes import Volume, read_input, to_unit_range

    timer = Timer()
    t0, c0 = time.perf_counter(), time.process_time()
    with timer("read"):
        try:
            vols = read_input(tif)
            bscans = vols[0].bscans if len(vols[0].bscans) > 1 else None
        except ValueError:
            bscans = None
        if bscans is None:  # oct_seg reads a .tif as one image: read the pages here
            import tifffile
            raw = tifffile.imread(tif)
            bscans = to_unit_range(list(raw))
        volume = Volume(tif.stem, tif, bscans)
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
    return dict(name=f"fast (batch {batch}, compiled predict, {precision})", times=timer.times,
                cpu=timer.cpu, n_slices=len(bscans), n_rows=len(areas))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--slices", type=int, default=61)
    p.add_argument("--paths", default="fast,stock")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--stock-slices", type=int, default=0,
                   help="B-scans for the stock path (0 = all; fewer to save time on a busy "
                        "machine: its cost is linear in B-scans)")
    p.add_argument("--precision", default="float32")
    p.add_argument("--quick", action="store_true", help="tiny TransUNet (smoke test)")
    p.add_argument("--out-json", required=True)
    a = p.parse_args(argv)

    import keras

    if a.precision != "float32":
        keras.config.set_dtype_policy(a.precision)
    from oct_seg.models.transunet import build_transunet

    kw = dict(filter_num=[4, 8, 16, 32, 64], embed_dim=16, num_mlp=32) if a.quick else {}
    keras.utils.set_random_seed(0)
    model = build_transunet(**kw)
    network = "build_transunet(" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
    result = dict(n_slices=a.slices, height=496, width=768, network=network,
                  params=int(model.count_params()), precision=a.precision,
                  model_input=tuple(model.inputs[0].shape[1:]), paths=[], notes=[])
    with tempfile.TemporaryDirectory(prefix="octseg_bench_") as tmp:
        tmp = Path(tmp)
        tif, pngs = make_volume(tmp, a.slices, a.quick)
        for name in a.paths.split(","):
            if name == "fast":
                res = run_fast(model, tif, tmp / "out_fast", a.batch, a.precision)
            elif name == "stock":
                n = a.stock_slices or a.slices
                if n < a.slices:
                    import numpy as np
                    import tifffile
                    tif_n = tmp / f"volume_{n}.tif"
                    tifffile.imwrite(tif_n, np.asarray(tifffile.imread(tif))[:n])
                else:
                    tif_n = tif
                res = run_stock(model, tif_n, pngs[:n], tmp / "out_stock")
            else:
                raise ValueError(f"unknown path {name!r}; use fast, stock")
            if res.get("note"):
                result["notes"].append(res["note"])
            result["paths"].append(res)
            print(json.dumps(res), flush=True)
    result["notes"].append("first-call graph tracing is included in 'model' (a clinic run "
                           "pays it once per volume)")
    Path(a.out_json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
