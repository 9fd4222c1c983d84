"""hf-vit: tiny configs, a checkpoint the test saves itself, and a clear error for an uncached hub id offline."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from instacli import registry
from instacli.errors import InstacliError

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture
def offline_empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline mode with an empty Hugging Face cache, whatever the machine has cached."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_from_size_options_trains_and_rebuilds_from_saved_options() -> None:
    encoder = registry.encoders.create("hf-vit", **TINY)
    assert encoder.embed_dim == 32
    assert (encoder.preprocess.image_size, encoder.preprocess.mean) == (32, (0.5, 0.5, 0.5))
    embedding = encoder(torch.randn(2, 3, 32, 32))
    assert embedding.shape == (2, 32)
    embedding.square().mean().backward()
    assert encoder.vit.embeddings.cls_token.grad is not None

    options = json.loads(json.dumps(encoder.saved_options))  # as config.json stores them
    assert options["pretrained"] is None and options["config"]["hidden_size"] == 32
    rebuilt = registry.encoders.create("hf-vit", **options)
    rebuilt.load_state_dict(encoder.state_dict())
    assert rebuilt.preprocess == encoder.preprocess
    encoder.eval(), rebuilt.eval()
    pixels = torch.randn(1, 3, 32, 32)
    assert torch.allclose(rebuilt(pixels), encoder(pixels))


def test_pooler_embedding_and_other_image_size() -> None:
    encoder = registry.encoders.create("hf-vit", **{**TINY, "image_size": 32}, pooling="pooler")
    assert encoder(torch.randn(1, 3, 32, 32)).abs().max() <= 1.0  # tanh pooler
    wider = registry.encoders.create("hf-vit", config=encoder.saved_options["config"], image_size=48)
    assert wider.interpolate and wider(torch.randn(1, 3, 48, 48)).shape == (1, 32)
    with pytest.raises(InstacliError, match="pooling must be one of cls, pooler"):
        registry.encoders.create("hf-vit", pooling="mean")


def test_loads_local_checkpoint_with_its_image_processor(tmp_path: Path, offline_empty_cache: None) -> None:
    torch.manual_seed(0)
    saved = ViTModel(ViTConfig(**TINY), add_pooling_layer=False)
    saved.save_pretrained(tmp_path)
    ViTImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6], size={"height": 32, "width": 32}).save_pretrained(tmp_path)

    encoder = registry.encoders.create("hf-vit", pretrained=str(tmp_path))
    loaded, original = encoder.vit.state_dict(), saved.state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    assert encoder.preprocess.mean == pytest.approx((0.1, 0.2, 0.3))
    assert encoder.preprocess.std == pytest.approx((0.4, 0.5, 0.6))
    assert encoder.preprocess.image_size == 32 and not encoder.interpolate
    assert encoder.saved_options["pretrained"] is None
    assert encoder.saved_options["mean"] == pytest.approx([0.1, 0.2, 0.3])


def test_checkpoint_without_image_processor_uses_vit_defaults(tmp_path: Path, offline_empty_cache: None) -> None:
    ViTModel(ViTConfig(**TINY), add_pooling_layer=False).save_pretrained(tmp_path)
    encoder = registry.encoders.create("hf-vit", pretrained=str(tmp_path))
    assert (encoder.preprocess.image_size, encoder.preprocess.mean, encoder.preprocess.std) == (32, (0.5,) * 3, (0.5,) * 3)


def test_uncached_hub_id_offline_is_one_clear_line(offline_empty_cache: None) -> None:
    with pytest.raises(InstacliError) as info:
        registry.encoders.create("hf-vit", pretrained="google/vit-base-patch16-224-in21k")
    message = str(info.value)
    assert "\n" not in message
    assert "'google/vit-base-patch16-224-in21k' is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in message
    assert "local folder" in message


def test_bad_local_folders_are_user_errors(tmp_path: Path, offline_empty_cache: None) -> None:
    with pytest.raises(InstacliError, match="does not exist"):
        registry.encoders.create("hf-vit", pretrained=str(tmp_path / "missing"))
    with pytest.raises(InstacliError, match="is not a ViT checkpoint folder"):
        registry.encoders.create("hf-vit", pretrained=str(tmp_path))
    with pytest.raises(InstacliError, match="option hidden_size='wide': Input should be a valid integer"):
        registry.encoders.create("hf-vit", hidden_size="wide")
    with pytest.raises(InstacliError, match="invalid ViT config"):
        registry.encoders.create("hf-vit", config={"hidden_size": "wide"})
