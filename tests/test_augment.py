"""The augmentations of ``instacli train``: hue rotation and random grayscale, and timm's auto-augment
policies, random erasing, mixup/cutmix."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instacli import registry
from instacli.augment import Augmentation, auto_augment_policy, hue_shift, random_grayscale, train_view
from instacli.errors import InstacliError
from instacli.settings import TrainSettings
from instacli.training import multitask_loss
from tests.conftest import CliResult, make_photo_tree

PREPROCESS = registry.encoders.create("vit-scratch", image_size=32, patch_size=8, width=16, heads=2).preprocess


def _batch(n: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, PREPROCESS.resize_size, PREPROCESS.resize_size), dtype=torch.uint8, generator=generator)


def _seed(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_trivialaugment_is_one_operation_at_a_uniform_magnitude_always_applied() -> None:
    policy = auto_augment_policy("trivialaugment", PREPROCESS)
    assert policy.num_layers == 1
    assert all(op.prob == 1.0 and op.magnitude_std == float("inf") for op in policy.ops)


def test_the_named_policies_run_at_every_magnitude_they_can_draw() -> None:
    """At magnitude 10 timm's increasing posterize keeps 0 bits, which Pillow refuses (a crash in epoch 1 on posts-dev)."""
    images = _batch(64)
    for name in ("randaugment", "trivialaugment"):
        policy = auto_augment_policy(name, PREPROCESS)
        for op in policy.ops:
            op.prob, op.magnitude_std = 1.0, 0.0
            op.magnitude = op.hparams.get("magnitude_max", 10)  # the largest magnitude the policy can draw
        Augmentation(PREPROCESS, policy=policy).view(images)


def test_a_policy_that_fails_on_a_photo_is_a_one_line_error() -> None:
    policy = auto_augment_policy("rand-n1-m10-mstd0-inc1-p1.0", PREPROCESS)
    policy.ops = [op for op in policy.ops if op.name == "PosterizeIncreasing"]  # keeps 0 bits at magnitude 10
    with pytest.raises(InstacliError, match="the policy failed on a photo"):
        Augmentation(PREPROCESS, policy=policy).view(_batch())


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "augmix-m3", "original"])
def test_a_policy_changes_the_photos_and_keeps_their_shape(name: str) -> None:
    images = _batch()
    plain = Augmentation(PREPROCESS)
    augmented = Augmentation.create(PREPROCESS, auto_augment=name)
    _seed()
    before = plain.view(images)
    _seed()
    after = augmented.view(images)
    assert after.shape == before.shape == (6, 3, 32, 32) and after.dtype == torch.float32
    assert not torch.equal(after, before)


def test_an_unknown_policy_is_a_one_line_error() -> None:
    with pytest.raises(InstacliError, match="not a timm auto-augment policy"):
        auto_augment_policy("bogus", PREPROCESS)


def _colours(n: int = 8) -> torch.Tensor:
    """Float photos of random colours kept away from 0 and 1, so that no hue rotation is clipped."""
    return 0.35 + 0.3 * torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def test_grayscale_at_p1_makes_three_equal_channels_of_the_luma_and_at_p0_changes_nothing() -> None:
    x = _colours()
    gray = random_grayscale(x, 1.0)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert torch.allclose(gray[:, 0], _luma(x), atol=1e-3)  # torchvision weighs red 0.2989
    assert torch.equal(random_grayscale(x, 0.0), x)
    half = random_grayscale(_colours(400), 0.5, torch.Generator().manual_seed(0))
    grayed = (half[:, 0] == half[:, 1]).all(dim=(1, 2)).float().mean()
    assert 0.4 < grayed < 0.6  # about half of the photos


def test_hue_shift_changes_the_hue_but_not_the_brightness_or_saturation() -> None:
    x = _colours()
    shifted = hue_shift(x, 0.5, torch.Generator().manual_seed(0))
    changed = (shifted - x).abs().mean(dim=(1, 2, 3)) > 0.01  # a photo drawn a tiny angle may keep its colours
    assert changed.float().mean() >= 0.75
    assert torch.allclose(_luma(shifted), _luma(x), atol=1e-5)  # same brightness, pixel by pixel
    iq = torch.tensor([[0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])  # NTSC chroma axes
    chroma = lambda t: torch.einsum("cj,bjhw->bchw", iq, t).norm(dim=1)  # noqa: E731  # saturation: the chroma's length
    assert torch.allclose(chroma(shifted), chroma(x), atol=1e-4)
    assert torch.allclose(hue_shift(x, 0.0), x, atol=1e-5)


def test_hue_and_grayscale_are_deterministic_for_a_seed() -> None:
    images = _batch()
    views = [train_view(images, PREPROCESS, torch.Generator().manual_seed(seed), hue=0.5, grayscale=0.5) for seed in (3, 3, 4)]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    _seed()
    plain = Augmentation.create(PREPROCESS).view(images)
    _seed()
    coloured = Augmentation.create(PREPROCESS, hue=0.5, grayscale=0.5).view(images)
    assert not torch.equal(plain, coloured)


def test_random_erasing_replaces_a_box_of_each_photo() -> None:
    images = _batch()
    _seed()
    plain = train_view(images, PREPROCESS)
    _seed()
    erased = Augmentation.create(PREPROCESS, random_erasing=1.0).view(images)
    changed = (erased != plain).any(dim=1)  # (B, H, W): erased pixels
    assert all(0 < m.sum() < 32 * 32 for m in changed)


def test_mixup_blends_each_photo_with_the_reversed_batch_and_its_label() -> None:
    x = torch.randn(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 1, 0])
    mixing = Augmentation.create(PREPROCESS, mixup=1.0, num_classes=2)
    _seed()
    mixed, soft = mixing.mix(x.clone(), labels)
    lam = float(((mixed - x.flip(0)) / (x - x.flip(0)))[0].median())  # one λ per batch, read from the pixels
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
    expected = lam * F.one_hot(labels, 2) + (1 - lam) * F.one_hot(labels.flip(0), 2)
    assert torch.allclose(soft, expected.float(), atol=1e-5)


def test_an_odd_or_partly_unlabelled_batch_is_not_mixed() -> None:
    mixing = Augmentation.create(PREPROCESS, mixup=1.0, cutmix=1.0, num_classes=2)
    x = torch.randn(3, 3, 8, 8)
    assert mixing.mix(x, torch.tensor([0, 1, 0]))[1] is None
    assert mixing.mix(torch.randn(4, 3, 8, 8), torch.tensor([0, -1, 1, 0]))[1] is None


def test_soft_labels_replace_the_hard_ones_in_the_loss() -> None:
    logits = torch.randn(4, 2)
    soft = torch.tensor([[0.7, 0.3], [0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    labels, targets = torch.tensor([0, 1, 0, 1]), torch.full((4,), float("nan"))
    _, ce, _ = multitask_loss(logits, None, labels, targets, TrainSettings(data=Path(".")), soft)
    assert torch.isclose(ce, F.cross_entropy(logits, soft))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("augment")
    build_dataset(make_photo_tree(root / "src", {"animal": 8, "landscape": 8}), root / "data", synthetic="seed")
    return root / "data"


TINY = ["--encoder-option", "image_size=32", "-E", "patch_size=8", "-E", "width=16", "-E", "heads=2", "--epochs", "1", "--workers", "0"]


def test_training_with_every_augmentation(data: Path, tmp_path: Path, run_cli: Callable[..., CliResult]) -> None:
    flags = ["--auto-augment", "trivialaugment", "--random-erasing", "0.25", "--mixup", "0.8", "--cutmix", "1.0", "--task", "category",
             "--hue", "0.2", "--grayscale", "0.3"]
    result = run_cli("train", "--data", data, "--out", tmp_path / "run", "-q", *TINY, *flags)
    assert result.code == 0, result.stderr
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert (saved["auto_augment"], saved["random_erasing"], saved["mixup"], saved["cutmix"]) == ("trivialaugment", 0.25, 0.8, 1.0)
    assert (saved["hue"], saved["grayscale"]) == (0.2, 0.3)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mixup", "0.8"], "a blend has no likes count"),
        (["--auto-augment", "randaugment", "--freeze-encoder"], "a frozen encoder embeds each photo once"),
        (["--grayscale", "0.5", "--freeze-encoder"], "--grayscale: a frozen encoder embeds each photo once"),
        (["--auto-augment", "rand-q9"], "not a timm auto-augment policy"),
    ],
)
def test_an_augmentation_that_cannot_apply_is_a_one_line_error(
    data: Path, tmp_path: Path, run_cli: Callable[..., CliResult], flags: list[str], message: str
) -> None:
    result = run_cli("train", "--data", data, "--out", tmp_path / "run", *TINY, *flags)
    assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
