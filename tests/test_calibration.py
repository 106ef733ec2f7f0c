"""The NumPy/SciPy calibration: p-values, tails, combination, the JSON artifact."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from anomaly.calibration.artifact import Calibration
from anomaly.calibration.choice import auroc, choose_simplest
from anomaly.calibration.combine import combination_statistic
from anomaly.calibration.distribution import TailFittedDistribution
from anomaly.calibration.fit import choose_combination, fit_calibration
from anomaly.calibration.promise import Promise
from anomaly.calibration.scored import ScoredSet
from anomaly.config import ScoringConfig
from anomaly.errors import AnomalyError


def gamma_scores(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).gamma(shape=2.0, scale=1.0, size=count)


def test_pvalues_of_fresh_normal_scores_are_uniform():
    distribution = TailFittedDistribution.fit(gamma_scores(5000, seed=0))
    assert stats.kstest(distribution.pvalue(gamma_scores(1000, seed=1)), "uniform").pvalue > 0.05
    pvalues = distribution.pvalue(gamma_scores(50_000, seed=2))
    for alpha in (0.01, 0.05, 0.2):
        assert abs(np.mean(pvalues < alpha) - alpha) < 0.3 * alpha


def test_tail_is_graded_and_positive_beyond_the_sample_maximum():
    sample = gamma_scores(500, seed=2)
    distribution = TailFittedDistribution.fit(sample)
    beyond = sample.max() + np.array([0.1, 1.0, 3.0, 6.0])
    pvalues = distribution.pvalue(beyond)
    assert np.all(pvalues > 0) and np.all(pvalues < 2 / (len(sample) + 1))
    assert np.all(np.diff(pvalues) < 0) and pvalues[-1] < pvalues[0] / 10
    # Against Gamma(2)'s true survival: conservative (never below the truth), yet within 100x.
    truth = stats.gamma.sf(beyond, 2.0)
    assert np.all((pvalues >= truth) & (pvalues < 100 * truth))


def test_score_at_pvalue_inverts_pvalue_in_body_and_tail():
    distribution = TailFittedDistribution.fit(gamma_scores(800, seed=3))
    for alpha in (0.5, 0.2, 0.05, 0.01, 1e-4):
        threshold = distribution.score_at_pvalue(alpha)
        assert distribution.pvalue(threshold) == pytest.approx(alpha, rel=0.02)


def test_tail_fit_steadies_the_threshold_compared_with_the_empirical_quantile():
    """The realised false-positive rate of a 1% threshold, over many calibration samples of 600:
    the generalised Pareto tail (fitted on the top 10%) scatters less than the empirical quantile."""
    realised = {"tail": [], "empirical": []}
    for seed in range(300):
        sample = gamma_scores(600, seed=100 + seed)
        realised["tail"].append(stats.gamma.sf(TailFittedDistribution.fit(sample).score_at_pvalue(0.01), 2.0))
        realised["empirical"].append(stats.gamma.sf(np.quantile(sample, 0.99), 2.0))
    assert np.mean(realised["tail"]) == pytest.approx(0.01, rel=0.15)
    assert np.std(realised["tail"]) < 0.9 * np.std(realised["empirical"])


def test_pvalues_below_the_sample_minimum_are_one():
    distribution = TailFittedDistribution.fit(gamma_scores(100, seed=4) + 1.0)
    assert distribution.pvalue(0.0) == 1.0


def test_fisher_statistic_matches_scipy():
    rng = np.random.default_rng(5)
    first, second = rng.uniform(size=50), rng.uniform(size=50)
    ours = combination_statistic(first, second, "fisher")
    theirs = [stats.combine_pvalues([a, b], method="fisher").statistic for a, b in zip(first, second)]
    assert np.allclose(ours, theirs)
    assert np.allclose(combination_statistic(first, second, "latent"), -np.log(second))
    assert np.allclose(combination_statistic(first, second, "reconstruction"), -np.log(first))


def correlated_scores(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=count)
    return np.exp(shared + 0.3 * rng.normal(size=count)), 5 + shared + 0.3 * rng.normal(size=count)


def make_calibration(seed: int = 6) -> Calibration:
    reconstruction, latent = correlated_scores(2000, seed)
    fitted = {
        "reconstruction": TailFittedDistribution.fit(reconstruction),
        "latent": TailFittedDistribution.fit(latent),
    }
    statistic = combination_statistic(
        fitted["reconstruction"].pvalue(reconstruction), fitted["latent"].pvalue(latent), "fisher"
    )
    return Calibration(
        model_checksum="a" * 64,
        preprocessing={"image_size": [32, 32], "channels": 1},
        scoring={"combine": "fisher"},
        distributions={
            **fitted,
            "combined": TailFittedDistribution.fit(statistic),
            "pixel": TailFittedDistribution.fit(reconstruction),
        },
        target_fpr=0.01,
        sample_sizes={"calibration_images": 2000},
    )


def test_combined_decision_keeps_the_false_positive_rate_despite_correlation():
    calibration = make_calibration()
    reconstruction, latent = correlated_scores(50_000, seed=7)
    pvalues = calibration.pvalues(reconstruction, latent)
    assert 0.006 < calibration.is_anomaly(pvalues).mean() < 0.015
    # Plain chi-square Fisher would be anti-conservative for such strongly correlated signals.
    naive = stats.chi2.sf(pvalues.statistic, df=4)
    assert (naive < 0.01).mean() > 0.02
    assert np.all((pvalues.anomaly_score >= 0) & (pvalues.anomaly_score <= 1))


def test_calibration_round_trip(tmp_path: Path):
    calibration = make_calibration()
    digest = calibration.save(tmp_path / "calibration.json")
    assert len(digest) == 64
    loaded = Calibration.load(tmp_path / "calibration.json", expected_model_checksum="a" * 64)
    scores = correlated_scores(100, seed=8)
    assert np.array_equal(loaded.pvalues(*scores).combined, calibration.pvalues(*scores).combined)
    assert loaded.thresholds(0.05) == calibration.thresholds(0.05)
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert saved["schema_version"] == 1 and saved["thresholds"]["anomaly_score"] == pytest.approx(0.99)


def scored_set(reconstruction: np.ndarray, latent: np.ndarray, labels: np.ndarray) -> ScoredSet:
    count = len(labels)
    maps = np.repeat(reconstruction[:, None, None], 4, axis=1).repeat(4, axis=2)
    return ScoredSet(
        reconstruction,
        latent,
        latent[:, None],
        maps,
        labels,
        np.zeros_like(maps, dtype=bool),
        ["x"] * count,
        [str(i) for i in range(count)],
    )


def test_validation_auroc_measures_each_signal_on_normals_and_synthetic_anomalies(tmp_path: Path):
    held_out = scored_set(*correlated_scores(300, seed=9), np.zeros(300, dtype=np.int64))
    normal_reconstruction, normal_latent = correlated_scores(200, seed=10)
    anomalous_reconstruction, anomalous_latent = correlated_scores(200, seed=11)
    # The anomalies stand out in the latent distance only; reconstruction cannot tell them apart.
    labelled = scored_set(
        np.concatenate([normal_reconstruction, anomalous_reconstruction]),
        np.concatenate([normal_latent, anomalous_latent + 3.0]),
        np.array([0] * 200 + [1] * 200),
    )
    calibration = fit_calibration(
        held_out, ScoringConfig().model_dump(mode="json"), {}, "a" * 64, seed=0, labelled=labelled
    )
    auroc = calibration.validation_auroc
    assert auroc["latent"] > 0.97
    assert 0.4 < auroc["reconstruction"] < 0.6
    assert auroc["reconstruction"] < auroc["combined"] < 1.0
    assert "pixel" not in auroc  # these anomalies have no masks
    calibration.save(tmp_path / "calibration.json")
    assert Calibration.load(tmp_path / "calibration.json").validation_auroc == auroc
    masks = np.zeros_like(labelled.masks)
    masks[200:, :2, :2] = True  # each anomaly marks one corner, which its map raises
    maps = labelled.maps + 5.0 * masks
    with_masks = replace(labelled, maps=maps, masks=masks)
    pixel = fit_calibration(
        held_out, ScoringConfig().model_dump(mode="json"), {}, "a" * 64, seed=0, labelled=with_masks
    ).validation_auroc["pixel"]
    assert pixel == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel())) and pixel > 0.95
    assert (
        fit_calibration(held_out, ScoringConfig().model_dump(mode="json"), {}, "a" * 64, seed=0).validation_auroc
        is None
    )


def test_validation_auroc_is_also_given_per_kind_of_synthetic_anomaly():
    held_out = scored_set(*correlated_scores(300, seed=9), np.zeros(300, dtype=np.int64))
    normal_reconstruction, normal_latent = correlated_scores(200, seed=10)
    anomalous_reconstruction, anomalous_latent = correlated_scores(200, seed=11)
    # Blobs stand out in the latent distance; lines are indistinguishable from normals.
    labelled = scored_set(
        np.concatenate([normal_reconstruction, anomalous_reconstruction]),
        np.concatenate([normal_latent, anomalous_latent[:100] + 3.0, anomalous_latent[100:]]),
        np.array([0] * 200 + [1] * 200),
    )
    labelled.categories = ["good"] * 200 + ["synthetic_blob"] * 100 + ["synthetic_line"] * 100
    auroc = fit_calibration(
        held_out, ScoringConfig().model_dump(mode="json"), {}, "a" * 64, seed=0, labelled=labelled
    ).validation_auroc
    assert auroc["synthetic_blob.latent"] > 0.97 and 0.35 < auroc["synthetic_line.latent"] < 0.65
    assert auroc["synthetic_line.latent"] < auroc["latent"] < auroc["synthetic_blob.latent"]
    assert {key.split(".")[0] for key in auroc} == {
        "reconstruction",
        "latent",
        "combined",
        "synthetic_blob",
        "synthetic_line",
    }


def test_a_target_beyond_the_calibration_sample_is_flagged():
    calibration = make_calibration()  # 2000 held-out normals
    assert calibration.sample_size_warning() is None and calibration.sample_size_warning(0.001) is None
    assert calibration.sample_size_warning(0.0001) == (
        "the 0.01% false-positive target is below what 2000 calibration normal images can resolve (at least 0.05%): "
        "its threshold is extrapolated past every calibration score, so the realised rate can be several times the "
        "target; add normal images (anomaly calibrate --normals DIR) or ask for a larger target"
    )
    small = fit_calibration(
        scored_set(*correlated_scores(28, seed=3), np.zeros(28, dtype=np.int64)),
        ScoringConfig().model_dump(mode="json"),
        {},
        "a" * 64,
        seed=0,
    )
    assert (
        "the 1.00% false-positive target is below what 28 calibration normal images can resolve"
        in small.sample_size_warning()
    )
    assert small.sample_size_warning(0.05) is None
    promise = small.promise(0.05).to_dict()
    assert promise["calibration_normals"] == 28 and promise["warning"] is None
    assert promise["realised_fpr_low"] < 0.05 < promise["realised_fpr_high"]


def test_the_promised_range_holds_the_realised_rate_of_new_normals():
    """Calibrate on 300 normal scores many times over; the realised rate (exact: the scores are standard normal) falls
    inside the promised 95% range about 95% of the time, and the range narrows with more calibration normals."""
    inside = []
    for seed in range(300):
        sample = np.random.default_rng(seed).standard_normal(300)
        distribution = TailFittedDistribution.fit(sample)
        realised = stats.norm.sf(distribution.score_at_pvalue(0.02))
        low, high = Promise.of(0.02, 300, None).realised_rate_range
        inside.append(low <= realised <= high)
    assert 0.88 < np.mean(inside) <= 1.0
    narrow = Promise.of(0.02, 3000, None).realised_rate_range
    assert narrow[1] - narrow[0] < (high - low) / 2


def test_calibration_refuses_mismatch_and_damage(tmp_path: Path):
    path = tmp_path / "calibration.json"
    make_calibration().save(path)
    with pytest.raises(AnomalyError, match="belongs to model aaaaaaaaaaaa, not to this model bbbbbbbbbbbb"):
        Calibration.load(path, expected_model_checksum="b" * 64)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(AnomalyError, match="schema version 99"):
        Calibration.load(path)
    path.write_text("{not json")
    with pytest.raises(AnomalyError, match="is not valid JSON"):
        Calibration.load(path)
    with pytest.raises(AnomalyError, match="calibration file not found"):
        Calibration.load(tmp_path / "absent.json")


@pytest.mark.parametrize(("reconstruction_shift", "chosen"), [(0.0, "latent"), (3.0, "reconstruction")])
def test_auto_combination_is_chosen_on_the_labelled_validation_set(reconstruction_shift, chosen):
    held_out = scored_set(*correlated_scores(300, seed=9), np.zeros(300, dtype=np.int64))
    normal_reconstruction, normal_latent = correlated_scores(200, seed=10)
    anomalous_reconstruction, anomalous_latent = correlated_scores(200, seed=11)
    # Anomalies raise the latent distance; where they raise the reconstruction error far more, it ranks them best
    # alone, and where they do not raise it, it only adds noise.
    labelled = scored_set(
        np.concatenate([normal_reconstruction, anomalous_reconstruction + reconstruction_shift]),
        np.concatenate([normal_latent, anomalous_latent + 1.5]),
        np.array([0] * 200 + [1] * 200),
    )
    choice = choose_combination(held_out, labelled, seed=0)
    assert choice.chosen == chosen
    assert choice.best == chosen
    assert (
        choice.aurocs["fisher"] > choice.aurocs["latent"]
        if reconstruction_shift
        else choice.aurocs["reconstruction"] < 0.6
    )
    scoring = ScoringConfig(combine=chosen).model_dump(mode="json")
    calibration = fit_calibration(
        held_out, scoring, {}, "a" * 64, seed=0, labelled=labelled, choices=[choice.record("scoring.combine")]
    )
    assert calibration.validation_auroc["combined"] == pytest.approx(choice.aurocs[chosen])
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))).choices[0]["chosen"] == chosen
    with pytest.raises(AnomalyError, match="combine=auto is chosen before calibration"):
        fit_calibration(held_out, ScoringConfig(combine="auto").model_dump(mode="json"), {}, "a" * 64, seed=0)


def test_a_lead_within_the_validation_noise_keeps_the_simpler_candidate():
    """Two candidates whose validation AUROCs differ by about two pairs of images out of 40 x 40: the later one leads,
    but by less than the bootstrap interval's width, so the first (simpler) one is kept; the same lead on a set
    ten times larger is beyond the noise, and the later one is chosen."""

    def candidates(per_class: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rng = np.random.default_rng(seed)
        labels = np.repeat([0, 1], per_class)
        signal = rng.normal(size=2 * per_class) + 1.2 * labels
        sharper = signal + 0.25 * labels + rng.normal(scale=0.3, size=2 * per_class)
        return {"simple": signal, "elaborate": sharper}, labels

    scores, labels = candidates(40, seed=0)
    small = choose_simplest(scores, labels, seed=0)
    assert small.best == "elaborate" and small.aurocs["elaborate"] > small.aurocs["simple"]
    assert small.chosen == "simple" and small.lead_interval[0] <= 0 < small.lead_interval[1]
    scores, labels = candidates(400, seed=0)
    large = choose_simplest(scores, labels, seed=0)
    assert large.chosen == "elaborate" and large.lead_interval == (0.0, 0.0)
    assert (
        choose_simplest({3: scores["simple"], 2: scores["simple"] + 1e-12}, labels).chosen == 3
    )  # an exact tie: the first
    assert auroc(labels, scores["simple"]) == pytest.approx(roc_auc_score(labels, scores["simple"]))


def test_calibration_from_held_out_sets_scored_apart_equals_one_pass():
    """Held-out images scored on several workers, their sets concatenated in order, calibrate exactly as one pass."""
    held_out = scored_set(*correlated_scores(120, seed=12), np.zeros(120, dtype=np.int64))
    labelled = scored_set(*correlated_scores(80, seed=13), np.repeat([0, 1], 40))
    parts = [
        ScoredSet(
            held_out.reconstruction_scores[part],
            held_out.latent_distances[part],
            held_out.latents[part],
            held_out.maps[part],
            held_out.labels[part],
            held_out.masks[part],
            held_out.categories[part],
            held_out.names[part],
        )
        for part in (slice(0, 50), slice(50, 51), slice(51, 120))
    ]
    scoring = ScoringConfig().model_dump(mode="json")
    whole = fit_calibration(held_out, scoring, {}, "a" * 64, seed=0, labelled=labelled)
    merged = fit_calibration(ScoredSet.concatenate(parts), scoring, {}, "a" * 64, seed=0, labelled=labelled)
    assert merged.to_dict() == whole.to_dict()


def test_cross_fitted_latent_distances_join_the_latent_and_a_latent_decision(tmp_path: Path):
    """Out-of-fold latent distances of training normals count in the latent distribution; the combined one takes
    them when the decision reads the latent distance alone, and not for fisher, whose held-out pairs alone are
    honest."""
    held_out = scored_set(*correlated_scores(30, seed=3), np.zeros(30, dtype=np.int64))
    cross_fitted = correlated_scores(270, seed=4)[1]
    for combine, combined_count in (("latent", 300), ("fisher", 30)):
        scoring = ScoringConfig(combine=combine).model_dump(mode="json")
        calibration = fit_calibration(held_out, scoring, {}, "a" * 64, seed=0, cross_fitted_latent=cross_fitted)
        assert len(calibration.distributions["latent"].sample) == 300
        assert len(calibration.distributions["reconstruction"].sample) == 30
        assert len(calibration.distributions["combined"].sample) == combined_count
        assert (
            calibration.sample_sizes["cross_fitted_images"] == 270
            and calibration.sample_sizes["calibration_images"] == 30
        )
    # With 30 held-out normals 1% cannot be resolved; with the cross-fitted ones it can.
    assert calibration.sample_size_warning() is not None
    latent = fit_calibration(
        held_out,
        ScoringConfig(combine="latent").model_dump(mode="json"),
        {},
        "a" * 64,
        seed=0,
        cross_fitted_latent=cross_fitted,
    )
    assert latent.sample_size_warning() is None
