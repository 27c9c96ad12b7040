"""Patient-level stratified folds and splits.json."""
import json

import numpy as np
import pandas as pd
import pytest

from oct_seg.data import check_folds, make_folds, read_splits, write_splits


def _index(n_subjects=10, per=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for k in range(per):
            dry = (s % 3 == 0) or rng.random() < 0.2
            rows.append(dict(name=f"p{s:02d}_{k}", subject=s, fluid_fraction=0.0 if dry else rng.uniform(1e-3, 0.05)))
    return pd.DataFrame(rows)


def test_folds_are_patient_disjoint_and_cover_every_subject_once():
    index = _index()
    folds = make_folds(index, n_folds=5, seed=1)
    assert len(folds) == 5
    subject = dict(zip(index["name"], index["subject"]))
    val_subjects = [sorted({subject[n] for n in f["val"]}) for f in folds]
    assert sorted(s for vs in val_subjects for s in vs) == list(range(10))
    for f in folds:
        assert not {subject[n] for n in f["train"]} & {subject[n] for n in f["val"]}
        assert sorted(f["train"] + f["val"]) == sorted(index["name"])
    assert make_folds(index, 5, seed=1) == folds
    assert make_folds(index, 5, seed=2) != folds


def test_stratification_spreads_fluid_free_scans():
    index = _index(12, 6, seed=3)
    dry = dict(zip(index["name"], index["fluid_fraction"] == 0))
    overall = np.mean(list(dry.values()))

    def spread(folds):   # worst deviation of a val fold's fluid-free share from the overall share
        return max(abs(np.mean([dry[n] for n in f["val"]]) - overall) for f in folds)

    stratified = [spread(make_folds(index, 3, seed)) for seed in range(8)]
    grouped = [spread(make_folds(index.drop(columns="fluid_fraction"), 3, seed)) for seed in range(8)]
    assert np.mean(stratified) < np.mean(grouped) and max(stratified) < max(grouped)


def test_too_many_folds_and_bad_index():
    index = _index(4, 2)
    with pytest.raises(ValueError, match="maximum is n_folds=4"):
        make_folds(index, n_folds=5)
    assert len(make_folds(index, n_folds=4)) == 4
    with pytest.raises(ValueError, match=">= 2"):
        make_folds(index, n_folds=1)
    with pytest.raises(ValueError, match="subject"):
        make_folds(index.drop(columns="subject"))
    no_fluid = index.drop(columns="fluid_fraction")    # falls back to group k-fold
    check_folds(make_folds(no_fluid, 2), no_fluid)


def test_check_folds_catches_leaks_and_gaps():
    index = _index(4, 2)
    names = list(index["name"])
    leak = [{"train": names[1:], "val": names[:1]}, {"train": names[:1], "val": names[1:]}]   # p00 split
    with pytest.raises(ValueError, match="both train and val"):
        check_folds(leak, index)
    twice = [{"train": names[2:], "val": names[:2]}, {"train": names[2:], "val": names[:2]}]
    with pytest.raises(ValueError, match="validated in folds"):
        check_folds(twice, index)
    partial = [{"train": names[2:4], "val": names[:2]}]
    with pytest.raises(ValueError, match="partition"):
        check_folds(partial, index)


def test_write_read_round_trip(tmp_path):
    index = _index(5, 2)
    folds = make_folds(index, 5)
    path = write_splits(tmp_path / "run" / "splits.json", folds)
    assert read_splits(path) == folds
    assert json.loads(path.read_text())[0].keys() == {"train", "val"}
    path.write_text('{"train": []}')
    with pytest.raises(ValueError, match="list of"):
        read_splits(path)
    path.write_text("[{")
    with pytest.raises(ValueError, match="cannot read"):
        read_splits(path)
