"""Settings and plugin options out of range (issue 15, item 9).

``--epochs 0`` used to crash after leaving a run folder behind, ``--lr nan`` trained NaNs, ``--lr -1``
trained silently, ``-E width=-8`` was a tensor error deep in the encoder. Each must now be one line
naming the setting or option and its allowed range, exit 2, before any data is read: every train
command here points ``--data`` at a folder that does not exist, so reaching the data would give
another message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from tests.conftest import make_photo_tree
from instacli import registry
from instacli.errors import InstacliError
from instacli.registry import Registry

TRAIN_FLAGS = {
    "epochs 0": (["--epochs", "0"], "epochs=0: Input should be greater than or equal to 1"),
    "batch size 0": (["--batch-size", "0"], "batch_size=0: Input should be greater than or equal to 1"),
    "batch size -4": (["--batch-size", "-4"], "batch_size=-4: Input should be greater than or equal to 1"),
    "grad accum 0": (["--grad-accum", "0"], "grad_accum=0: Input should be greater than or equal to 1"),
    "image size 3": (["--image-size", "3"], "image_size=3: Input should be greater than or equal to 16"),
    "image size -64": (["--image-size", "-64"], "image_size=-64: Input should be greater than or equal to 16"),
    "image size 100000": (["--image-size", "100000"], "image_size=100000: Input should be less than or equal to 1024"),
    "lr nan": (["--lr", "nan"], "lr=nan: Input should be a finite number"),
    "lr -1": (["--lr", "-1"], "lr=-1.0: Input should be greater than 0"),
    "lr inf": (["--lr", "inf"], "lr=inf: Input should be a finite number"),
    "lr 1e39": (["--lr", "1e39"], "lr=1e+39: Input should be less than or equal to 1"),  # overflowed float32 in AdamW: a traceback
    "encoder lr 0": (["--encoder-lr", "0"], "encoder_lr=0.0: Input should be greater than 0"),
    "weight decay -1": (["--weight-decay", "-1"], "weight_decay=-1.0: Input should be greater than or equal to 0"),
    "warmup -1": (["--warmup-epochs", "-1"], "warmup_epochs=-1.0: Input should be greater than or equal to 0"),
    "label smoothing 1": (["--label-smoothing", "1"], "label_smoothing=1.0: Input should be less than 1"),
    "likes weight inf": (["--likes-weight", "inf"], "likes_weight=inf: Input should be a finite number"),
    "patience 0": (["--patience", "0"], "patience=0: Input should be greater than or equal to 1"),
    "hue 0.6": (["--hue", "0.6"], "hue=0.6: Input should be less than or equal to 0.5"),
    "grayscale -0.1": (["--grayscale", "-0.1"], "grayscale=-0.1: Input should be greater than or equal to 0"),
    "seed -1": (["--seed", "-1"], "seed=-1: Input should be greater than or equal to 0"),
    "workers -1": (["--workers", "-1"], "workers=-1: Input should be greater than or equal to 0"),
    "checkpoint every -1": (["--checkpoint-every", "-1"], "checkpoint_every=-1: Input should be greater than or equal to 0"),
    "encoder width -8": (["-E", "width=-8"], "encoder 'vit-scratch' option width=-8: Input should be greater than or equal to 1"),
    "encoder depth 1.5": (["-E", "depth=1.5"], "encoder 'vit-scratch' option depth=1.5: Input should be a valid integer, got a number with a fractional part"),
    "encoder pool evil": (["-E", "pool=evil"], "encoder 'vit-scratch' option pool='evil': Input should be 'cls', 'mean' or 'flatten'"),
    "encoder heads 0": (["-E", "heads=0"], "encoder 'vit-scratch' option heads=0: Input should be greater than or equal to 1"),
    "encoder dropout 2": (["-E", "dropout=2"], "encoder 'vit-scratch' option dropout=2: Input should be less than 1"),
    "encoder image size 8": (["-E", "image_size=8"], "encoder 'vit-scratch' option image_size=8: Input should be greater than or equal to 16"),
    "regressor hidden -1": (["-R", "hidden=-1"], "regressor 'conv1d' option hidden=-1: Input should be greater than or equal to 1"),
    "mlp hidden with a 0": (["--regressor", "mlp", "-R", "hidden=[8, 0]"], "regressor 'mlp' option hidden=[8, 0]: Input should be greater than or equal to 1"),
    "inception image size 64": (["--encoder", "inception-v3", "--image-size", "64"], "encoder 'inception-v3' option image_size=64: Input should be greater than or equal to 75"),
}


@pytest.mark.parametrize("flags, words", TRAIN_FLAGS.values(), ids=TRAIN_FLAGS.keys())
def test_train_flag_out_of_range_is_one_line_before_reading_data(tmp_path: Path, run_cli, flags: list[str], words: str) -> None:
    result = run_cli("train", "--data", tmp_path / "no-such-data", "--out", tmp_path / "run", "--quiet", *flags)
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert not (tmp_path / "run").exists()  # nothing written: --epochs 0 used to leave a folder with settings.json alone


def test_toml_encoder_options_are_checked_too(tmp_path: Path, run_cli) -> None:
    (tmp_path / "bad.toml").write_text("epochs = 1\nencoder_options = {width = -4}\n")
    result = run_cli("train", "--data", tmp_path / "no-such-data", "--out", tmp_path / "run", "--config", tmp_path / "bad.toml", "--quiet")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    # the file is named: the same line without it sent the user looking through the flags
    assert f"error: {tmp_path / 'bad.toml'}: encoder 'vit-scratch' option width=-4: Input should be greater than or equal to 1" in result.stderr
    (tmp_path / "all.toml").write_text(f"data = '{tmp_path / 'no-such-data'}'\nencoder_options = {{width = -4}}\n")  # no --data flag
    result = run_cli("train", "--out", tmp_path / "run", "--config", tmp_path / "all.toml", "--quiet")
    assert result.stderr.startswith(f"error: {tmp_path / 'all.toml'}: encoder 'vit-scratch' option width=-4"), result.stderr
    (tmp_path / "good.toml").write_text("epochs = 1\n")  # a bad flag beside a good file: the file is not blamed
    result = run_cli("train", "--data", tmp_path / "no-such-data", "--config", tmp_path / "good.toml", "-E", "width=-4", "--quiet")
    assert result.code == 2 and result.stderr.startswith("error: encoder 'vit-scratch' option width=-4"), result.stderr


def test_toml_lr_nan_names_the_file(tmp_path: Path, run_cli) -> None:
    (tmp_path / "bad.toml").write_text("lr = nan\n")
    result = run_cli("train", "--data", tmp_path / "no-such-data", "--config", tmp_path / "bad.toml", "--quiet")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"lr=nan: Input should be a finite number (in {tmp_path / 'bad.toml'})" in result.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from instacli.settings import TrainSettings
    from instacli.training import train
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("ranges")
    make_photo_tree(root / "src", {"animal": 4, "landscape": 4})
    build_dataset(root / "src", root / "data", synthetic="seed", workers=1)
    train(TrainSettings(data=root / "data", out=root / "run", epochs=1, batch_size=4, warmup_epochs=0, workers=0,
                        encoder_options={"image_size": 32, "patch_size": 8, "width": 32, "heads": 2}))
    return {"src": root / "src", "data": root / "data", "run": root / "run"}


def test_options_that_do_not_fit_together_are_one_line_before_anything_is_written(tiny_run: dict[str, Path], tmp_path: Path, run_cli) -> None:
    result = run_cli("train", "--data", tiny_run["data"], "--out", tmp_path / "run", "--quiet", "-E", "patch_size=7", "--workers", "0")
    assert result.code == 2 and result.stderr.strip().splitlines() == [
        "error: encoder 'vit-scratch': image_size 64 is not a multiple of patch_size 7; fix its options"]
    assert not (tmp_path / "run").exists()


def test_a_training_that_diverged_says_so(tiny_run: dict[str, Path], tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--lr 1e10``: the validation loss was NaN in every epoch, so no weights were ever saved, and train
    ended with "No such file or directory: run/model.safetensors; check the path and the disk"."""
    from instacli import training

    measured = training.validation_metrics
    monkeypatch.setattr(training, "validation_metrics", lambda out, settings: {**measured(out, settings), "val_loss": float("nan")})
    run = tmp_path / "run"
    result = run_cli("train", "--data", tiny_run["data"], "--out", run, "--quiet", "--epochs", "2", "--workers", "0", "--lr", "0.5",
                     "-E", "image_size=32", "-E", "patch_size=8", "-E", "width=32", "-E", "heads=2")
    assert result.code == 2 and result.stderr.strip().splitlines() == [
        f"error: {run}: training diverged (validation loss nan after 2 epoch(s)), nothing was saved; "
        "train again with --overwrite and a lower --lr than 0.5"]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("flag, value, words", [
    ("--batch-size", "0", "--batch-size 0: Input should be greater than or equal to 1"),
    ("--batch-size", "-4", "--batch-size -4: Input should be greater than or equal to 1"),
    ("--batch-size", "1000000", "--batch-size 1000000: Input should be less than or equal to 4096"),  # held a million photos at once
    ("--workers", "-3", "--workers -3: Input should be greater than or equal to 0"),
])
def test_predict_and_evaluate_flags_out_of_range(tiny_run: dict[str, Path], tmp_path: Path, run_cli, command: str, flag: str, value: str, words: str) -> None:
    args = [tiny_run["src"], "--out", tmp_path / "p.csv"] if command == "predict" else ["--data", tiny_run["data"]]
    result = run_cli(command, tiny_run["run"], *args, flag, value)
    assert result.code == 2 and result.stderr.strip().splitlines() == [f"error: {words}"]
    assert not (tmp_path / "p.csv").exists()


PLUGIN_OPTIONS = [
    ("encoders", "vit-scratch", {"mlp_ratio": float("nan")}, "option mlp_ratio=nan: Input should be a finite number"),
    ("encoders", "vit-scratch", {"stem": "big"}, "option stem='big': Input should be 'patch' or 'conv'"),
    ("encoders", "vit-scratch", {"pool": "flatten", "head_dims": [4, 0]}, "option head_dims=[4, 0]: Input should be greater than or equal to 1"),
    ("encoders", "efficientnet-lite0", {"drop_path": 1.0}, "option drop_path=1.0: Input should be less than 1"),
    ("encoders", "efficientnet-lite0", {"image_size": 4096}, "option image_size=4096: Input should be less than or equal to 1024"),
    ("encoders", "inception-v3", {"dropout": -0.1}, "option dropout=-0.1: Input should be greater than or equal to 0"),
    ("encoders", "hf-vit", {"num_hidden_layers": 0}, "option num_hidden_layers=0: Input should be greater than or equal to 1"),
    ("encoders", "hf-vit", {"crop_pct": 1.5}, "option crop_pct=1.5: Input should be less than or equal to 1"),
    ("regressors", "conv1d", {"image_dim": -1}, "option image_dim=-1: Input should be greater than or equal to 0"),
    ("regressors", "mlp", {"image_dropout": 1}, "option image_dropout=1: Input should be less than 1"),
    ("regressors", "ridge", {"alpha": -1}, "option alpha=-1: Input should be greater than or equal to 0"),
    ("regressors", "gbrt", {"max_iter": 0}, "option max_iter=0: Input should be greater than or equal to 1"),
    ("regressors", "gbrt", {"loss": "poisson"}, "option loss='poisson': Input should be 'absolute_error' or 'squared_error'"),
    ("text_encoders", "minilm", {"max_length": 0}, "option max_length=0: Input should be greater than or equal to 1"),
    ("text_encoders", "hf-text", {"batch_size": -2}, "option batch_size=-2: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize("kind, name, options, words", PLUGIN_OPTIONS, ids=[f"{n} {o}" for _, n, o, _ in PLUGIN_OPTIONS])
def test_builtin_plugin_options_are_checked_from_their_signature(kind: str, name: str, options: dict, words: str) -> None:
    with pytest.raises(InstacliError) as info:
        getattr(registry, kind).check(name, options)  # nothing is built: cheap enough for every command to check first
    assert str(info.value) == f"{getattr(registry, kind).kind} '{name}' {words}"


def toy(*, width: Annotated[int, Field(ge=2, le=8)] = 4, act: Literal["relu", "gelu"] = "relu", sizes: tuple[int, ...] = ()) -> dict:
    """A third-party factory: its annotations are all the registry needs to check its options."""
    return {"width": width, "act": act, "sizes": sizes}


def test_third_party_factory_annotations_are_enforced_and_values_converted() -> None:
    fresh = Registry(kind="encoder", group="instacli.test-ranges", contract="builtins:dict")  # its toy components are dicts
    fresh.add("toy", toy)
    with pytest.raises(InstacliError, match=r"^encoder 'toy' option width=9: Input should be less than or equal to 8$"):
        fresh.create("toy", width=9)
    with pytest.raises(InstacliError, match=r"^encoder 'toy' option act='tanh': Input should be 'relu' or 'gelu'$"):
        fresh.create("toy", act="tanh")
    assert fresh.create("toy", width=8, sizes=[1, 2]) == {"width": 8, "act": "relu", "sizes": (1, 2)}  # JSON's list → the tuple it asks for



def test_options_whose_weights_do_not_fit_in_memory_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``-E width=100000`` was a torch traceback ("DefaultCPUAllocator: can't allocate memory")."""
    assert str(_refused(width=10**6)).startswith("encoder 'vit-scratch' (image_size=32, patch_size=8, heads=2, width=1000000): "
                                                 "its 54,625,081,250,000 weights need 203,494.3 GiB, more than the ")
    # an allocation that fails all the same (a factory that cannot build on the meta device) is the same one line
    monkeypatch.setattr(registry, "check_weights_fit", lambda *args: None)
    assert str(_refused(width=10**6)) == ("encoder 'vit-scratch' (image_size=32, patch_size=8, heads=2, width=1000000): "
                                          "its weights do not fit in this machine's memory; choose smaller options")


def _refused(**options: int) -> InstacliError:
    """The error of building vit-scratch with ``options`` while the address space is capped at 1 GB more than now."""
    import re
    import resource

    import torch  # noqa: F401  (imported, and the plugin too, before the cap: they map hundreds of MB)

    registry.encoders.check("vit-scratch", {})
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, hard))  # the 4 TB of weights fail at once, whatever the overcommit policy
    try:
        with pytest.raises(InstacliError) as info:
            registry.encoders.create("vit-scratch", image_size=32, patch_size=8, heads=2, **options)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return info.value


def _available(monkeypatch: pytest.MonkeyPatch, megabytes: float) -> None:
    """psutil reports ``megabytes`` of memory available."""
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": int(megabytes * 2**20)})())


def test_weights_that_fit_one_allocation_at_a_time_but_not_together_are_refused_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """``-E width=20000``: 22 billion weights in allocations of 1.6 GB each; the kernel killed the process without a word."""
    _available(monkeypatch, 4)  # vit-scratch's defaults: 2,038,512 weights, 7.8 MiB
    with pytest.raises(InstacliError, match=r"^encoder 'vit-scratch': its 2,038,512 weights need 0\.0 GiB, more than the 0\.0 GiB"):
        registry.encoders.create("vit-scratch")
    _available(monkeypatch, 16)
    assert registry.encoders.create("vit-scratch") is not None
    _available(monkeypatch, 1)  # pretrained weights: a fixed architecture, not counted (a meta build could download)
    assert registry.encoders.create("efficientnet-lite0") is not None


def test_checkpoints_without_a_pretrained_option_are_loaded_once_not_counted_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hf:ID`` and ``minilm`` take no ``pretrained`` option yet load a checkpoint: the weights check
    built them on the meta device first, which loaded (for a hub id: downloaded) the checkpoint a second time."""
    from transformers import AutoModel

    from tests.conftest import TINY_HF_DIR, save_tiny_hf

    folder = save_tiny_hf(TINY_HF_DIR / "vit")
    loads: list[str] = []
    load = AutoModel.from_pretrained.__func__
    monkeypatch.setattr(AutoModel, "from_pretrained", classmethod(lambda cls, source, **kw: loads.append(str(source)) or load(cls, source, **kw)))
    registry.encoders.create(f"hf:{folder}")
    registry.text_encoders.create("minilm")
    assert len(loads) == 2 and loads[0] == str(folder), loads
    assert registry.regressors.get("mlp").random_weights({}) and registry.encoders.get("timm:test_resnet").random_weights({})
    assert not registry.encoders.get("timm:test_resnet").random_weights({"pretrained": True})


def test_training_refuses_what_its_optimizer_state_would_not_fit_in(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    from instacli.settings import TrainSettings
    from instacli.training import train
    from tests.conftest import photo_dataset

    _, dataset = photo_dataset(tmp_path_factory, {"animal": 4, "landscape": 4})
    _available(monkeypatch, 16)  # the weights fit (7.8 MiB), their gradients and AdamW moments (23 MiB more) do not
    with pytest.raises(InstacliError, match=r"^training 2,0\d\d,\d{3} weights needs 0\.0 GiB for their gradients and optimizer state"):
        train(TrainSettings(data=dataset, out=tmp_path_factory.mktemp("run") / "run", epochs=1, workers=0))

def test_defaults_and_presets_of_builtins_pass_their_own_checks() -> None:
    for kind in ("encoders", "regressors", "text_encoders"):
        reg = getattr(registry, kind)
        for name in reg.names():
            entry = reg.get(name)
            defaults = {k: v for k, v in entry.options().items() if v is not None}
            reg.check(name, defaults)
            for preset in entry.presets.values():
                reg.check(name, preset)
        for prefix, entry in reg.prefixes.items():  # timm:, hf:
            reg.check(f"{prefix}:any", {k: v for k, v in entry.options().items() if v is not None})
