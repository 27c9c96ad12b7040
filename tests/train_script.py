"""Subprocess helper for tests/test_resume.py and tests/test_multiworker.py (not a test).

usage: python tests/train_script.py DATA_DIR RUN_DIR EPOCHS SIZE [FOLD ...]
Trains the tiny U-Net used by the tests with oct_seg.training.train (2-fold CV, no noise condition).
With TF_CONFIG set, the strategy is MultiWorkerMirroredStrategy (made before anything else).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from oct_seg import distribute  # noqa: E402

strategy = distribute.get_strategy()  # first TF call: MWMS must precede other ops

from oct_seg.training import train  # noqa: E402

data_dir, run_dir, epochs, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
folds = [int(k) for k in sys.argv[5:]] or None
print(f"[train_script] pid={os.getpid()} chief={distribute.is_chief()} "
      f"replicas={strategy.num_replicas_in_sync}", flush=True)
train(data_dir, run_dir, model="unet",
      model_kwargs={"filter_num": [4, 8], "stack_num_down": 1, "stack_num_up": 1},
      loss="combined", image_size=(size, size), epochs=epochs, batch_size=2, n_folds=2,
      folds=folds, patience=50, noise_std=0.0, augment=False, seed=3, strategy=strategy,
      verbose=2)
print("[train_script] finished", flush=True)
