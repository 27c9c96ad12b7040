"""Paired tests of the paper's claims across B-scans: is the proposed run's per-scan Dice
higher than each other run's on the same scans?

The paper claims TransUNet beats every other network (Table 1) and the proposed combined loss
beats every other loss, on clean (Table 3) and noisy (Table 4) B-scans. Each claim is tested
with the Wilcoxon signed-rank test on the per-scan validation Dice of the two runs, paired by
scan (each scan predicted by the fold model that did not train on its patient; both runs
share the folds), and the p-values of one table's comparisons are Holm-corrected together.

Choices, and why:
* Per-scan Dice of a scan with empty truth: 1 when the prediction is empty too, 0 when any
  fluid is predicted (:func:`paired_dice`). The score files leave the empty/empty case
  undefined (NaN, skipped by the per-image mean); a paired test must count it, else a run
  that marks fluid on healthy scans would lose those pairs instead of being penalised.
* Zero differences (both runs equally right or wrong on a scan; common: 26 of Duke's 88 scans
  are fluid-free) carry no sign and are dropped before ranking (scipy's
  ``zero_method="wilcox"``); ``n`` counts all pairs, ``n_nonzero`` the ones tested.
* Two-sided p-value (scipy's ``method="auto"``: exact for small n without ties, the normal
  approximation with tie correction otherwise); the direction comes from the rank sums.
* With fewer than MIN_PAIRS nonzero differences the test is not run: with 5 pairs the
  smallest two-sided exact p is 2 / 2^5 = 0.0625, so no result could reach ALPHA.

The scans are not independent: Duke's 88 come from 8 patients (11 each), and a run that suits
one patient's fluid wins all of that patient's scans. :func:`patient_dice` and
:func:`patient_tests` therefore repeat each comparison with the patient as the unit: mean Dice
over each patient's fluid-positive scans, and a two-sided sign test over the patients (with 8
patients it reaches p < 0.05 only at 8 wins of 8: 2 / 2^8 = 0.0078; 7 of 8 gives 0.070). A
claim that holds across scans but not across patients holds for these patients, not
necessarily for new ones.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from oct_seg.reporting.tables import scan_scores

ALPHA = 0.05  # family-wise error rate per table (Holm)
MIN_PAIRS = 6  # smallest n whose exact two-sided p can fall below ALPHA (2 / 2^6 = 0.031)


def paired_dice(scans: pd.DataFrame, runs, complete: bool = True) -> pd.DataFrame:
    """Per-scan Dice, one column per run of ``runs``, one row per scan name (an empty-truth
    scan scores 1 with an empty prediction, else 0).

    scans: tables.scan_scores output (columns run, name, dice, truth_pixels, pred_pixels).
    complete: keep only the scans that every run scored; False keeps every scan any run
    scored, NaN where a run did not (a run with only some folds committed).
    """
    dice = scans["dice"].to_numpy(float)
    both_empty = (scans["truth_pixels"] == 0) & (scans["pred_pixels"] == 0)
    scans = scans.assign(dice=np.where(both_empty, 1.0, np.nan_to_num(dice, nan=0.0)))
    wide = scans.pivot_table(index="name", columns="run", values="dice", aggfunc="first")
    missing = [r for r in runs if r not in wide.columns]
    if missing:
        raise ValueError(f"no per-scan scores for {missing}; have {list(wide.columns)}")
    wide = wide[list(runs)]
    return wide.dropna() if complete else wide.dropna(how="all")


def wilcoxon_pair(a, b) -> dict:
    """Wilcoxon signed-rank test of a - b over paired values (e.g. per-scan Dice).

    Returns n (pairs), n_nonzero (pairs with a != b, the ones ranked), median_diff (median of
    a - b over all pairs), w_plus / w_minus (rank sums of the positive / negative
    differences), p (two-sided; NaN when n_nonzero < MIN_PAIRS).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of one length, got shapes {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite (drop unpaired scans first)")
    d = np.round(a - b, 12)  # differences equal up to float error tie (and zeros are zero)
    nonzero = d[d != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    out = {"n": int(d.size), "n_nonzero": int(nonzero.size),
           "median_diff": float(np.median(d)) if d.size else float("nan"),
           "w_plus": float(ranks[nonzero > 0].sum()), "w_minus": float(ranks[nonzero < 0].sum()),
           "p": float("nan")}
    if nonzero.size >= MIN_PAIRS:
        out["p"] = float(stats.wilcoxon(d, zero_method="wilcox",
                                        alternative="two-sided").pvalue)
    return out


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN and does not
    count among the m tests): sorted p_(i) times (m - i), made monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def verdict(row: dict, reference: str, other: str) -> str:
    """Plain-language verdict on the claim "reference is better than other" from one
    comparison (wilcoxon_pair's fields and p_holm)."""
    n = f"n={row['n']}, {row['n_nonzero']} differ"
    if row["n_nonzero"] < MIN_PAIRS:
        return (f"not testable: only {row['n_nonzero']} scans differ (need {MIN_PAIRS}; "
                f"n={row['n']})")
    p = row["p_holm"]
    if p >= ALPHA:
        return f"no significant difference (Holm p={p:.2g}, {n})"
    if row["w_plus"] > row["w_minus"]:
        return f"supported: {reference} higher (Holm p={p:.2g}, {n})"
    return f"not supported: {other} higher (Holm p={p:.2g}, {n})"


def compare_paired(wide: pd.DataFrame, reference, others,
                   labels: dict | None = None) -> pd.DataFrame:
    """Wilcoxon tests of column ``reference`` of ``wide`` (one row per scan, one column per
    run: per-scan Dice, or any paired per-scan value) against each column of ``others``, each
    on the scans where both columns have a value (NaN: not scored by that run).
    One row per other run: n, n_nonzero, median_diff (percent points, reference minus other),
    p, p_holm (over these comparisons), verdict."""
    labels = labels or {}
    pairs = {o: wide[[reference, o]].dropna() for o in others}
    rows = [{"comparison": f"{labels.get(reference, reference)} vs {labels.get(o, o)}",
             **wilcoxon_pair(pairs[o][reference], pairs[o][o])} for o in others]
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"]) if len(table) else []
    table["verdict"] = [verdict(r, labels.get(reference, reference), labels.get(o, o))
                        for r, o in zip(table.to_dict("records"), others)]
    table["median_diff"] = 100.0 * table["median_diff"]
    return table.drop(columns=["w_plus", "w_minus"]).set_index("comparison")


def _empty_claims() -> pd.DataFrame:
    """The claim / robustness table with no comparison (index: scans, comparison)."""
    return pd.DataFrame(columns=["scans", "comparison", "n", "n_nonzero", "median_diff", "p",
                                 "p_holm", "verdict"]).set_index(["scans", "comparison"])


def _fluid_scans(scans: pd.DataFrame) -> pd.DataFrame:
    fluid = scans.groupby("name")["truth_pixels"].max() > 0
    return scans[scans["name"].isin(fluid[fluid].index)]


def claim_tests(scans: pd.DataFrame, reference, others, labels: dict | None = None,
                fluid_only: bool = False) -> pd.DataFrame:
    """The claim "reference beats each of others" tested per pair on per-scan Dice, each pair
    on the scans both runs scored (a run with only some folds committed is compared on those).

    scans: tables.scan_scores output holding every run; fluid_only: only the scans with
    fluid in the truth. Columns as compare_paired's.
    """
    if fluid_only:
        scans = _fluid_scans(scans)
    wide = paired_dice(scans, [reference, *others], complete=False)
    return compare_paired(wide, reference, others, labels)


def _others_scored(scans: pd.DataFrame, run_dirs: dict, reference) -> list:
    """The runs of run_dirs other than reference that have scores in ``scans`` (a finished
    fold), in run_dirs order; empty when the reference itself has none."""
    present = [key for key in run_dirs if (scans["run"] == key).any()]
    return [key for key in present if key != reference] if reference in present else []


def claim_table(run_dirs: dict, reference, condition: str = "clean",
                labels: dict | None = None) -> pd.DataFrame:
    """The tests of one paper table: claim_tests of ``reference`` against every other run of
    run_dirs on the validation scans under ``condition``, over all scans and over the
    fluid-positive ones (index: scans, comparison). Runs without a finished fold are left out;
    without the reference, or with nothing to compare it with, the table is empty."""
    scans = scan_scores(run_dirs, condition)
    others = _others_scored(scans, run_dirs, reference)
    if not others:
        return _empty_claims()
    return pd.concat({"all scans": claim_tests(scans, reference, others, labels),
                      "fluid scans": claim_tests(scans, reference, others, labels,
                                                 fluid_only=True)}, names=["scans"])


def patient_dice(run_dirs: dict, condition: str = "clean",
                 labels: dict | None = None) -> pd.DataFrame:
    """Per-patient Dice of every run: rows subjects, one column per run of run_dirs (named by
    labels), each cell the mean per-scan validation Dice, in percent, over that patient's
    fluid-positive scans (fluid-free scans have no Dice of their own; paired_dice's 1/0 rule
    would let one patient's healthy scans outweigh its fluid). Runs without a finished fold
    have an all-NaN column (as does a patient whose fold a run has not finished), so that
    patient_tests reports 0 patients for them instead of failing."""
    scans = scan_scores(run_dirs, condition)
    labels = labels or {}
    fluid = scans[scans["truth_pixels"] > 0]
    if fluid.empty:
        table = pd.DataFrame(columns=list(run_dirs), dtype=float)
    else:
        table = fluid.pivot_table(index="subject", columns="run", values="dice",
                                  aggfunc="mean").reindex(columns=list(run_dirs))
    return (100.0 * table).rename(columns=lambda k: labels.get(k, k))


def patient_tests(per_patient: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The claim "reference beats each other run" with the patient as the unit.

    per_patient: patient_dice output; reference: one of its columns. One row per other
    column: patients (both runs scored), ahead / behind (patients on which the reference's
    mean Dice is higher / lower; equal ones count in neither), mean_diff (reference minus
    other, percent points, averaged over patients), p_sign (two-sided exact sign test over
    ahead + behind; NaN when no patient differs), and the patient on which the reference
    does worst relative to the other, with that difference.
    """
    if reference not in per_patient.columns:
        raise ValueError(f"no per-patient Dice for {reference!r}; "
                         f"have {list(per_patient.columns)}")
    rows = []
    for other in per_patient.columns.drop(reference):
        pair = per_patient[[reference, other]].dropna()
        diff = np.round(pair[reference] - pair[other], 9)
        ahead, behind = int((diff > 0).sum()), int((diff < 0).sum())
        p = (stats.binomtest(ahead, ahead + behind).pvalue if ahead + behind
             else float("nan"))
        worst = diff.idxmin() if len(diff) else None
        rows.append({"comparison": f"{reference} vs {other}", "patients": len(pair),
                     "ahead": ahead, "behind": behind,
                     "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
                     "p_sign": float(p), "worst patient": worst,
                     "worst diff": float(diff.min()) if len(diff) else float("nan")})
    return pd.DataFrame(rows).set_index("comparison")


def robustness_table(run_dirs: dict, reference, labels: dict | None = None) -> pd.DataFrame:
    """The claim "reference is the most robust to noise", tested on the change itself: per
    scan, Dice on the noisy B-scan minus Dice on the clean one (same model, paired_dice's rule
    for fluid-free scans), reference's change against each other run's (compare_paired; a
    positive median_diff: the reference loses less or gains more), over all scans and over
    the fluid-positive ones (index: scans, comparison). Over all scans a run that marks
    false fluid on clean fluid-free scans and less of it under noise "gains" there, so the
    fluid-scan rows are the cleaner measure. Runs without a finished fold are left out; without
    the reference or anything to compare it with the table is empty."""
    clean, noisy = scan_scores(run_dirs, "clean"), scan_scores(run_dirs, "noisy")
    others = _others_scored(clean, run_dirs, reference)
    if not others:
        return _empty_claims()
    runs = [reference, *others]
    parts = {}
    for scans_name, select in (("all scans", lambda t: t), ("fluid scans", _fluid_scans)):
        change = paired_dice(select(noisy), runs) - paired_dice(select(clean), runs)
        parts[scans_name] = compare_paired(change.dropna(), reference, others, labels)
    return pd.concat(parts, names=["scans"])
