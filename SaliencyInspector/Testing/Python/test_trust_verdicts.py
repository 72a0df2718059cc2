"""Trust verdicts as measurements (scoring/statistics.py, scoring/trust.py, scoring/trust_measures.py):
n, the statistic and its 95 % bootstrap interval over cases; INCONCLUSIVE when the interval straddles
the line or n is small; the baseline compares different patients as arrays on the model-input grid."""

import numpy as np
import pytest
from scipy import ndimage

from saliency_inspector.scoring import statistics as st
from saliency_inspector.scoring import trust
from saliency_inspector.io.volume import Volume


# ---- the statistics --------------------------------------------------------------------------------
def test_bootstrap_ci_of_the_mean_has_the_normal_width_and_is_seeded():
    x = np.random.default_rng(0).normal(3.0, 2.0, 400)
    ci = st.bootstrap_ci(x, seed=0)
    half = 1.96 * x.std() / np.sqrt(x.size)  # the textbook interval of a mean
    assert ci.n == 400 and ci.value == pytest.approx(x.mean())
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.1)
    assert ci.low < x.mean() < ci.high
    assert st.bootstrap_ci(x, seed=0) == ci and st.bootstrap_ci(x, seed=1) != ci
    np.random.seed(5)  # numpy's global state plays no part
    assert st.bootstrap_ci(x, seed=0) == ci
    assert st.bootstrap_ci(x, statistic=np.median).value == pytest.approx(np.median(x))
    one = st.bootstrap_ci([0.7])
    assert one.n == 1 and one.low == one.high == 0.7


def test_pair_bootstrap_resamples_cases_and_weights_pairs_by_their_counts():
    values = np.array([0.1, 0.5, 0.9])
    pairs = [(0, 1), (0, 2), (1, 2)]
    samples = st.pair_mean_samples(values, pairs, 3, resamples=5, seed=4)
    counts = np.random.default_rng(4).multinomial(3, [1 / 3] * 3, size=5)  # the same draws of cases
    for c, got in zip(counts, samples):
        # the definition: every pair of two drawn cases (distinct positions) whose cases form a pair
        drawn = np.repeat(np.arange(3), c)
        hits = [values[pairs.index((min(a, b), max(a, b)))] for i, a in enumerate(drawn) for b in drawn[i + 1:]
                if a != b]
        assert (np.isnan(got) and not hits) or got == pytest.approx(np.mean(hits))
    # pairs that share one odd case: resampling cases widens the interval over resampling pairs
    n = 8
    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    v = np.array([0.9 if 0 in p else 0.3 for p in all_pairs])
    by_cases = st.bootstrap_pairs_ci(v, all_pairs, n)
    by_pairs = st.bootstrap_ci(v)
    assert by_cases.high - by_cases.low > 1.5 * (by_pairs.high - by_pairs.low)


@pytest.mark.parametrize("low, high, higher, n, expected", [
    (0.1, 0.3, True, 10, "pass"), (-0.3, -0.1, True, 10, "fail"), (-0.1, 0.2, True, 10, "inconclusive"),
    (-0.3, -0.1, False, 10, "pass"), (0.1, 0.3, False, 10, "fail"), (0.1, 0.3, True, 3, "inconclusive"),
    (float("nan"), 0.3, True, 10, "inconclusive")])
def test_verdict_from_interval(low, high, higher, n, expected):
    assert st.verdict_from_interval(low, high, 0.0, higher, n, min_n=5) == expected


# ---- the judges -------------------------------------------------------------------------------------
def smooth(seed, shape=(16, 20, 24)):
    return ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.5)


def curve_to(last_map, original):
    return trust.randomization_curve([("original", Volume(original)), ("head", Volume(last_map))], "m")


def test_randomization_is_inconclusive_inside_the_baseline_interval_and_with_few_pairs():
    maps = [smooth(s) for s in range(8)]
    base = trust.cohort_baseline(maps)  # 8 unrelated cases: 28 pairs
    assert base.n_pairs == 28 and base.n_cases == 8 and base.interval.low < base.ssim < base.interval.high
    original = maps[0]
    far = curve_to(smooth(100), original)  # an unrelated map: as similar as two cases are
    v = trust.judge_all({"m": trust.Evidence(curve=far, baseline=base)})["m"]["randomization"]
    assert v.interval[0] < 0 < v.interval[1] and v.verdict == "inconclusive" and v.n == 28
    near = curve_to(original + 0.05 * smooth(101), original)  # barely changed: clearly above the baseline
    assert trust.judge_all({"m": trust.Evidence(curve=near, baseline=base)})["m"]["randomization"].verdict == "fail"
    anti = curve_to(-original, original)  # ReLU of the negation: below every pair of cases
    v = trust.judge_all({"m": trust.Evidence(curve=anti, baseline=base)})["m"]["randomization"]
    assert v.verdict == "pass" and v.interval[1] < 0 and v.estimate == pytest.approx(v.value - v.baseline)
    few = trust.cohort_baseline(maps[:4])  # 6 pairs < 10
    v = trust.judge_all({"m": trust.Evidence(curve=anti, baseline=few)})["m"]["randomization"]
    assert v.verdict == "inconclusive" and v.n == 6 and "fewer than 10" in v.note


def auprc(ap):
    return trust.Auprc(ap, ap)


def hand_made(map_ap, uniform, ct, prior):
    return trust.Localization(map=auprc(map_ap), uniform=auprc(uniform), prevalence=uniform,
                              ct_intensity=auprc(ct), location_prior=auprc(prior))


def test_localization_fails_against_the_location_prior_when_it_is_the_strongest_baseline():
    loc = hand_made(0.5, 0.1, 0.2, 0.7)
    jitter = np.random.default_rng(0).normal(0, 0.02, (6, 4))
    more = [hand_made(*(np.array([0.5, 0.1, 0.2, 0.7]) + j)) for j in jitter[1:]]
    v = trust.judge_all({"m": trust.Evidence(localization=loc, localization_cases=more)})["m"]["localization"]
    assert v.details["strongest_baseline"] == "location_prior"
    assert v.verdict == "fail" and v.n == 6 and v.interval[1] < 0
    assert v.baseline == pytest.approx(np.mean([0.7] + [x.location_prior.average_precision for x in more]))
    # the same case alone: below the minimum of 5 cases, INCONCLUSIVE, saying what it shows
    one = trust.judge_all({"m": trust.Evidence(localization=loc)})["m"]["localization"]
    assert one.verdict == "inconclusive" and one.n == 1 and one.details["strongest_baseline"] == "location_prior"
    assert "does not beat the location_prior baseline" in one.note
    # without the prior, the CT intensity is the line, and the map beats it on every case
    no_prior = [trust.Localization(map=x.map, uniform=x.uniform, prevalence=0.1, ct_intensity=x.ct_intensity)
                for x in [loc] + more]
    v = trust.judge_all({"m": trust.Evidence(localization=no_prior[0], localization_cases=no_prior[1:])})["m"]
    assert v["localization"].verdict == "pass" and v["localization"].details["strongest_baseline"] == "ct_intensity"


def test_the_card_says_n_the_interval_and_inconclusive_in_json_text_and_html(tmp_path):
    from saliency_inspector.view.trust_report import write_trust_report

    maps = [smooth(s) for s in range(8)]
    base = trust.cohort_baseline(maps)
    ev = trust.Evidence(curve=curve_to(smooth(100), maps[0]), baseline=base)
    card = trust.TrustCard(rows=trust.judge_all({"m": ev}), curves={"m": ev.curve},
                           context={"uncertainty": "bootstrap over cases (test)"})
    data = card.to_dict()["methods"]["m"]["randomization"]
    assert data["verdict"] == "inconclusive" and data["n"] == 28 and len(data["interval"]) == 2
    assert "baseline" in data["statistic"] and data["min_n"] == 10
    text = card.format()
    assert "INCONCLUSIVE" in text and "n=28" in text and "Δ" in text
    html = write_trust_report(tmp_path / "trust.html", card).read_text()
    assert "inconclusive" in html and "n 28" in html and "INCONCLUSIVE when it straddles" in html


# ---- the baseline: different patients as arrays on the model-input grid -------------------------------
def test_baseline_ignores_origins_spacing_and_direction_of_the_maps():
    maps = [Volume(np.maximum(smooth(s), 0).astype(np.float32), spacing=(1.0, 1.0, 2.0)) for s in range(5)]
    reference = trust.cohort_baseline(maps)
    for shift in (0.0, 100.0, 1000.0):
        moved = list(maps)
        moved[2] = Volume(maps[2].array, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, shift))
        got = trust.cohort_baseline(moved)
        assert got.ssim == pytest.approx(reference.ssim, abs=1e-12) and got.ssim_values == reference.ssim_values


@pytest.mark.slow
def test_card_baseline_is_unchanged_when_a_case_moves_or_is_stored_flipped():
    """Through the whole card: a cohort case's CT moved by 0, 100 or 1000 mm along z, or stored
    flipped along x (the same physical CT): the same model-input arrays, the same baseline."""
    import saliency_inspector as si
    from saliency_inspector.synth.phantom import make_phantom
    from saliency_inspector.workflows.trust import run_trust

    demo = si.load_classifier("demo", device="cpu")
    case = make_phantom(seed=5, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8)
    others = [make_phantom(seed=s, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8).ct for s in (21, 22, 23, 24)]

    def baseline(cohort):
        row = run_trust(case.ct, [demo, demo], methods=["hirescam"], class_name="lung_left", cohort=cohort,
                        randomize=False).card.rows["hirescam"]
        return row["repeatability"]

    reference = baseline(others)
    assert reference.n == 10 and reference.details["baseline_interval"]["n"] == 10
    ct = others[1]
    flipped = Volume(ct.array[:, :, ::-1].copy(), ct.spacing,
                     (ct.origin[0] + (ct.shape[2] - 1) * ct.spacing[0], ct.origin[1], ct.origin[2]),
                     ct.direction @ np.diag([-1.0, 1.0, 1.0]))
    moved = [Volume(ct.array, ct.spacing, (ct.origin[0], ct.origin[1], ct.origin[2] + d), ct.direction)
             for d in (0.0, 100.0, 1000.0)]
    for variant in moved + [flipped]:
        got = baseline([others[0], variant, others[2], others[3]])
        assert got.baseline == pytest.approx(reference.baseline, abs=1e-9)
    # a cohort whose z-origins differ by a metre works
    spread = [Volume(c.array, c.spacing, (c.origin[0], c.origin[1], 500.0 * k), c.direction) for k, c in enumerate(others)]
    assert baseline(spread).baseline == pytest.approx(reference.baseline, abs=1e-9)
