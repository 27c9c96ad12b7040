"""oct_seg.reporting.significance: Wilcoxon signed-rank on hand-computed cases and against
scipy, Holm's correction by hand, per-scan Dice pairing and the verdicts."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from oct_seg.reporting import significance as S


def test_all_positive_differences_give_the_exact_smallest_p():
    # 6 pairs, every difference positive: W- = 0, exact two-sided p = 2 / 2^6
    r = S.wilcoxon_pair([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0])
    assert r["p"] == pytest.approx(2 / 64)
    assert (r["n"], r["n_nonzero"], r["w_plus"], r["w_minus"]) == (6, 6, 21.0, 0.0)
    assert r["median_diff"] == pytest.approx(3.5)
    swapped = S.wilcoxon_pair([0] * 6, [1, 2, 3, 4, 5, 6])
    assert (swapped["w_plus"], swapped["w_minus"]) == (0.0, 21.0)
    assert swapped["p"] == pytest.approx(2 / 64)


def test_zeros_are_dropped_and_tied_ranks_averaged():
    # d = a - b = [0, 0, 1, -2, 3, 3, 4, -5, 6, 7]: 8 nonzero; |d| ranks 1, 2, 3.5, 3.5, 5, 6,
    # 7, 8 -> W- = 2 + 6 = 8, W+ = 36 - 8 = 28
    b = np.array([0.5, 0.2, 0.1, 0.4, 0.0, 0.1, 0.2, 0.6, 0.1, 0.0])
    d = np.array([0, 0, 1, -2, 3, 3, 4, -5, 6, 7]) / 10.0
    r = S.wilcoxon_pair(b + d, b)
    assert (r["n"], r["n_nonzero"]) == (10, 8)
    assert (r["w_plus"], r["w_minus"]) == pytest.approx((28.0, 8.0))
    assert r["median_diff"] == pytest.approx(0.2)  # sorted: ..., 0, 1, 3, ... -> (1 + 3) / 2
    # scipy on the differences themselves, zeros dropped (wilcox), two-sided
    assert r["p"] == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def test_p_matches_scipy_on_fixed_dice_vectors():
    a = np.array([0.81, 0.64, 0.0, 0.77, 0.52, 0.91, 0.33, 0.70, 1.0, 0.45, 0.60, 0.88])
    b = np.array([0.75, 0.66, 0.0, 0.70, 0.40, 0.85, 0.30, 0.71, 1.0, 0.20, 0.58, 0.80])
    r = S.wilcoxon_pair(a, b)
    expected = stats.wilcoxon(a - b, zero_method="wilcox", alternative="two-sided").pvalue
    assert r["n_nonzero"] == 10 and r["p"] == pytest.approx(expected)
    assert 0.0 < r["p"] < 0.05  # 8 of 10 differences positive, the larger ones


def test_too_few_differing_pairs_are_not_tested():
    r = S.wilcoxon_pair([1, 1, 1, 0.5, 0.6, 0.7, 0.8, 0.9], [1, 1, 1, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert r["n_nonzero"] == 5 and np.isnan(r["p"])
    assert S.verdict({**r, "p_holm": np.nan}, "A", "B").startswith("not testable: only 5")
    with pytest.raises(ValueError, match="finite"):
        S.wilcoxon_pair([1.0, np.nan], [1.0, 0.0])
    with pytest.raises(ValueError, match="one length"):
        S.wilcoxon_pair([1.0, 2.0], [1.0])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    np.testing.assert_allclose(S.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # NaN (not tested) is not one of the m tests: m = 2
    out = S.holm([0.02, np.nan, 0.5])
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.5)
    np.testing.assert_allclose(S.holm([0.6, 0.9]), [1.0, 1.0])


def _scans(run, dice, truth, pred):
    n = len(dice)
    return pd.DataFrame({"run": run, "fold": "fold_0", "name": [f"s{i}" for i in range(n)],
                         "dice": dice, "truth_pixels": truth, "pred_pixels": pred})


def test_paired_dice_scores_empty_scans_by_whether_fluid_was_predicted():
    scans = pd.concat([_scans("a", [0.5, np.nan, 0.0], [10, 0, 0], [10, 0, 3]),
                       _scans("b", [0.7, 0.0, np.nan], [10, 0, 0], [10, 4, 0])])
    wide = S.paired_dice(scans, ["a", "b"])
    np.testing.assert_allclose(wide["a"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(wide["b"], [0.7, 0.0, 1.0])
    with pytest.raises(ValueError, match="no per-scan scores"):
        S.paired_dice(scans, ["a", "c"])


def test_claim_tests_verdicts_and_fluid_only():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 12)
    truth = [100] * 10 + [0, 0]
    ref = _scans("ref", np.r_[base[:10] + 0.1, np.nan, np.nan], truth, [100] * 10 + [0, 0])
    worse = _scans("worse", np.r_[base[:10], 0.0, 0.0], truth, [100] * 10 + [5, 5])
    better = _scans("better", np.r_[base[:10] + 0.2, np.nan, np.nan], truth, [100] * 10 + [0, 0])
    same = _scans("same", np.r_[base[:10] + 0.1 + np.tile([0.01, -0.01], 5), np.nan, np.nan],
                  truth, [100] * 10 + [0, 0])
    scans = pd.concat([ref, worse, better, same])
    t = S.claim_tests(scans, "ref", ["worse", "better", "same"], labels={"ref": "Ref"})
    assert list(t.index) == ["Ref vs worse", "Ref vs better", "Ref vs same"]
    assert t.loc["Ref vs worse", "n"] == 12 and t.loc["Ref vs worse", "n_nonzero"] == 12
    assert t.loc["Ref vs worse", "verdict"].startswith("supported: Ref higher")
    assert t.loc["Ref vs better", "verdict"].startswith("not supported: better higher")
    assert t.loc["Ref vs same", "verdict"].startswith("no significant difference")
    assert t.loc["Ref vs better", "median_diff"] == pytest.approx(-10.0)  # percent points
    np.testing.assert_allclose(t["p_holm"], S.holm(t["p"]))
    fluid = S.claim_tests(scans, "ref", ["worse"], fluid_only=True)
    assert fluid["n"].iloc[0] == 10
    # a run that scored only scans s0-s5 (some folds committed) is tested on those six; the
    # other comparisons keep all their scans
    partial = _scans("partial", np.r_[base[:6], [np.nan] * 6], truth, [100] * 10 + [0, 0])
    partial = partial[partial["name"].isin([f"s{i}" for i in range(6)])]
    t = S.claim_tests(pd.concat([scans, partial]), "ref", ["worse", "partial"])
    assert list(t["n"]) == [12, 6]
    expected = stats.wilcoxon(base[:6] + 0.1 - base[:6], zero_method="wilcox").pvalue
    assert t.loc["ref vs partial", "p"] == pytest.approx(expected)
    assert t.loc["ref vs worse", "p"] == pytest.approx(S.claim_tests(
        scans, "ref", ["worse"]).loc["ref vs worse", "p"])


def test_claim_table_reads_run_folders_and_leaves_out_runs_without_folds(tmp_path):
    truth = [100] * 8 + [0, 0]
    runs = {}
    for name, shift, pred_empty in (("ref", 0.2, 0), ("other", 0.0, 7)):
        run = tmp_path / name
        (run / "fold_0").mkdir(parents=True)
        (run / "fold_0" / "fold.json").write_text("{}")
        dice = np.r_[np.linspace(0.3, 0.6, 8) + shift, np.nan if not pred_empty else 0.0,
                     np.nan if not pred_empty else 0.0]
        _scans(name, dice, truth, [100] * 8 + [pred_empty] * 2).drop(
            columns=["run", "fold"]).to_csv(run / "fold_0" / "val_scores_noisy.csv", index=False)
        runs[name] = run
    runs["untrained"] = tmp_path / "absent"
    t = S.claim_table(runs, "ref", "noisy")
    assert list(t.index) == [("all scans", "ref vs other"), ("fluid scans", "ref vs other")]
    assert list(t["n"]) == [10, 8]
    assert t["verdict"].str.startswith("supported").all()
    assert S.claim_table({"ref": runs["ref"]}, "ref", "noisy").empty
    assert S.claim_table(runs, "untrained", "noisy").empty


def _run_folder(root, name, folds):
    """A run folder with one finished fold per item of folds: (subject, dice, truth_pixels)
    rows written as that fold's val_scores_clean.csv."""
    for k, rows in enumerate(folds):
        fold = root / name / f"fold_{k}"
        fold.mkdir(parents=True)
        (fold / "fold.json").write_text("{}")
        pd.DataFrame([{"name": f"s{subject}_{i}", "subject": subject, "dice": dice,
                       "truth_pixels": truth, "pred_pixels": truth}
                      for i, (subject, dice, truth) in enumerate(rows)]).to_csv(
            fold / "val_scores_clean.csv", index=False)
    return root / name


def test_patient_dice_averages_fluid_scans_per_patient_by_hand(tmp_path):
    # patient 1: fluid scans 0.4 and 0.8 -> 60; its fluid-free scan (NaN) is not counted;
    # patient 2 (the second fold): one fluid scan 0.5 -> 50
    ref = _run_folder(tmp_path, "ref", [[(1, 0.4, 10), (1, 0.8, 20), (1, np.nan, 0)],
                                        [(2, 0.5, 30)]])
    other = _run_folder(tmp_path, "other", [[(1, 0.7, 10), (1, 0.7, 20), (1, 0.0, 0)]])
    table = S.patient_dice({"ref": ref, "other": other, "absent": tmp_path / "none"},
                           labels={"ref": "Ref"})
    assert list(table.columns) == ["Ref", "other", "absent"] and list(table.index) == [1, 2]
    assert table["absent"].isna().all()
    assert table.loc[1, "Ref"] == pytest.approx(60.0) and table.loc[2, "Ref"] == pytest.approx(50.0)
    assert table.loc[1, "other"] == pytest.approx(70.0) and np.isnan(table.loc[2, "other"])


def test_patient_tests_sign_test_by_hand():
    # ref ahead of "a" on all 6 patients: exact two-sided p = 2 / 2^6; against "b" ahead on 4,
    # level on 1 (not counted), behind on 1 (patient 6, by 30 points): n = 5, two-sided
    # p = P(X >= 4) + P(X <= 1) = (5 + 1) / 2^5 + (1 + 5) / 2^5 = 0.375
    per_patient = pd.DataFrame({"ref": [60, 70, 80, 50, 40, 30],
                                "a": [50, 60, 70, 40, 30, 20],
                                "b": [50, 60, 70, 40, 40, 60]}, index=[1, 2, 3, 4, 5, 6])
    t = S.patient_tests(per_patient, "ref")
    a, b = t.loc["ref vs a"], t.loc["ref vs b"]
    assert (a["patients"], a["ahead"], a["behind"]) == (6, 6, 0)
    assert a["p_sign"] == pytest.approx(2 / 64) and a["mean_diff"] == pytest.approx(10.0)
    assert (b["ahead"], b["behind"], b["worst patient"]) == (4, 1, 6)
    assert b["p_sign"] == pytest.approx(12 / 32) and b["worst diff"] == pytest.approx(-30.0)
    assert b["p_sign"] == pytest.approx(stats.binomtest(4, 5).pvalue)
    untrained = S.patient_tests(per_patient.assign(c=np.nan), "c").loc["c vs a"]
    assert untrained["patients"] == 0 and np.isnan(untrained["p_sign"])
    with pytest.raises(ValueError, match="no per-patient Dice for 'c'"):
        S.patient_tests(per_patient, "c")


def test_robustness_table_tests_the_clean_to_noisy_change_per_scan(tmp_path):
    # 8 fluid scans: "ref" keeps its Dice under noise, "other" loses 0.1 on each; 2 fluid-free
    # scans: "other" marks fluid on them clean (score 0) and not with noise (score 1), so it
    # "gains" 1 there while "ref" (empty both times) stays at 1.
    truth = [100] * 8 + [0, 0]
    base = np.linspace(0.4, 0.75, 8)
    condition_scores = {"ref": {"clean": (np.r_[base, np.nan, np.nan], [100] * 8 + [0, 0]),
                                "noisy": (np.r_[base, np.nan, np.nan], [100] * 8 + [0, 0])},
                        "other": {"clean": (np.r_[base, 0.0, 0.0], [100] * 8 + [9, 9]),
                                  "noisy": (np.r_[base - 0.1, np.nan, np.nan],
                                            [100] * 8 + [0, 0])}}
    runs = {}
    for name, by_condition in condition_scores.items():
        fold = tmp_path / name / "fold_0"
        fold.mkdir(parents=True)
        (fold / "fold.json").write_text("{}")
        for condition, (dice, pred) in by_condition.items():
            _scans(name, dice, truth, pred).drop(columns=["run", "fold"]).to_csv(
                fold / f"val_scores_{condition}.csv", index=False)
        runs[name] = tmp_path / name
    t = S.robustness_table(runs, "ref", labels={"ref": "Ref"})
    fluid = t.loc[("fluid scans", "Ref vs other")]
    assert (fluid["n"], fluid["n_nonzero"]) == (8, 8)
    assert fluid["median_diff"] == pytest.approx(10.0)
    assert fluid["p"] == pytest.approx(2 / 2 ** 8)  # all 8 differences positive, exact
    assert fluid["verdict"].startswith("supported: Ref higher")
    every = t.loc[("all scans", "Ref vs other")]
    d = np.r_[[0.1] * 8, -1.0, -1.0]  # ref's change minus other's, per scan
    assert (every["n"], every["median_diff"]) == (10, pytest.approx(10.0))
    assert every["p"] == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    assert S.robustness_table({"ref": runs["ref"]}, "ref").empty
