"""efficientnet-lite0: the bundled ImageNet weights map correctly onto timm's network, fully offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instacli import registry
from instacli.encoders import Preprocess
from instacli.errors import InstacliError
from instacli_plugins.encoders import efficientnet_lite0 as eff

SAMPLES = Path(__file__).resolve().parents[1] / "instacli" / "sample_data" / "animal"
CAT = Path(__file__).resolve().parent / "data" / "chelsea-cat.jpg"  # scikit-image's CC0 "Chelsea" (data/ATTRIBUTION.csv)

#: Photos the pretrained network gets right with a clear margin: the classic ImageNet cat check plus bundled animals.
EXPECTED = {
    CAT: set(range(281, 286)),  # domestic cat (tabby, tiger cat, Persian, Siamese, Egyptian)
    SAMPLES / "commons-lion.jpg": {291},  # lion
    SAMPLES / "commons-cheetah.jpg": {293},  # cheetah
    SAMPLES / "commons-dog.jpg": set(range(151, 269)),  # any dog breed
    SAMPLES / "commons-pig.jpg": {341},  # hog
    SAMPLES / "commons-skunk.jpg": {361},  # skunk
    SAMPLES / "pixabay-polar-polar-bear-3277930__480.jpg": {296},  # ice bear
}


def load_eval_view(path: Path, preprocess: Preprocess) -> torch.Tensor:
    """Shorter side → resize_size, center crop image_size, normalize: the evaluation view of the pipeline."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = preprocess.resize_size / min(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        left, top = (img.width - preprocess.image_size) // 2, (img.height - preprocess.image_size) // 2
        img = img.crop((left, top, left + preprocess.image_size, top + preprocess.image_size))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(preprocess.mean)[:, None, None], torch.tensor(preprocess.std)[:, None, None]
    return (pixels - mean) / std


def test_pretrained_weights_classify_bundled_photos() -> None:
    model = eff.imagenet_classifier().eval()
    batch = torch.stack([load_eval_view(path, eff.PRETRAINED_CFG) for path in EXPECTED])
    with torch.inference_mode():
        top1 = model(batch).argmax(dim=1).tolist()
    wrong = {path.name: got for (path, classes), got in zip(EXPECTED.items(), top1) if got not in classes}
    assert not wrong, f"top-1 ImageNet class outside the expected ones: {wrong}"


def test_encoder_shares_the_classifier_trunk_and_trains() -> None:
    encoder = registry.encoders.create("efficientnet-lite0")
    assert encoder.embed_dim == 1280
    assert encoder.preprocess == Preprocess(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.875)
    assert encoder.saved_options == {"pretrained": None, "image_size": 224, "drop_path": 0.1}
    full = eff.imagenet_classifier()
    assert torch.equal(encoder.net.conv_head.weight, full.conv_head.weight)
    assert torch.equal(encoder.net.blocks[6][0].bn3.running_var, full.blocks[6][0].bn3.running_var)

    pixels = torch.randn(2, 3, 64, 64)
    embedding = encoder(pixels)
    assert embedding.shape == (2, 1280)
    embedding.square().mean().backward()
    assert encoder.net.conv_stem.weight.grad is not None


def test_random_init_and_rebuild_from_saved_options_need_no_weights() -> None:
    rebuilt = eff.efficientnet_lite0(**eff.efficientnet_lite0(pretrained="none").saved_options)
    pretrained = eff.efficientnet_lite0()
    assert not torch.equal(rebuilt.net.conv_stem.weight, pretrained.net.conv_stem.weight)


def test_mismatched_state_dict_fails_loudly(tmp_path: Path) -> None:
    state = torch.load(eff.package_weights_path(), map_location="cpu", weights_only=True)
    state["_conv_head.weight"] = torch.zeros(1280, 321, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(InstacliError, match=r"_conv_head\.weight \(1280, 321, 1, 1\) does not fit conv_head\.weight"):
        eff.efficientnet_lite0(pretrained=str(bad))
    with pytest.raises(InstacliError, match="does not exist"):
        eff.efficientnet_lite0(pretrained=str(tmp_path / "missing.pth"))


def test_random_weights_get_no_semantic_prior() -> None:
    """The prior reads what ImageNet training taught the head; random weights (`--pretrained none`)
    taught it nothing, so `auto` must not feed a random 1000-class head to the category head."""
    from instacli.model import ModelConfig, build_model

    assert eff.efficientnet_lite0(pretrained="none").imagenet_head is None
    assert eff.efficientnet_lite0().imagenet_head is not None  # the bundled ImageNet classifier
    config = ModelConfig(encoder="efficientnet-lite0", encoder_options={"pretrained": "none"}, regressor="conv1d", regressor_options={},
                         class_names=["animal", "landscape"], scaler={"features": []}, task="category", semantic_prior="auto")
    model = build_model(config)
    assert config.semantic_prior == "none" and model.prior is None


def test_its_frozen_recipe_is_for_the_pretrained_weights_only() -> None:
    """With --pretrained none the recipe's frozen encoder would feed the heads random features: it is trained instead."""
    from instacli.settings import TrainSettings, apply_recipe

    base = {"data": Path("."), "encoder": "efficientnet-lite0"}
    assert apply_recipe(TrainSettings(**base)).freeze_encoder is True
    assert apply_recipe(TrainSettings(**base, pretrained="none")).freeze_encoder is False
    assert apply_recipe(TrainSettings(**base, pretrained="none", freeze_encoder=True)).freeze_encoder is True  # a flag wins
