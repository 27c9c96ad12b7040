"""Measure one (implementation, network, size) configuration in this fresh process.

Run by bench/run_benchmarks.py, one subprocess per measurement, so that peak RSS
(``ru_maxrss``) belongs to this configuration alone. Prints one line
``BENCH_RESULT {json}`` on stdout.

Implementations:
  ours        oct_seg builders (Keras 3)
  kuc         keras-unet-collection 0.1.13 builders under Keras 3 (unet, att_unet, r2_unet, unet3plus)
  kuc_legacy  keras-unet-collection under tf-keras (TF_USE_LEGACY_KERAS=1, separate venv);
              needed for transunet_2d and swin_unet_2d, which do not build under Keras 3.

Measured (batch B, random input, binary cross-entropy, Adam):
  infer_ips   images/s of the compiled predict step (predict_on_batch), wall clock
  train_ips   images/s of the compiled train step (train_on_batch), wall clock
  *_ips_cpu   images per CPU-second of this process (robust to other load on shared cores)
  rss_*_mb    peak resident set size (ru_maxrss) after import, after inference, after training
  params      model.count_params()
"""
import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Architectures shared by both implementations. Each entry holds the arguments that
# define the network; ours and kuc's builder are each called with their own spelling.
NETS = ("unet", "att_unet", "r2_unet", "unet3plus", "transunet", "swin_unet")


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_kuc(net, size, filters, opts):
    """keras-unet-collection builder of the same architecture as ours (sigmoid, 1 label)."""
    from keras_unet_collection import models

    shape = (size, size, 1)
    bn = opts["batch_norm"]
    common = dict(activation="ReLU", output_activation="Sigmoid", batch_norm=bn,
                  pool=True, unpool=True)
    if net == "unet":
        return models.unet_2d(shape, filters, 1, stack_num_down=2, stack_num_up=2,
                              backbone=None, **common)
    if net == "att_unet":
        return models.att_unet_2d(shape, filters, 1, stack_num_down=2, stack_num_up=2,
                                  atten_activation="ReLU", attention="add", backbone=None,
                                  **common)
    if net == "r2_unet":
        return models.r2_unet_2d(shape, filters, 1, stack_num_down=2, stack_num_up=2,
                                 recur_num=2, **common)
    if net == "unet3plus":
        return models.unet_3plus_2d(shape, 1, filters, filter_num_skip="auto",
                                    filter_num_aggregate="auto", stack_num_down=2,
                                    stack_num_up=1, deep_supervision=False, backbone=None,
                                    **common)
    if net == "transunet":
        if tuple(opts["patch_size"]) != (1, 1):
            raise ValueError("kuc's transunet_2d tokenises with 1x1 patches only; "
                             "compare it with ours at patch_size=(1, 1)")
        return models.transunet_2d(shape, filters, 1, stack_num_down=2, stack_num_up=2,
                                   embed_dim=opts["embed_dim"], num_mlp=opts["num_mlp"],
                                   num_heads=opts["num_heads"],
                                   num_transformer=opts["num_transformer"],
                                   mlp_activation="GELU", backbone=None, **common)
    if net == "swin_unet":
        return models.swin_unet_2d(shape, filter_num_begin=opts["filter_num_begin"], n_labels=1,
                                   depth=opts["depth"], stack_num_down=opts["stack_num_down"],
                                   stack_num_up=opts["stack_num_up"],
                                   patch_size=tuple(opts["patch_size"]),
                                   num_heads=opts["num_heads"], window_size=opts["window_size"],
                                   num_mlp=opts["num_mlp"], output_activation="Sigmoid",
                                   shift_window=True)
    raise ValueError(f"unknown net {net!r}; choose from {NETS}")


def build_ours(net, size, filters, opts):
    """oct_seg builder of the architecture described by ``opts`` (sigmoid, 1 label)."""
    import importlib

    module = importlib.import_module(f"oct_seg.models.{net}")
    shape = (size, size, 1)
    bn = opts["batch_norm"]
    common = dict(n_labels=1, activation="ReLU", output_activation="Sigmoid", batch_norm=bn)
    if net == "unet":
        return module.build_unet(shape, filters, stack_num_down=2, stack_num_up=2, **common)
    if net == "att_unet":
        return module.build_att_unet(shape, filters, stack_num_down=2, stack_num_up=2,
                                       **common)
    if net == "r2_unet":
        return module.build_r2_unet(shape, filters, stack_num_down=2, stack_num_up=2,
                                     recur_num=2, **common)
    if net == "unet3plus":
        return module.build_unet3plus(shape, filter_num_down=filters, stack_num_down=2,
                                         stack_num_up=1,
                                         **common)
    if net == "transunet":
        return module.build_transunet(shape, filters, stack_num_down=2, stack_num_up=2,
                                         embed_dim=opts["embed_dim"], num_mlp=opts["num_mlp"],
                                         num_heads=opts["num_heads"],
                                         num_transformer=opts["num_transformer"],
                                         patch_size=tuple(opts["patch_size"]), **common)
    if net == "swin_unet":
        return module.build_swin_unet(shape, filter_num_begin=opts["filter_num_begin"],
                                         n_labels=1, depth=opts["depth"],
                                         stack_num_down=opts["stack_num_down"],
                                         stack_num_up=opts["stack_num_up"],
                                         patch_size=tuple(opts["patch_size"]),
                                         num_heads=opts["num_heads"],
                                         window_size=opts["window_size"],
                                         num_mlp=opts["num_mlp"], output_activation="Sigmoid")
    raise ValueError(f"unknown net {net!r}; choose from {NETS}")


def _time_steps(fn, min_time, max_steps):
    """Call fn() at least once and until min_time seconds or max_steps.

    Returns (wall seconds per step, process CPU seconds of all steps). CPU time (all threads
    of this process) is robust to other processes sharing the cores; wall time is not.
    """
    times = []
    start, cpu0 = time.perf_counter(), time.process_time()
    while len(times) < max_steps:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= min_time:
            break
    return times, time.process_time() - cpu0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", required=True, choices=["ours", "kuc", "kuc_legacy"])
    p.add_argument("--net", required=True, choices=NETS)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--filters", required=True, help="comma list, e.g. 64,128,256,512,1024")
    p.add_argument("--opts", default="{}", help="JSON of architecture options")
    p.add_argument("--jit", action="store_true", help="compile(jit_compile=True) (XLA)")
    p.add_argument("--precision", default="float32",
                   help="keras dtype policy: float32, mixed_bfloat16, mixed_float16")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=5)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = TF default)")
    a = p.parse_args(argv)

    t_start = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    if a.impl == "kuc_legacy":
        import tf_keras as keras
    else:
        import keras
    if a.precision != "float32":
        if a.impl == "kuc_legacy":
            keras.mixed_precision.set_global_policy(a.precision)
        else:
            keras.config.set_dtype_policy(a.precision)
    rss_import = _rss_mb()

    filters = [int(f) for f in a.filters.split(",")]
    opts = json.loads(a.opts)
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    builder = build_ours if a.impl == "ours" else build_kuc
    model = builder(a.net, a.size, filters, opts)
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    x = rng.random((a.batch, a.size, a.size, 1), dtype=np.float32)
    y = (rng.random((a.batch, a.size, a.size, 1)) > 0.8).astype(np.float32)
    compile_kw = dict(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
    if a.jit:
        compile_kw["jit_compile"] = True
    model.compile(**compile_kw)

    out = dict(impl=a.impl, net=a.net, size=a.size, batch=a.batch, filters=a.filters,
               opts=opts, jit=a.jit, precision=a.precision, params=int(model.count_params()),
               build_s=build_s, rss_import_mb=rss_import, keras=keras.__version__,
               tf=tf.__version__)

    t0 = time.perf_counter()
    model.predict_on_batch(x)
    for _ in range(a.warmup - 1):
        model.predict_on_batch(x)
    out["infer_first_s"] = time.perf_counter() - t0
    it, cpu = _time_steps(lambda: model.predict_on_batch(x), a.min_time, a.max_steps)
    out["infer_step_s"] = it
    out["infer_ips"] = a.batch * len(it) / sum(it)
    out["infer_ips_cpu"] = a.batch * len(it) / cpu
    out["rss_infer_mb"] = _rss_mb()

    if not a.skip_train:
        t0 = time.perf_counter()
        for _ in range(max(a.warmup, 1)):
            model.train_on_batch(x, y)
        out["train_first_s"] = time.perf_counter() - t0
        tt, cpu = _time_steps(lambda: model.train_on_batch(x, y), a.min_time, a.max_steps)
        out["train_step_s"] = tt
        out["train_ips"] = a.batch * len(tt) / sum(tt)
        out["train_ips_cpu"] = a.batch * len(tt) / cpu
        out["rss_train_mb"] = _rss_mb()
    out["wall_s"] = time.perf_counter() - t_start
    print("BENCH_RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
