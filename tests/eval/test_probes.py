"""Probes, participant-level bootstrap and the pretrained-vs-random comparison."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from threadpoolctl import threadpool_limits

from fmtrain.eval.attentive import AttentiveProbe, channel_stats, fit_attentive_probe
from fmtrain.eval.bootstrap import (
    bootstrap_ci,
    bootstrap_distribution,
    paired_bootstrap_diff,
    participants_needed,
    participants_per_class_needed,
    too_few_for_interval,
)
from fmtrain.eval.linear_knn import knn_probe, linear_probe
from fmtrain.eval.metrics import METRICS, accuracy, auroc, balanced_accuracy, mae, r2
from fmtrain.eval.probe_table import format_table
from fmtrain.eval.probe_tasks import SplitTooSmallError, Task
from fmtrain.eval.probes import ATTENTIVE_LR_GRID, compare, run_probes

D = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The test problems are tiny; on a busy 2-core machine a second BLAS or OpenMP thread
    makes each solver step tens of times slower (thread spin), not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def _unit_centers(rng: np.random.Generator, n: int, norm: float) -> np.ndarray:
    c = rng.normal(size=(n, D))
    return norm * c / np.linalg.norm(c, axis=1, keepdims=True)


def _blobs(rng, centers, n_participants, per=2, tokens=4):
    """Participants with `per` samples each; every token is its class center plus noise."""
    y = np.repeat(rng.integers(0, len(centers), n_participants), per)
    groups = np.repeat(np.arange(n_participants), per)
    x = centers[y][:, None, :] + rng.normal(size=(len(y), tokens, D))
    return {"tokens": x, "pooled": x.mean(axis=1), "groups": groups, "label": y}


def _needle(rng, centers, pos_emb, n_participants, per=2, where=3):
    """The class lives in token `where` only; all tokens carry a fixed positional code
    (as encoder tokens do) plus noise of the same size as the signal."""
    y = np.repeat(rng.integers(0, len(centers), n_participants), per)
    groups = np.repeat(np.arange(n_participants), per)
    x = pos_emb[None] + rng.normal(size=(len(y), *pos_emb.shape))
    x[:, where] += centers[y]
    return {"tokens": x, "pooled": x.mean(axis=1), "groups": groups, "label": y}


@pytest.fixture(scope="module")
def separable():
    rng = np.random.default_rng(0)
    centers = _unit_centers(rng, 3, 6.0)
    return _blobs(rng, centers, 60), _blobs(rng, centers, 30)


# ------------------------------------------------------------------------------ metrics


def test_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    proba = rng.dirichlet(np.ones(3), 200)
    proba[np.arange(200), y] += 0.3  # better than chance, with ties-free scores
    proba /= proba.sum(axis=1, keepdims=True)
    assert accuracy(y, proba) == pytest.approx(skm.accuracy_score(y, proba.argmax(1)))
    assert balanced_accuracy(y, proba) == pytest.approx(
        skm.balanced_accuracy_score(y, proba.argmax(1))
    )
    assert auroc(y, proba) == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    yb = (y == 1).astype(int)
    pb = np.stack([1 - proba[:, 1], proba[:, 1]], axis=1)
    assert auroc(yb, pb) == pytest.approx(skm.roc_auc_score(yb, proba[:, 1]))
    assert auroc(yb, proba[:, 1]) == pytest.approx(skm.roc_auc_score(yb, proba[:, 1]))
    t, p = rng.normal(size=50), rng.normal(size=50)
    assert mae(t, p) == pytest.approx(skm.mean_absolute_error(t, p))
    assert r2(t, p) == pytest.approx(skm.r2_score(t, p))
    assert np.isnan(auroc(np.zeros(5, int), np.full((5, 3), 1 / 3)))
    assert np.isnan(r2(np.ones(5), np.arange(5.0)))


# ------------------------------------------------------------------------------- probes


def test_probes_separate_separable_blobs(separable):
    train, test = separable
    predictions = {
        "linear": linear_probe(
            train["pooled"], train["label"], test["pooled"], "classification",
            train_groups=train["groups"],
        ),
        "knn": knn_probe(train["pooled"], train["label"], test["pooled"], "classification"),
        "attentive": fit_attentive_probe(
            train["tokens"], train["label"], test["tokens"], "classification",
            train_groups=train["groups"],
        ).predictions,
    }  # fmt: skip
    for name, proba in predictions.items():
        assert proba.shape == (len(test["label"]), 3), name
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6, err_msg=name)
        assert balanced_accuracy(test["label"], proba) >= 0.95, name
        assert auroc(test["label"], proba) >= 0.98, name


def test_random_labels_score_at_chance():
    rng = np.random.default_rng(2)
    n_train, n_test = 300, 240
    split = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.normal(size=(n, 4, D))
        groups = np.repeat(np.arange(n // 2) + (0 if name == "train" else 10_000), 2)
        split[name] = {"tokens": x, "pooled": x.mean(1), "groups": groups,
                       "label": rng.integers(0, 3, n)}  # fmt: skip
    result = run_probes(
        split["train"], split["test"], [Task("label", "classification")], seed=0,
        n_boot=300, alpha=0.01, options={"attentive": {"epochs": 20}},
    )  # fmt: skip
    probes = result["tasks"]["label"]["probes"]
    assert set(probes) == {"linear", "knn", "attentive"}
    for name, scored in probes.items():
        ba = scored["metrics"]["balanced_accuracy"]
        assert ba["low"] <= 1 / 3 <= ba["high"], (name, ba)
        assert ba["high"] - ba["low"] < 0.25, (name, ba)  # an interval, not [0, 1]


def test_linear_probe_regression_linear_target_and_noise():
    rng = np.random.default_rng(3)
    x_train, x_test = rng.normal(size=(200, D)), rng.normal(size=(100, D))
    w = rng.normal(size=D)
    groups = np.repeat(np.arange(100), 2)
    y_train = x_train @ w + 0.1 * rng.normal(size=200)
    y_test = x_test @ w + 0.1 * rng.normal(size=100)
    pred = linear_probe(x_train, y_train, x_test, "regression", train_groups=groups)
    assert pred.shape == (100,)
    assert r2(y_test, pred) >= 0.95
    noise_pred = linear_probe(
        x_train, rng.normal(size=200), x_test, "regression", train_groups=groups
    )
    assert r2(rng.normal(size=100), noise_pred) <= 0.1


def test_attentive_regression_recovers_scaled_target():
    rng = np.random.default_rng(4)
    w = rng.normal(size=D)
    x_train, x_test = rng.normal(size=(200, 4, D)), rng.normal(size=(80, 4, D))
    # target far from zero mean and unit scale: exercises the standardisation round trip
    y_train = 50 + 10 * x_train.mean(1) @ w
    y_test = 50 + 10 * x_test.mean(1) @ w
    pred = fit_attentive_probe(
        x_train, y_train, x_test, "regression", train_groups=np.repeat(np.arange(100), 2)
    ).predictions
    assert r2(y_test, pred) >= 0.8
    assert abs(pred.mean() - y_test.mean()) < 0.3 * y_test.std()


def test_attentive_probe_finds_the_one_informative_token():
    rng = np.random.default_rng(5)
    centers = _unit_centers(rng, 3, 3.0)
    pos_emb = rng.normal(size=(16, D))
    train, test = _needle(rng, centers, pos_emb, 150), _needle(rng, centers, pos_emb, 60)
    pooled = linear_probe(
        train["pooled"],
        train["label"],
        test["pooled"],
        "classification",
        train_groups=train["groups"],
    )
    attentive = fit_attentive_probe(
        train["tokens"], train["label"], test["tokens"], "classification",
        train_groups=train["groups"],
    ).predictions  # fmt: skip
    ba_pooled = balanced_accuracy(test["label"], pooled)
    ba_attentive = balanced_accuracy(test["label"], attentive)
    assert ba_attentive >= 0.8
    assert ba_attentive >= ba_pooled + 0.25, (ba_attentive, ba_pooled)


def test_attentive_probe_sees_through_an_offset_every_token_shares():
    # The needle task again, with a per-channel offset 100x the signal shared by every
    # token, as a CNN's ReLU stages leave: per-token LayerNorm then maps every token to
    # nearly the same direction; standardising each channel with the train rows' statistics
    # (as the linear probe's scaler does) gives the probe its signal back.
    rng = np.random.default_rng(5)
    centers = _unit_centers(rng, 3, 3.0)
    pos_emb = rng.normal(size=(16, D))
    offset = rng.uniform(200, 400, size=D)
    train, test = _needle(rng, centers, pos_emb, 150), _needle(rng, centers, pos_emb, 60)
    shifted = [0.02 * t["tokens"] + offset for t in (train, test)]
    scores = {}
    for name, (fit_x, test_x) in {
        "plain": (train["tokens"], test["tokens"]),
        "shifted": shifted,
    }.items():
        probs = fit_attentive_probe(
            fit_x, train["label"], test_x, "classification", train_groups=train["groups"]
        ).predictions
        scores[name] = balanced_accuracy(test["label"], probs)
    # without the standardisation the shifted tokens scored chance (0.333) on this draw
    assert scores["plain"] >= 0.6, scores
    assert scores["shifted"] >= scores["plain"] - 0.02, scores


def test_channel_stats_are_those_of_the_chosen_rows_and_spare_constant_channels():
    rng = np.random.default_rng(1)
    tokens = torch.as_tensor(rng.normal(3.0, 2.0, size=(40, 5, 4)), dtype=torch.float32)
    tokens[:, :, 2] = 7.0  # a channel that never varies
    rows = np.arange(0, 40, 3)
    mean, std = channel_stats(tokens, rows, chunk=4)  # chunks smaller than the rows
    chosen = tokens[rows].flatten(0, 1).double()
    np.testing.assert_allclose(mean, chosen.mean(0), rtol=1e-5)
    expected = chosen.std(0, unbiased=False).numpy()
    expected[2] = 1.0
    np.testing.assert_allclose(std, expected, rtol=1e-4)


def test_knn_clips_k_and_uses_cosine_similarity():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(10, D)), rng.integers(0, 2, 10)
    np.testing.assert_allclose(
        knn_probe(x, y, x, "classification", k=50), knn_probe(x, y, x, "classification", k=10)
    )
    # scaling a feature vector does not move it under cosine similarity
    scaled = x * rng.uniform(0.1, 10, size=(10, 1))
    np.testing.assert_allclose(
        knn_probe(x, y, scaled, "classification", k=3), knn_probe(x, y, x, "classification", k=3)
    )
    # k=1 on the train set itself returns each row's own label
    assert (knn_probe(x, y, x, "classification", k=1).argmax(1) == y).all()


def test_attentive_probe_rejects_pooled_features_and_bad_heads():
    with pytest.raises(ValueError, match="num_heads"):
        AttentiveProbe(10, 3, num_heads=4)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        AttentiveProbe(16, 3)(torch.zeros(2, 16))


def test_same_seed_same_predictions(separable):
    train, test = separable
    args = (train["tokens"], train["label"], test["tokens"], "classification")
    first = fit_attentive_probe(*args, seed=7, train_groups=train["groups"], epochs=10).predictions
    again = fit_attentive_probe(*args, seed=7, train_groups=train["groups"], epochs=10).predictions
    other = fit_attentive_probe(*args, seed=8, train_groups=train["groups"], epochs=10).predictions
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    state = torch.random.get_rng_state()
    fit_attentive_probe(*args, seed=7, train_groups=train["groups"], epochs=1)
    assert torch.equal(state, torch.random.get_rng_state()), "caller's torch RNG was changed"
    lin = [linear_probe(train["pooled"], train["label"], test["pooled"], "classification", 3)
           for _ in range(2)]  # fmt: skip
    np.testing.assert_array_equal(*lin)


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_resamples_participants_not_rows():
    rng = np.random.default_rng(7)
    # 20 participants, 30 identical rows each: 20 independent values, not 600
    per_group = rng.normal(size=20)
    groups = np.repeat(np.arange(20), 30)
    pred = per_group[groups]

    def mean_pred(_, p):
        return float(p.mean())

    _, g_low, g_high = bootstrap_ci(mean_pred, pred, pred, groups, n_boot=500)
    _, r_low, r_high = bootstrap_ci(mean_pred, pred, pred, np.arange(600), n_boot=500)
    # row resampling pretends to have 30x the data: about sqrt(30) ≈ 5.5x narrower
    assert (g_high - g_low) > 3 * (r_high - r_low)
    assert g_low < per_group.mean() < g_high

    sizes = np.array([1, 2, 3, 5])
    uneven = np.repeat(np.arange(4), sizes)

    def whole_groups_only(y, _):
        counts = np.bincount(y, minlength=4)
        assert (counts % sizes == 0).all(), counts  # a participant's rows travel together
        return 0.0

    bootstrap_distribution(whole_groups_only, uneven, [uneven], uneven, n_boot=200)


def test_paired_difference_is_narrower_when_errors_are_shared():
    rng = np.random.default_rng(8)
    n = 200
    groups = np.repeat(np.arange(n // 2), 2)
    y = rng.normal(size=n)
    shared = 2.0 * rng.normal(size=n)  # hard cases: both predictors miss them alike
    pred_a = y + shared + 0.2 * rng.normal(size=n)
    pred_b = y + 1.2 * shared + 0.2 * rng.normal(size=n)
    diff, low, high = paired_bootstrap_diff(mae, y, pred_a, pred_b, groups, n_boot=500)
    assert diff == pytest.approx(mae(y, pred_a) - mae(y, pred_b))
    a = bootstrap_distribution(mae, y, [pred_a], groups, n_boot=500, seed=1)[:, 0]
    b = bootstrap_distribution(mae, y, [pred_b], groups, n_boot=500, seed=2)[:, 0]
    u_low, u_high = np.quantile(a - b, [0.025, 0.975])
    assert (high - low) < 0.5 * (u_high - u_low)
    assert high < 0  # a is better, and the paired interval can tell


def test_degenerate_resamples_are_counted_and_most_give_nan_bounds():
    rng = np.random.default_rng(9)
    groups = np.repeat(np.arange(10), 3)
    y = (groups == 0).astype(int)  # one positive participant: ~35% of resamples miss it
    score = y + rng.normal(size=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = bootstrap_ci(auroc, y, score, groups, n_boot=400)
    assert 0.2 * 400 < ci.n_degenerate < 0.5 * 400
    assert np.isfinite([ci.low, ci.high]).all()

    three = np.repeat(np.arange(3), 2)

    def needs_everyone(yt, _):
        # undefined unless all three participants were drawn: 1 - 3!/3^3 ≈ 78% degenerate
        return 1.0 if len(np.unique(yt)) == 3 else float("nan")

    with pytest.warns(RuntimeWarning, match="degenerate"):
        point, low, high = bootstrap_ci(needs_everyone, three, three, three, n_boot=400)
    assert point == 1.0
    assert np.isnan(low) and np.isnan(high)


# ----------------------------------------------------------------- run, compare, table


def test_run_probes_compare_and_table(separable):
    train, test = separable
    tasks = [Task("label", "classification"), Task("score", "regression")]
    rng = np.random.default_rng(10)
    train, test = (
        {**s, "score": 2.0 * s["pooled"][:, 0] + 0.1 * rng.normal(size=len(s["label"]))}
        for s in (train, test)
    )
    fast = {"attentive": {"epochs": 15}}
    pretrained = run_probes(train, test, tasks, seed=0, n_boot=200, options=fast)

    def random_features(split, seed):
        noise = np.random.default_rng(seed).normal(size=split["tokens"].shape)
        return {**split, "tokens": noise, "pooled": noise.mean(1)}

    randoms = [
        run_probes(random_features(train, s), random_features(test, s + 100), tasks, seed=s,
                   n_boot=200, probes=("linear", "knn"))
        for s in (1, 2)
    ]  # fmt: skip

    # plain, JSON-serialisable, with the raw predictions for later paired comparisons
    assert json.loads(json.dumps(pretrained)) == pretrained
    entry = pretrained["tasks"]["label"]
    assert entry["classes"] == [0, 1, 2] and len(entry["y_true"]) == entry["n_test"] == 60
    assert np.asarray(entry["probes"]["attentive"]["predictions"]).shape == (60, 3)
    assert set(pretrained["tasks"]["score"]["probes"]["linear"]["metrics"]) == {"mae", "r2"}

    comparison = compare(pretrained, randoms, n_boot=200)
    # attentive is missing from the random results, so only linear and knn are compared
    expected = 2 * len(METRICS["classification"]) + 2 * len(METRICS["regression"])
    assert len(comparison["rows"]) == expected
    for row in comparison["rows"]:
        gain = row["gain"]
        # a gain is an improvement: for MAE (lower is better) random − pretrained
        sign = 1 if row["higher_is_better"] else -1
        difference = row["pretrained"]["value"] - row["random"]["mean"]
        assert gain["value"] == pytest.approx(sign * difference)
        assert gain["low"] <= gain["value"] <= gain["high"]
        if row["metric"] in ("balanced_accuracy", "auroc", "r2"):
            assert gain["low"] > 0.3, row  # structure beats noise, and the interval says so
        if row["metric"] == "mae":
            # reported: a lower MAE printed as a negative "gain"; now it is a positive one
            assert difference < 0 and gain["low"] > 0, row
        assert row["significant"]
    table = format_table(comparison)
    assert "balanced_accuracy" in table and "mae (↓)" in table and "n=2" in table
    assert "gain, + = pretrained better" in table
    assert len(table.splitlines()) == expected + 3  # header, rule, rows, footnote
    marked = [line for line in table.splitlines() if line.endswith(" *")]
    assert len(marked) == expected  # every gain's interval excludes zero
    mae_row = next(line for line in table.splitlines() if "mae (↓)" in line)
    assert mae_row.split("]")[-2].split("[")[-1].startswith("+")  # the gain's interval


def test_run_probes_is_deterministic_and_drops_unlabelled_rows(separable):
    train, test = separable
    train = {**train, "score": train["pooled"][:, 1].copy()}
    test = {**test, "score": test["pooled"][:, 1].copy()}
    train["score"][:10] = np.nan
    tasks = [Task("score", "regression")]
    first = run_probes(train, test, tasks, seed=3, n_boot=50, options={"attentive": {"epochs": 3}})
    again = run_probes(train, test, tasks, seed=3, n_boot=50, options={"attentive": {"epochs": 3}})
    assert json.dumps(first) == json.dumps(again)
    assert first["tasks"]["score"]["n_train"] == len(train["score"]) - 10


def test_input_errors_name_the_problem(separable):
    train, test = separable
    test = {**test, "label": test["label"] + 1}  # class 3 never occurs in train
    with pytest.raises(ValueError, match="never occur in train"):
        run_probes(train, test, [Task("label", "classification")], probes=("knn",))
    with pytest.raises(KeyError, match="'age'"):
        run_probes(train, train, [Task("age", "regression")], probes=("knn",))
    with pytest.raises(ValueError, match="kind"):
        Task("label", "ordinal")


def test_attentive_learning_rate_is_chosen_on_held_out_training_participants():
    rng = np.random.default_rng(5)
    centers = _unit_centers(rng, 3, 6.0)
    # 30 test participants: enough of each class for an interval (too_few_for_interval)
    train, test = _blobs(rng, centers, 40), _blobs(rng, centers, 30)
    task = [Task("label", "classification")]
    fast = {"epochs": 5}
    chosen = run_probes(
        train, test, task, probes=("attentive",), n_boot=20, options={"attentive": fast}
    )
    info = chosen["tasks"]["label"]["probes"]["attentive"]["info"]
    assert info["lr"] in ATTENTIVE_LR_GRID and np.isfinite(info["best_val_loss"])
    fixed = run_probes(
        train, test, task, probes=("attentive",), n_boot=20,
        options={"attentive": {**fast, "lr": 1e-3}},
    )  # fmt: skip
    assert fixed["tasks"]["label"]["probes"]["attentive"]["info"]["lr"] == 1e-3


# ------------------------------------------------------- test sets too small for intervals


def test_the_minimum_test_sizes_follow_from_the_degenerate_resample_share():
    assert participants_needed(0.05) == 4  # 3^-2 = 11% > 2.5% >= 4^-3 = 1.6%
    assert participants_per_class_needed(2, 0.05) == 5  # ⌈ln 80⌉
    assert participants_per_class_needed(10, 0.05) == 6  # ⌈ln 400⌉
    groups = np.arange(8)
    # 3 + 3 participants: 2 * (1/2)^6 = 3.1% of resamples lack a class; 4 + 4: 0.8%
    assert "3.1% of participant-level bootstrap resamples would lack a class" in (
        too_few_for_interval("classification", np.repeat([0, 1], 3), groups[:6])
    )
    assert too_few_for_interval("classification", np.repeat([0, 1], 4), groups) is None
    # rows of one participant count once: 8 rows of 2 participants are still 2
    message = too_few_for_interval("regression", np.arange(8.0), np.repeat([0, 1], 4))
    assert "has 2 labelled participant(s)" in message and "at least 4" in message
    assert too_few_for_interval("regression", np.arange(4.0), groups[:4]) is None


def test_a_one_participant_test_split_is_refused_not_starred(separable):
    """Reported: a one-volume test split gave a table with a starred "significant" gain
    (every resample is that volume, so the interval had zero width)."""
    train, test = separable
    one = {k: np.asarray(v)[:1] for k, v in test.items()}
    one["score"] = one["pooled"][:, 0]
    train = {**train, "score": train["pooled"][:, 0]}
    with pytest.raises(SplitTooSmallError, match=r"1 labelled participant.*at least 4"):
        run_probes(train, one, [Task("score", "regression")], probes=("knn",), n_boot=20)
    with pytest.raises(SplitTooSmallError, match=r"hold one class or none.*5 participants"):
        run_probes(train, one, [Task("label", "classification")], probes=("knn",), n_boot=20)
