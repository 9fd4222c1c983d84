"""inception-v3: 299-px ImageNet preprocessing, 2048-d embedding, no aux head, local and ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import inception_v3 as torchvision_inception_v3

from instacli import registry
from instacli.encoders import IMAGENET_MEAN, IMAGENET_STD
from instacli.errors import InstacliError


@pytest.fixture(scope="module")
def torchvision_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision checkpoint with the auxiliary head and ImageNet classifier, as users would have one."""
    torch.manual_seed(0)
    state = torchvision_inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    path = tmp_path_factory.mktemp("inception") / "inception_v3.pth"
    torch.save(state, path)
    return path, state


def test_forward_backward_on_two_images() -> None:
    encoder = registry.encoders.create("inception-v3")
    assert encoder.embed_dim == 2048
    assert (encoder.preprocess.image_size, encoder.preprocess.mean, encoder.preprocess.std) == (299, IMAGENET_MEAN, IMAGENET_STD)
    assert encoder.net.AuxLogits is None and encoder.auxiliary_loss() is None
    # Global pooling makes the trunk size-agnostic above 75 px; 128 px keeps this step cheap on a CPU.
    encoder.train()
    embedding = encoder(torch.randn(2, 3, 128, 128))
    assert embedding.shape == (2, 2048)
    embedding.mean().backward()
    assert encoder.net.Conv2d_1a_3x3.conv.weight.grad.abs().sum() > 0


def test_loads_local_state_dict_without_aux_and_fc(torchvision_state: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    path, state = torchvision_state
    encoder = registry.encoders.create("inception-v3", pretrained=str(path))
    own = encoder.net.state_dict()
    assert not any(k.startswith(("AuxLogits.", "fc.")) for k in own)
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert encoder.saved_options == {"pretrained": None, "image_size": 299, "dropout": 0.0}

    safetensors_path = tmp_path / "inception_v3.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors_path))
    from_safetensors = registry.encoders.create("inception-v3", pretrained=str(safetensors_path))
    assert torch.equal(from_safetensors.net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])


def test_wrong_state_dicts_are_user_errors(torchvision_state: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    _, state = torchvision_state
    truncated = tmp_path / "truncated.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_7c.")}, truncated)
    with pytest.raises(InstacliError, match=r"not a torchvision inception_v3 state dict \(missing \['Mixed_7c"):
        registry.encoders.create("inception-v3", pretrained=str(truncated))
    reshaped = tmp_path / "reshaped.pth"
    torch.save({**state, "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)}, reshaped)
    with pytest.raises(InstacliError, match=r"does not fit Inception-v3 \(size mismatch for Conv2d_1a_3x3\.conv\.weight"):
        registry.encoders.create("inception-v3", pretrained=str(reshaped))
    with pytest.raises(InstacliError, match="do not exist"):
        registry.encoders.create("inception-v3", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(InstacliError, match="is a folder, not a state dict file"):  # it said "do not exist"
        registry.encoders.create("inception-v3", pretrained=str(tmp_path))


def test_imagenet_offline_without_cache_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(InstacliError) as info:
        registry.encoders.create("inception-v3", pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "not cached" in message and "HF_HUB_OFFLINE" in message and "--pretrained PATH" in message
