"""Synthetic engagement: the original 'seed' generator and the followers-driven 'realistic' model with
its oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from tests.conftest import built_rows, make_photo_tree
from instacli_datasets import build_dataset, load_data, oracle_log_likes
from instacli_datasets.synthetic import likes_exponents, realistic_engagement, realistic_params, seed_engagement



def test_synthetic_seed_ranges_per_class_and_reproducible(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 12, "landscape": 12, "food": 6}, size=(8, 8))
    build_dataset(src, tmp_path / "one", synthetic="seed", seed=7, workers=1)
    build_dataset(src, tmp_path / "two", synthetic="seed", seed=7, workers=1)
    build_dataset(src, tmp_path / "three", synthetic="seed", seed=8, workers=1)
    one, two, three = (built_rows(tmp_path / n) for n in ("one", "two", "three"))
    assert one == two and one != three
    limits = {"landscape": (10**4, 10**5, 10**6), "animal": (10**3, 10**4, 10**5), "food": (10**2, 10**3, 10**4)}
    for name, row in one.items():
        comments, shares, likes = limits[name.split("/")[0]]
        assert 1 <= row["comments"] <= comments and 1 <= row["shares"] <= shares and 1 <= row["likes"] <= likes
    _, info = load_data(tmp_path / "one", split="train")
    assert info.engagement == "synthetic:seed"


def test_synthetic_seed_generator_statistics() -> None:
    assert likes_exponents(["animal", "b", "landscape", "a", "c", "d"]) == {"animal": 5, "b": 5, "landscape": 6, "a": 4, "c": 6, "d": 4}
    values = seed_engagement([0] * 4000 + [1] * 4000, ["animal", "landscape"], seed=0)
    likes = np.array(values["likes"])
    assert likes[:4000].max() <= 10**5 and likes[4000:].max() > 10**5
    assert abs(np.median(likes[4000:]) / 5e5 - 1) < 0.05
    assert values == seed_engagement([0] * 4000 + [1] * 4000, ["animal", "landscape"], seed=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_realistic_followers_explain_likes_and_the_oracle_is_best(seed: int) -> None:
    names = ["animal", "landscape", "food"]
    labels = [i % 3 for i in range(4000)]
    params = realistic_params(names)
    values = realistic_engagement(labels, params, seed)
    log_likes, followers = np.log1p(values["likes"]), np.asarray(values["followers"])
    assert 0.65 <= spearmanr(log_likes, np.log(followers)).statistic <= 0.75
    assert np.percentile(followers, 99) / np.median(followers) > 20, "followers are heavy-tailed"

    oracle = oracle_log_likes({"label": labels, **values}, params)
    label_array = np.asarray(labels)
    class_median = np.select([label_array == c for c in range(3)], [np.median(log_likes[label_array == c]) for c in range(3)])
    design = np.column_stack([np.ones(len(labels)), np.log(followers), np.log1p(values["comments"]), *(label_array == c for c in (1, 2))])
    least_squares = design @ np.linalg.lstsq(design, log_likes, rcond=None)[0]
    mse = {name: float(np.mean((pred - log_likes) ** 2)) for name, pred in
           (("oracle", oracle), ("class median", class_median), ("linear fit", least_squares))}
    assert mse["oracle"] < 0.5 * mse["class median"], mse
    assert mse["oracle"] < mse["linear fit"], mse
    assert abs(np.mean(log_likes - oracle)) < 0.05, "the oracle is unbiased"


def test_realistic_build_records_parameters_for_the_oracle(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 10, "landscape": 10}, size=(8, 8))
    build_dataset(src, tmp_path / "data", synthetic="realistic", seed=3, workers=1)
    meta = json.loads((tmp_path / "data" / "instacli_dataset.json").read_text())
    assert meta["engagement"] == "synthetic:realistic"
    assert meta["engagement_params"]["model"] == "realistic" and meta["engagement_params"]["class_effects"] == [-0.25, 0.25]
    test, info = load_data(tmp_path / "data", split="test")
    assert info.params == meta["engagement_params"] and info.numeric_columns == ["comments", "followers"]
    assert set(test["shares"]) == {None} and all(f >= 1 for f in test["followers"])
    prediction = oracle_log_likes(test, info.params)
    assert prediction.shape == (len(test),) and np.isfinite(prediction).all()
    assert oracle_log_likes(list(test.remove_columns("image")), info.params).tolist() == prediction.tolist()
