"""Standalone check of an exported SavedModel: run in a process that never imports oct_seg.

usage: python export_check.py SAVEDMODEL_DIR INPUT.npy EXPECTED.npy [--tol 1e-5]

Loads the folder with plain `tf.saved_model.load`, runs its `serve` endpoint and the
`serving_default` signature on INPUT (float32 (B, H, W, 1)), and compares both with EXPECTED
(the Keras model's probabilities). Prints one JSON line; exit 0 when the max abs difference is
below --tol and the 0.5-thresholded masks are identical, 1 otherwise.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("saved_model")
    parser.add_argument("input")
    parser.add_argument("expected")
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args(argv)
    x = np.load(args.input).astype(np.float32)
    expected = np.load(args.expected)
    loaded = tf.saved_model.load(args.saved_model)
    served = loaded.serve(tf.constant(x)).numpy()
    signature = loaded.signatures["serving_default"]
    by_signature = next(iter(signature(tf.constant(x)).values())).numpy()
    diffs = [float(np.max(np.abs(out - expected))) for out in (served, by_signature)]
    same_masks = all(np.array_equal(out > 0.5, expected > 0.5)
                     for out in (served, by_signature))
    report = dict(max_abs_diff=max(diffs), same_masks=same_masks,
                  oct_seg_imported=any(m.split(".")[0] == "oct_seg" for m in sys.modules),
                  output_shape=list(served.shape))
    print(json.dumps(report))
    ok = max(diffs) < args.tol and same_masks and not report["oct_seg_imported"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
