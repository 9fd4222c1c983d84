"""Encoders by prefix (issue 11): ``timm:MODEL`` and ``hf:ID_OR_FOLDER``, and the registry's prefix mechanism.

Everything offline: timm models with random weights or a checkpoint the test saves, transformers
models saved locally with ``save_pretrained`` (tests/conftest.py ``save_tiny_hf``).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from torch import nn
from safetensors.torch import save_file

from instacli import registry
from instacli.compare.planning import plan_runs
from instacli.errors import InstacliError
from instacli.model import load_run
from instacli.registry import Registry
from instacli.run_folder import default_out
from instacli.settings import TrainSettings
from instacli.training import train
from tests.conftest import TINY_HF_DIR, photo_dataset, save_tiny_hf


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos, the dataset built from them)."""
    return photo_dataset(tmp_path_factory, {"animal": 6, "landscape": 6})


@pytest.fixture(scope="module")
def photos(data: tuple[Path, Path]) -> Path:
    return data[0]


@pytest.fixture(scope="module")
def dataset(data: tuple[Path, Path]) -> Path:
    return data[1]


@pytest.fixture
def offline_empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline mode with an empty Hugging Face cache, whatever the machine has cached."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def toy(family: str, /, *, width: int = 1) -> dict:
    """A toy family: what a plugin registers for its prefix."""
    return {"family": family, "width": width}


def test_a_prefixed_name_goes_to_its_factory_with_the_rest() -> None:
    fresh = Registry(kind="encoder", group="instacli.test-prefix", contract="builtins:dict")
    fresh.register_prefix("toy", description="toy family")(toy)
    assert fresh.create("toy:big:v2", width=3) == {"family": "big:v2", "width": 3}  # only the first colon splits
    assert fresh.knows("toy:x") and not fresh.knows("toys:x") and fresh.names() == []
    assert fresh.get("toy:x").options() == {"width": 1}  # the name's part is no option
    with pytest.raises(InstacliError, match=r"^encoder 'toy:x' has no option 'family'; its options: width$"):
        fresh.create("toy:x", family="y")
    with pytest.raises(InstacliError, match=r"^encoder 'toy:': give a name after the prefix, toy:NAME \(toy family\)$"):
        fresh.get("toy:")
    with pytest.raises(InstacliError, match=r"^unknown encoder 'tox:x'; known: ; or toy:NAME$"):
        fresh.get("tox:x")
    with pytest.raises(InstacliError, match="registered twice"):
        fresh.register_prefix("toy")(lambda name, /: {})


def test_run_folders_of_prefixed_names_stay_where_they_belong() -> None:
    out = default_out("hf:/models/vit")  # Path("runs") / "hf:/models/vit-…" was /models/vit-…
    assert out.parent == Path("runs") and out.name.startswith("hf-models-vit-")
    assert default_out("timm:resnet18.a1_in1k", "tune-").name.startswith("tune-timm-resnet18.a1_in1k-")
    plans = plan_runs(["hf:/models/vit", "vit-scratch"], ["conv1d"], [1], {})  # compare's runs/<name>: was /models/vit__conv1d__seed1
    assert [plan.name for plan in plans] == ["hf-models-vit__conv1d__seed1", "vit-scratch__conv1d__seed1"]
    assert plans[0].encoder == "hf:/models/vit"


def test_models_show_and_help_name_the_prefixes(run_cli) -> None:
    shown = run_cli("models", "show", "timm:resnet18")
    assert shown.code == 0 and "│ drop_path" in shown.stdout and "│ model_name" not in shown.stdout  # the name's part is no option
    assert "timm:MODEL" in run_cli("train", "--help").stdout


def _predicted_confusion(predictions: Path, class_names: list[str]) -> list[list[int]]:
    """The confusion matrix of ``predict``'s rows, the true class being the photo's folder."""
    matrix = [[0] * len(class_names) for _ in class_names]
    with predictions.open(newline="") as handle:
        for row in csv.DictReader(handle):
            matrix[class_names.index(Path(row["file"]).parent.name)][class_names.index(row["label"])] += 1
    return matrix


def test_timm_random_init_trains_and_predict_reproduces_evaluate(dataset: Path, photos: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "run"
    result = run_cli("train", "--data", dataset, "--out", run, "--encoder", "timm:resnet10t", "--image-size", "32",
                     "--epochs", "1", "--batch-size", "4", "--quiet")
    assert result.code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    data_config = timm.data.resolve_model_data_config(timm.create_model("resnet10t"))
    assert config["encoder"] == "timm:resnet10t"
    assert config["encoder_options"] == {"pretrained": None, "image_size": 32, "drop_path": 0.0, "mean": list(data_config["mean"]),
                                         "std": list(data_config["std"]), "crop_pct": data_config["crop_pct"], "imagenet_head": False}
    assert config["preprocess"]["crop_pct"] == 0.875 and load_run(run).model.encoder.embed_dim == 512

    evaluated = run_cli("evaluate", run, "--data", photos, "--json")
    assert evaluated.code == 0, evaluated.stderr
    predictions = tmp_path / "p.csv"
    assert run_cli("predict", run, photos, "--out", predictions, "--workers", "0").code == 0
    assert _predicted_confusion(predictions, config["class_names"]) == json.loads(evaluated.stdout)["confusion_matrix"]


@pytest.fixture(scope="module")
def checkpoint_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """(run, checkpoint): timm's test_resnet trained frozen from a checkpoint file deleted afterwards."""
    root = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(0)
    source = timm.create_model("test_resnet").state_dict()  # with its 1000-class classifier, which the encoder drops
    save_file(source, str(root / "weights.safetensors"))
    train(TrainSettings(data=dataset, out=root / "run", encoder="timm:test_resnet", pretrained=str(root / "weights.safetensors"),
                        image_size=32, epochs=1, batch_size=4, workers=0))  # the recipe of pretrained weights: frozen, with the prior
    (root / "weights.safetensors").unlink()
    return root / "run", source


def test_timm_pretrained_checkpoint_loads_offline_and_the_run_no_longer_needs_it(checkpoint_run: tuple[Path, dict], tmp_path: Path) -> None:
    run, source = checkpoint_run
    checkpoint = tmp_path / "weights.safetensors"
    save_file(source, str(checkpoint))
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(checkpoint, folder / "model.safetensors")
    for given in (checkpoint, folder):
        encoder = registry.encoders.create("timm:test_resnet", pretrained=str(given), image_size=32)
        loaded = encoder.net.state_dict()
        assert loaded and all(torch.equal(tensor, source[name]) for name, tensor in loaded.items())

    config = json.loads((run / "config.json").read_text())
    assert config["encoder_options"]["pretrained"] is None
    trunk = load_run(run).model.encoder.net.state_dict()  # rebuilt with random weights, then the run's
    assert all(torch.equal(tensor, source[name]) for name, tensor in trunk.items())  # frozen: still the checkpoint's

    other = tmp_path / "other.safetensors"
    save_file(timm.create_model("test_efficientnet").state_dict(), str(other))
    with pytest.raises(InstacliError, match=r"^timm:test_resnet: .*other.safetensors does not fit this model"):
        registry.encoders.create("timm:test_resnet", pretrained=str(other))


# resnetv2_18: a 1×1 convolution as classifier (BiT, DLA), which the pooled embedding could not enter
@pytest.mark.parametrize(("name", "size"), [("test_resnet", 32), ("test_convnext", 32), ("test_vit", None), ("resnetv2_18", 32)])
def test_timm_imagenet_weights_keep_their_classifier_as_the_imagenet_head(name: str, size: int | None, tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = timm.create_model(name).eval()
    heads = tuple(f"{head}." for head in [full.pretrained_cfg["classifier"]])
    checkpoints = {
        "with its classifier": full.state_dict(),
        "without": {key: value for key, value in full.state_dict().items() if not key.startswith(heads)},
        "with another number of classes": timm.create_model(name, num_classes=3).state_dict(),
    }
    pixels = torch.randn(2, 3, size or full.pretrained_cfg["input_size"][-1], size or full.pretrained_cfg["input_size"][-1])
    for kind, state in checkpoints.items():
        save_file(state, str(tmp_path / "w.safetensors"))
        encoder = registry.encoders.create(f"timm:{name}", pretrained=str(tmp_path / "w.safetensors"), image_size=size).eval()
        if kind == "with its classifier":  # the pretrained network's own ImageNet logits, from the embedding
            assert torch.allclose(encoder.imagenet_head(encoder(pixels)), full(pixels), atol=1e-4)
        else:
            assert encoder.imagenet_head is None, kind
    assert registry.encoders.create(f"timm:{name}", image_size=size).imagenet_head is None  # random weights know no class


def test_a_timm_classifier_with_batch_norm_or_two_heads_is_no_imagenet_head() -> None:
    """RepViT's head (batch norm, then Linear) would follow the batch's statistics whenever the encoder trains."""
    from instacli_plugins.encoders.timm_backbone import linear_head

    assert linear_head(nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 1000))) is None
    assert linear_head((nn.Linear(8, 1000), nn.Linear(8, 1000))) is None  # a distilled model's two heads
    assert linear_head(nn.Linear(8, 3)) is None  # not ImageNet's classes


def test_timm_pretrained_weights_get_the_frozen_probe_with_the_prior_and_random_ones_are_trained(checkpoint_run: tuple[Path, dict]) -> None:
    from instacli.settings import apply_recipe

    run, source = checkpoint_run
    config = json.loads((run / "config.json").read_text())
    assert config["semantic_prior"] == "grouped" and config["encoder_options"]["imagenet_head"] is True
    settings = json.loads((run / "settings.json").read_text())
    assert settings["freeze_encoder"] is True
    encoder = load_run(run).model.encoder.eval()  # rebuilt with the head's slot, filled by the run's weights
    full = timm.create_model("test_resnet").eval()
    full.load_state_dict(source)
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.allclose(encoder.imagenet_head(encoder(pixels)), full(pixels), atol=1e-4)
    assert apply_recipe(TrainSettings(data=run, encoder="timm:test_resnet")).freeze_encoder is False


def test_timm_runs_name_their_grad_cam_layer(checkpoint_run: tuple[Path, dict], photos: Path) -> None:
    from instacli.decode_cache import decode_square
    from instacli.explain import category_heatmaps

    run = load_run(checkpoint_run[0])
    assert run.model.encoder.cam_layer() == (run.model.encoder.net.layer4, 0)  # its last feature maps
    images = torch.stack([torch.from_numpy(decode_square(path, run.preprocess.resize_size)) for path in sorted(photos.rglob("*.jpg"))[:3]])
    maps, _ = category_heatmaps(run, images)
    assert maps.shape == (3, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    vit = registry.encoders.create("timm:test_vit", image_size=32)
    module, prefix = vit.cam_layer()
    assert (module, prefix) == (vit.net.blocks[-1].norm1, 1)  # tokens, the class token first
    seen = []
    module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    embedding = vit(torch.randn(1, 3, 32, 32))  # the class token: the last block's output patches never reach it (all-zero maps)
    (gradient,) = torch.autograd.grad((embedding * torch.randn_like(embedding)).sum(), seen[0])
    assert gradient[:, prefix:].abs().sum() > 0
    assert registry.encoders.create("timm:test_mambaout", image_size=32).cam_layer() is None  # channels last


@pytest.mark.parametrize(("args", "expected"), [
    (["--encoder", "timm:resnet9000"],
     "error: timm has no model 'resnet9000' (closest: resnet200, resnet200d, resnet50, resnetrs200); list the names with "
     "python -c \"import timm; print(timm.list_models('*resnet*'))\""),
    (["--encoder", "timm:test_resnet", "--pretrained", "true"], "error: timm:test_resnet: cannot load timm's pretrained weights"),
    (["--encoder", "timm:test_resnet", "--pretrained", "/dev/zero"],  # it exists: "does not exist" sent the user looking for a typo
     "error: timm:test_resnet: pretrained checkpoint /dev/zero is not a regular file; pass a .safetensors/.pth file"),
    (["--encoder", "timm:test_resnet", "--pretrained", "{tmp}/notes.txt"],  # said "cannot read … as a checkpoint (101)": torch's KeyError
     "error: timm:test_resnet: {tmp}/notes.txt is not a PyTorch (.pth, .bin) or safetensors checkpoint; pass a .safetensors/.pth state dict"),
    (["--encoder", "hf:google/vit-base-patch16-224"],
     "error: hf:google/vit-base-patch16-224: 'google/vit-base-patch16-224' is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
     "it needs the network once"),
])
def test_what_cannot_be_built_offline_is_one_line(args: list[str], expected: str, dataset: Path, tmp_path: Path, run_cli,
                                                   offline_empty_cache: None) -> None:
    (tmp_path / "notes.txt").write_text("not weights\n")
    result = run_cli("train", "--data", dataset, "--out", tmp_path / "run", *(a.format(tmp=tmp_path) for a in args), "--quiet")
    expected = expected.format(tmp=tmp_path)
    assert result.code == 2 and result.stderr.startswith(expected) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_hf_pooling_follows_the_model_and_the_processor_sets_the_preprocessing() -> None:
    pixels = torch.randn(2, 3, 32, 32)
    vit = registry.encoders.create(f"hf:{save_tiny_hf(TINY_HF_DIR / 'vit')}").eval()
    # ViT's pooler is a dense + tanh layer: the CLS token after the final layer norm is the embedding
    assert vit.pooling == "cls" and not any(p.requires_grad for p in vit.model.pooler.parameters())
    assert torch.equal(vit(pixels), vit.model(pixel_values=pixels).last_hidden_state[:, 0])
    assert (vit.preprocess.image_size, vit.preprocess.mean, vit.preprocess.crop_pct) == (32, (0.4, 0.5, 0.6), 1.0)

    convnext = registry.encoders.create(f"hf:{save_tiny_hf(TINY_HF_DIR / 'convnext')}").eval()
    # ConvNeXt's pooler output is its own layer-normed global average: that is the embedding
    assert convnext.pooling == "pooler" and convnext.embed_dim == 32
    assert torch.equal(convnext(pixels), convnext.model(pixel_values=pixels).pooler_output)
    assert (convnext.preprocess.image_size, convnext.preprocess.std, convnext.preprocess.crop_pct) == (32, (0.2, 0.3, 0.4), 0.8)
    mean = registry.encoders.create(f"hf:{TINY_HF_DIR / 'convnext'}", pooling="mean").eval()
    assert torch.allclose(mean(pixels), mean.model(pixel_values=pixels).last_hidden_state.mean(dim=(2, 3)))


def test_hf_run_reloads_without_its_checkpoint_folder(dataset: Path, photos: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(save_tiny_hf(TINY_HF_DIR / "vit"), tmp_path / "vit")
    run = tmp_path / "run"
    train(TrainSettings(data=dataset, out=run, encoder=f"hf:{folder}", epochs=1, batch_size=4, workers=0))
    before = load_run(run)
    shutil.rmtree(folder)
    after = load_run(run)  # from config.json's model config and the run's weights
    config = json.loads((run / "config.json").read_text())
    assert config["encoder"] == f"hf:{folder}" and config["encoder_options"]["pooling"] == "cls"
    assert config["encoder_options"]["config"]["model_type"] == "vit" and after.preprocess == before.preprocess
    pixels = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(after.model.encoder(pixels), before.model.encoder(pixels))

    from instacli.decode_cache import decode_square
    from instacli.explain import category_heatmaps

    # explain: Grad-CAM on the tokens entering the last layer (after it the patches no longer reach the
    # class token the embedding is), the class token dropped (it said "does not name a layer")
    module, prefix = after.model.encoder.cam_layer()
    assert prefix == 1 and any(module is m for m in after.model.encoder.model.layers[-1].modules())  # inside the last layer
    images = torch.stack([torch.from_numpy(decode_square(path, after.preprocess.resize_size)) for path in sorted(photos.rglob("*.jpg"))[:2]])
    maps, _ = category_heatmaps(after, images)
    assert maps.shape == (2, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    convnext = registry.encoders.create(f"hf:{save_tiny_hf(TINY_HF_DIR / 'convnext')}")
    assert convnext.cam_layer() == (convnext.model.encoder.stages[-1], 0)  # its last feature maps
