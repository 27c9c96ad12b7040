"""What limits CPU speed: the machine's conv / matmul rate vs the networks' arithmetic.

Prints a JSON with
  peak     GFLOP per CPU-second (per core) of a 3x3 conv (256 x 256 x 128 -> 128, the shape of
           a paper-width U-Net level) and of a 2048^2 matmul, float32 and bfloat16, through
           TensorFlow's oneDNN kernels
  models   forward GFLOP per image of every Conv2D / Conv2DTranspose layer (2 x MACs) of the
           paper-width U-Net and TransUNet at 512 x 512 (the transformer adds < 1 %)
Per-CPU-second rates do not depend on other jobs sharing the cores; an idle machine with n
cores runs at about n x that rate.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rate(fn, args, flop, reps):
    """GFLOP per CPU-second and per wall-second of fn(*args) (compiled, after one warm-up)."""
    fn(*args).numpy()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        fn(*args).numpy()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return dict(per_cpu_s=reps * flop / cpu / 1e9, per_wall_s=reps * flop / wall / 1e9)


def conv_gflop(model):
    """Forward GFLOP per image of the model's top-level convolution layers."""
    import keras
    import numpy as np

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            out = layer.output.shape
            spatial = (layer.input.shape if isinstance(layer, keras.layers.Conv2DTranspose)
                       else out)
            total += 2 * spatial[1] * spatial[2] * int(np.prod(layer.kernel.shape))
    return total / 1e9


def main(quick=False):
    import tensorflow as tf

    res = dict(peak={}, models={})
    n, c = (64, 32) if quick else (256, 128)
    m = 256 if quick else 2048
    for dt in (tf.float32, tf.bfloat16):
        x = tf.cast(tf.random.normal((1, n, n, c)), dt)
        k = tf.cast(tf.random.normal((3, 3, c, c)), dt)
        conv = tf.function(lambda x, k: tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME")))
        a = tf.cast(tf.random.normal((m, m)), dt)
        mm = tf.function(lambda a, b: tf.matmul(a, b))
        res["peak"][dt.name] = dict(conv3x3=rate(conv, (x, k), 2 * n * n * 9 * c * c, 5),
                                    matmul=rate(mm, (a, a), 2 * m ** 3, 5))
    if not quick:
        from oct_seg.models.transunet import build_transunet
        from oct_seg.models.unet import build_unet

        res["models"]["unet_paper_512"] = conv_gflop(build_unet())
        res["models"]["transunet_paper_512"] = conv_gflop(build_transunet())
        res["models"]["transunet_paper_512_p1"] = conv_gflop(build_transunet(patch_size=(1, 1)))
    print("ROOFLINE " + json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv))
