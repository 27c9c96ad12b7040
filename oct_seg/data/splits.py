"""Patient-level k-fold splits, stratified by fluid presence, stored as splits.json.

Stratification (decision): the label is per B-scan fluid presence (``fluid_fraction > 0``, or
``n_fluid_components > 0`` when there is no fluid_fraction column), grouped by ``subject``
with scikit-learn ``StratifiedGroupKFold(shuffle=True, random_state=seed)``: every patient
lies in exactly one validation fold and the share of fluid-free scans is balanced across
folds as far as whole patients allow. Without a fluid column, or when every scan has the
same label, plain ``GroupKFold(shuffle=True)`` is used. splits.json is a list of
{"train": [names], "val": [names]} (the nnU-Net splits_final.json habit), names sorted.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from oct_seg.io import write_text


def _fluid_labels(index_df: pd.DataFrame):
    for col in ("fluid_fraction", "n_fluid_components"):
        if col in index_df.columns:
            return (index_df[col].to_numpy(dtype=float) > 0).astype(int)
    return None


def make_folds(index_df: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> list:
    """k folds by ``subject``: list of {"train": [...], "val": [...]} scan names."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    for col in ("name", "subject"):
        if col not in index_df.columns:
            raise ValueError(f"index needs a {col!r} column; it has {list(index_df.columns)}")
    if index_df["name"].duplicated().any():
        raise ValueError(f"duplicated scan names: {index_df['name'][index_df['name'].duplicated()].tolist()[:5]}")
    n_subjects = index_df["subject"].nunique()
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r} (use a held-out fraction for 1)")
    if n_folds > n_subjects:
        raise ValueError(f"n_folds={n_folds} exceeds the number of subjects ({n_subjects}); "
                         f"the maximum is n_folds={n_subjects} (leave-one-patient-out)")
    names = index_df["name"].astype(str).to_numpy()
    groups = index_df["subject"].astype(str).to_numpy()
    labels = _fluid_labels(index_df)
    if labels is not None and len(np.unique(labels)) > 1:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():   # "least populated class" is expected: best effort
            warnings.filterwarnings("ignore", message="The least populated class")
            parts = list(splitter.split(names, labels, groups))
    else:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        parts = splitter.split(names, groups=groups)
    folds = [{"train": sorted(names[tr].tolist()), "val": sorted(names[va].tolist())} for tr, va in parts]
    check_folds(folds, index_df)
    return folds


def check_folds(folds: list, index_df: pd.DataFrame) -> None:
    """Raise ValueError unless every fold is patient-disjoint, covers all scans, and every
    subject is validated exactly once."""
    subject = dict(zip(index_df["name"].astype(str), index_df["subject"]))
    all_names = set(subject)
    seen = {}
    for k, fold in enumerate(folds):
        train, val = set(fold["train"]), set(fold["val"])
        unknown = (train | val) - all_names
        if unknown:
            raise ValueError(f"fold {k}: names not in the index: {sorted(unknown)[:5]}")
        if train & val or train | val != all_names:
            raise ValueError(f"fold {k}: train and val must partition all {len(all_names)} scans")
        shared = {subject[n] for n in train} & {subject[n] for n in val}
        if shared:
            raise ValueError(f"fold {k}: patient(s) {sorted(map(str, shared))} in both train and val")
        for s in {subject[n] for n in val}:
            if s in seen:
                raise ValueError(f"subject {s} is validated in folds {seen[s]} and {k}")
            seen[s] = k
    missing = set(subject.values()) - set(seen)
    if missing:
        raise ValueError(f"subject(s) {sorted(map(str, missing))} never validated")


def write_splits(path, folds: list) -> Path:
    """Write folds to a JSON file (list of {"train", "val"}; atomic); returns the Path."""
    path = Path(path)
    _check_structure(folds, path)
    return write_text(path, json.dumps([{"train": list(f["train"]), "val": list(f["val"])}
                                        for f in folds], indent=1))


def read_splits(path) -> list:
    """Read a splits.json written by write_splits (or nnU-Net's splits_final.json)."""
    path = Path(path)
    try:
        folds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read splits JSON ({err})") from err
    _check_structure(folds, path)
    return folds


def _check_structure(folds, where):
    ok = isinstance(folds, list) and folds and all(
        isinstance(f, dict) and set(f) >= {"train", "val"}
        and all(isinstance(n, str) for n in list(f["train"]) + list(f["val"])) for f in folds)
    if not ok:
        raise ValueError(f"{where}: splits must be a non-empty list of {{'train': [names], 'val': [names]}}")
