"""keras-unet-collection's own recipe on one cross-validation fold: the accuracy reference.

The recipe a user of keras-unet-collection 0.1.13 would write (issue 11's baseline): its
``unet_2d`` with filters 16-32-64-128-256, sigmoid output, no batch norm (kuc's default), its
``losses.dice`` (whole-batch soft Dice) + Keras binary cross-entropy, B-scans resized to
256 x 384, horizontal flips as the only augmentation, Adam at a constant 1e-3, batch 4,
60 epochs, the last model kept. Data loading, resizing and flips use oct_seg's pipeline
(kuc has none); scoring is oct_seg's, at the B-scans' original size (probabilities resized
back), exactly as for oct_seg's own models.

Run by bench/accuracy.py in a subprocess per fold:
    python bench/_kuc_recipe.py --data DIR --splits RUN/splits.json --fold K --out RUN/fold_K
writes val_scores.csv (per scan) and fold.json (timings) into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

EPOCHS, SIZE, BATCH, LEARNING_RATE = 60, (256, 384), 4, 1e-3
FILTERS = [16, 32, 64, 128, 256]


def run_fold(data_dir, split, out_dir, epochs=EPOCHS, size=SIZE, seed=0, filters=FILTERS):
    """Train kuc's unet_2d by its recipe on split["train"], score split["val"]; returns fold.json."""
    import keras
    from keras_unet_collection import losses, models

    from oct_seg.data import Augment, make_dataset, read_dataset
    from oct_seg.evaluate import evaluate_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    scans = read_dataset(data_dir)
    train, val = scans.subset(split["train"]), scans.subset(split["val"])
    flips = Augment(rotation=0, shift=0, crop=1.0, flip=True, brightness=0, contrast=0, gamma=0)
    data = make_dataset(train.images, train.masks, image_size=size, batch_size=BATCH,
                        training=True, augment=flips, seed=seed)
    model = models.unet_2d((*size, 1), list(filters), n_labels=1, output_activation="Sigmoid")

    def dice_bce(y_true, y_pred):
        return losses.dice(y_true, y_pred) + keras.losses.binary_crossentropy(y_true, y_pred)

    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=dice_bce)
    wall, cpu = time.time(), time.process_time()
    model.fit(data, epochs=epochs, verbose=2)
    train_cpu = time.process_time() - cpu
    scores = evaluate_model(model, val, image_size=size)
    tmp = out_dir / ".val_scores.csv.tmp"
    scores.to_csv(tmp, index=False)
    os.replace(tmp, out_dir / "val_scores.csv")
    info = {"recipe": "kuc_unet", "epochs": epochs, "image_size": list(size), "batch": BATCH,
            "learning_rate": LEARNING_RATE, "filters": list(filters), "n_train": len(train),
            "n_val": len(val), "train_cpu_s": round(train_cpu, 1),
            "total_cpu_s": round(time.process_time() - cpu, 1),
            "wall_s": round(time.time() - wall, 1)}
    (out_dir / "fold.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--splits", required=True, help="splits.json of the benchmark run")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    split = json.loads(Path(a.splits).read_text())[a.fold]
    print(json.dumps(run_fold(a.data, split, a.out, epochs=a.epochs, seed=a.seed)))


if __name__ == "__main__":
    main()
