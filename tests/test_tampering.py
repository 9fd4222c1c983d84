"""Tampered or damaged run, checkpoint, dataset and cache folders (issue 15, item 8).

Every damaged file must end as one ``error:`` line that names the file and says what to do (restore,
retrain, start over, rebuild), never a traceback, and never a silent wrong answer (a NaN
``target_std`` used to give NaN likes with exit 0). A damaged cache is rebuilt instead. The tiny
run, its dataset and an interrupted run with a checkpoint are made once for the module; each test
damages a copy.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import Crash, CrashAt, TINY_VIT, make_photo_tree
from instacli.errors import InstacliError
from instacli.model import load_run



@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A built dataset, a trained one-epoch run, and a run interrupted in its second epoch (with a checkpoint)."""
    from instacli.settings import TrainSettings
    from instacli.training import train
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("tampering")
    make_photo_tree(root / "src", {"animal": 6, "landscape": 6})
    build_dataset(root / "src", root / "data", synthetic="seed", workers=1)
    common = dict(data=root / "data", encoder_options=TINY_VIT, batch_size=4, warmup_epochs=0, workers=0)
    train(TrainSettings(out=root / "run", epochs=1, **common))
    with pytest.raises(Crash):
        train(TrainSettings(out=root / "interrupted", epochs=3, **common), CrashAt(4))  # 2 batches an epoch: dies in epoch 2
    assert (root / "interrupted" / "checkpoint" / "trainer_state.json").is_file()
    return {"src": root / "src", "data": root / "data", "run": root / "run", "interrupted": root / "interrupted"}


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Damage: ``change`` edits the parsed JSON file ``name`` in place, which is written back."""

    def damage(folder: Path) -> None:
        content = json.loads((folder / name).read_text())
        change(content)
        (folder / name).write_text(json.dumps(content))

    return damage


def edit_config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Damage: ``change`` edits the parsed config.json in place, which is written back."""
    return edit_json("config.json", change)


def write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def truncate(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        content = (folder / name).read_bytes()
        (folder / name).write_bytes(content[: len(content) // 2])

    return damage


def nan_weights(path: Path) -> None:
    """Damage: the category head's last weights become NaN, shapes kept (predict crashed on the NaN likes)."""
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    state["classifier.2.weight"].fill_(float("nan"))
    save_file(state, path)


class Evil:
    """A pickle that would run code if unpickled unrestricted."""

    def __reduce__(self) -> tuple:
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


RUN_DAMAGE = {
    "empty weights": (write("model.safetensors", b""), "model.safetensors: not a readable safetensors file (Error while deserializing header: header too small)"),
    "truncated weights": (truncate("model.safetensors"), "model.safetensors: not a readable safetensors file"),
    "pickled weights": (write("model.safetensors", pickle.dumps(Evil())), "model.safetensors: not a readable safetensors file"),
    "bogus header length": (write("model.safetensors", (2**40).to_bytes(8, "little") + b"{}"), "header too large"),
    "a third class name": (edit_config(lambda c: c["class_names"].append("food")), "model.safetensors: does not match config.json (size mismatch for classifier.2.weight"),
    "repeated class names": (edit_config(lambda c: c.update(class_names=["animal", "animal"])), "config.json: class_names: repeats 'animal'"),
    "another encoder": (edit_config(lambda c: c.update(encoder="hf-vit", encoder_options={"image_size": 32, "hidden_size": 32, "num_attention_heads": 2})),
                        "model.safetensors: does not match config.json"),
    "encoder width edited": (edit_config(lambda c: c["encoder_options"].update(width=64)), "does not match config.json (size mismatch for encoder."),
    "a scaler feature more": (edit_config(lambda c: c["scaler"]["features"].append("followers")), "config.json: scaler: 3 features but 2 medians"),
    "negative encoder option": (edit_config(lambda c: c["encoder_options"].update(width=-8)),
                                "config.json: encoder 'vit-scratch' option width=-8: Input should be greater than or equal to 1"),
    "options that do not fit together": (edit_config(lambda c: c["encoder_options"].update(patch_size=7)),  # did not name the file
                                         "config.json: encoder 'vit-scratch': image_size 32 is not a multiple of patch_size 7; the run folder was edited"),
    "unknown encoder option": (edit_config(lambda c: c["encoder_options"].update(bogus=1)), "config.json: encoder 'vit-scratch' has no option 'bogus'"),
    "bad pool option": (edit_config(lambda c: c["encoder_options"].update(pool="evil")), "option pool='evil': Input should be 'cls', 'mean' or 'flatten'"),
    "config is a list": (write("config.json", b'[{"encoder": "vit-scratch"}]'), "config.json: its content: Input should be a dictionary"),
    "config without class_names": (edit_config(lambda c: c.pop("class_names")), "config.json: class_names: Field required"),
    "config without scaler": (edit_config(lambda c: c.pop("scaler")), "config.json: scaler: Field required"),
    "config not JSON": (write("config.json", b"{"), "config.json: not valid JSON"),
    "task evil": (edit_config(lambda c: c.update(task="evil")), "config.json: task='evil': Input should be 'both', 'category' or 'likes'"),
    "target_std NaN": (edit_config(lambda c: c["scaler"].update(target_std=float("nan"))), "config.json: scaler.target_std=nan: Input should be a finite number"),
    "target_std 0": (edit_config(lambda c: c["scaler"].update(target_std=0)), "scaler.target_std=0: Input should be greater than 0"),
    "feature std 0": (edit_config(lambda c: c["scaler"].update(std=[0.0, 1.0])), "scaler.std.0=0.0: Input should be greater than 0"),
    "temperature 0": (edit_config(lambda c: c.update(temperature=0)), "config.json: temperature=0: Input should be greater than 0"),
    "temperature -1": (edit_config(lambda c: c.update(temperature=-1)), "temperature=-1: Input should be greater than 0"),
    "temperature NaN": (edit_config(lambda c: c.update(temperature=float("nan"))), "temperature=nan: Input should be a finite number"),
    "NaN weights": (lambda run: nan_weights(run / "model.safetensors"), "model.safetensors: classifier.2.weight holds NaN or infinite values"),
    "threshold infinite": (edit_config(lambda c: c.update(unfamiliar_threshold=float("inf"))), "unfamiliar_threshold=inf: Input should be a finite number"),
}


@pytest.mark.parametrize("damage, words", RUN_DAMAGE.values(), ids=RUN_DAMAGE.keys())
def test_damaged_run_is_one_line_naming_the_file(made: dict[str, Path], tmp_path: Path, damage: Callable[[Path], None], words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = copy_of(made["run"], tmp_path)
    damage(run)
    with pytest.raises(InstacliError) as info:
        load_run(run)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(run / "")), message
    assert words in message, message
    assert "restore it from a copy or retrain the run" in message
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_nan_target_std_stops_predict_and_evaluate_with_exit_2(made: dict[str, Path], tmp_path: Path, run_cli, command: str) -> None:
    run = copy_of(made["run"], tmp_path)
    edit_config(lambda c: c["scaler"].update(target_std=float("nan")))(run)
    args = [run, made["src"], "--out", tmp_path / "p.csv"] if command == "predict" else [run, "--data", made["data"]]
    result = run_cli(command, *args, "--workers", "0")
    assert result.code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {run / 'config.json'}: scaler.target_std=nan: Input should be a finite number; "
                                                  "the run folder was edited or damaged: restore it from a copy or retrain the run"]
    assert not (tmp_path / "p.csv").exists()


def test_an_absurd_target_mean_predicts_the_largest_count_instead_of_crashing(made: dict[str, Path], tmp_path: Path, run_cli) -> None:
    """exp(1e6) overflowed to inf, and predict crashed turning it into a whole count."""
    from instacli.features import MAX_LIKES

    run = copy_of(made["run"], tmp_path)
    edit_config(lambda c: c["scaler"].update(target_mean=1e6))(run)
    result = run_cli("predict", run, made["src"], "--out", tmp_path / "p.parquet", "--workers", "0")
    assert result.code == 0, result.stderr
    assert set(pd.read_parquet(tmp_path / "p.parquet")["likes"]) == {int(MAX_LIKES)}


def test_untampered_run_still_loads(made: dict[str, Path]) -> None:
    loaded = load_run(made["run"])
    assert loaded.config.class_names == ["animal", "landscape"] and loaded.config.task == "both"
    assert np.isfinite(loaded.scaler.target_std) and loaded.config.temperature > 0


CHECKPOINT_DAMAGE = {
    "truncated optimizer": (truncate("optimizer.bin"), "damaged checkpoint (PytorchStreamReader failed reading zip archive"),
    "empty optimizer": (write("optimizer.bin", b""), "damaged checkpoint (EOFError)"),
    "pickled optimizer": (write("optimizer.bin", pickle.dumps(Evil())), "a checkpoint file holds more than tensors (refused, not run)"),
    "truncated scheduler": (truncate("scheduler.bin"), "damaged checkpoint"),
    "truncated weights": (truncate("model.safetensors"), "damaged checkpoint (Error while deserializing header"),
    "missing weights": (lambda folder: (folder / "model.safetensors").unlink(), "damaged checkpoint ([Errno 2] No such file or directory"),
    "truncated trainer state": (truncate("trainer_state.json"), "trainer_state.json: its content: Invalid JSON"),
    "trainer state a list": (write("trainer_state.json", b"[]"), "trainer_state.json: its content: Input should be an object"),
    "trainer state epoch text": (lambda folder: (folder / "trainer_state.json").write_text(
        json.dumps({**json.loads((folder / "trainer_state.json").read_text()), "epoch": "x"})), "trainer_state.json: epoch='x': Input should be a valid integer"),
}


@pytest.mark.parametrize("damage, words", CHECKPOINT_DAMAGE.values(), ids=CHECKPOINT_DAMAGE.keys())
def test_damaged_checkpoint_stops_resume_with_one_line(made: dict[str, Path], tmp_path: Path, run_cli, damage: Callable[[Path], None],
                                                       words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = copy_of(made["interrupted"], tmp_path)
    damage(run / "checkpoint")
    result = run_cli("train", "--out", run, "--resume", "--quiet")
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"error: {run / 'checkpoint'}") and words in lines[0], lines[0]
    assert "start the run over with --overwrite" in lines[0]
    assert not (tmp_path / "PWNED").exists()


def test_damaged_settings_json_stops_resume_with_one_line(made: dict[str, Path], tmp_path: Path, run_cli) -> None:
    run = copy_of(made["interrupted"], tmp_path)
    truncate("settings.json")(run)
    result = run_cli("train", "--out", run, "--resume", "--quiet")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"{run / 'settings.json'}: not valid JSON" in result.stderr and "--overwrite" in result.stderr


DATASET_DAMAGE = {
    "truncated instacli_dataset.json": (truncate("instacli_dataset.json"), "instacli_dataset.json: its content: Invalid JSON"),
    "instacli_dataset.json a list": (write("instacli_dataset.json", b"[]"), "instacli_dataset.json: its content: Input should be an object"),
    "instacli_dataset.json without a key": (write("instacli_dataset.json", b'{"class_names": ["a"]}'), "instacli_dataset.json: engagement: Field required"),
    "class_names edited": (edit_json("instacli_dataset.json", lambda info: info.update(class_names=["animal"])),  # train: IndexError
                           "instacli_dataset.json: class_names ['animal'] are not the categories of its train split (['animal', 'landscape'])"),
    "truncated train shard": (truncate("train/data-00000-of-00001.arrow"), "cannot read the dataset (Expected to be able to read"),
    "empty test shard": (write("test/data-00000-of-00001.arrow", b""), "cannot read the dataset (Tried reading schema message"),
    "truncated state.json": (truncate("test/state.json"), "cannot read the dataset"),
    "truncated dataset_dict.json": (truncate("dataset_dict.json"), "cannot read the dataset"),
}


@pytest.mark.parametrize("damage, words", DATASET_DAMAGE.values(), ids=DATASET_DAMAGE.keys())
def test_damaged_dataset_is_one_line_saying_rebuild(made: dict[str, Path], tmp_path: Path, damage: Callable[[Path], None], words: str) -> None:
    from instacli_datasets import load_data

    data = copy_of(made["data"], tmp_path)
    damage(data)
    with pytest.raises(InstacliError) as info:
        load_data(data, "test")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(data)) and words in message, message
    assert message.endswith("the dataset is damaged: rebuild it with `instacli data build`")


def test_damaged_dataset_stops_train_and_evaluate_with_exit_2(made: dict[str, Path], tmp_path: Path, run_cli) -> None:
    data = copy_of(made["data"], tmp_path)
    truncate("train/data-00000-of-00001.arrow")(data)
    for args in (["evaluate", made["run"], "--data", data, "--split", "train"], ["train", "--data", data, "--out", tmp_path / "r", "--quiet"]):
        result = run_cli(*args)
        assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-3000:]
        assert f"error: {data}: cannot read the dataset" in result.stderr


CACHE_DAMAGE = {
    "truncated": lambda content: content[: len(content) // 2],
    "empty": lambda content: b"",
    "header only": lambda content: content[:128],
    "garbage": lambda content: b"\x93NUMPY garbage" + bytes(len(content)),
    "pickled": lambda content: pickle.dumps(Evil()),
}


@pytest.mark.parametrize("damage", CACHE_DAMAGE.values(), ids=CACHE_DAMAGE.keys())
def test_damaged_decode_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[bytes], bytes]) -> None:
    from instacli.decode_cache import decode_split

    monkeypatch.setenv("INSTACLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    photos = make_photo_tree(tmp_path / "src", {"a": 3, "b": 2})
    encoded = [{"bytes": None, "path": str(p)} for p in sorted(photos.rglob("*.jpg"))]
    reference = decode_split(encoded, 16, "key", workers=0).clone()
    cache = tmp_path / "cache" / "decoded-key-16.npy"
    cache.write_bytes(damage(cache.read_bytes()))
    assert torch_equal(decode_split(encoded, 16, "key", workers=0), reference)
    assert torch_equal(decode_split(encoded, 16, "key", workers=0), reference)  # and the rebuilt file is read back
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage", CACHE_DAMAGE.values(), ids=CACHE_DAMAGE.keys())
def test_damaged_text_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[bytes], bytes]) -> None:
    from instacli import registry
    from instacli.text import embed_texts

    class Counting:
        embed_dim, saved_options, calls = 4, {}, 0

        def encode(self, texts: list[str]) -> np.ndarray:
            Counting.calls += 1
            return np.arange(len(texts) * 4, dtype=np.float32).reshape(len(texts), 4)

    monkeypatch.setenv("INSTACLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry.text_encoders, "create", lambda name, **options: Counting())
    texts = ["a caption", "", "another"]
    reference = embed_texts("fake", {}, texts, "key")
    [cache] = (tmp_path / "cache").glob("text-*.npy")
    cache.write_bytes(damage(cache.read_bytes()))
    assert np.array_equal(embed_texts("fake", {}, texts, "key"), reference) and Counting.calls == 2
    assert np.array_equal(embed_texts("fake", {}, texts, "key"), reference) and Counting.calls == 2  # rebuilt, then read
    assert not (tmp_path / "PWNED").exists()


def torch_equal(a, b) -> bool:
    return bool((a == b).all()) and a.shape == b.shape
