"""Concurrent writers, OS errors and leftovers (issue 15, items 7, 10 and part of 13): two commands
given one output, a full disk, a read-only or misplaced ``--out``, an unreadable run, a read-only
cache and the temp outputs of a killed process each end as one ``error:`` line, or a warning, never
a traceback or a silently mixed output.

Running as root, ``chmod`` cannot make a folder read-only here, so read-only and full-disk cases
raise the errno the system would give (``EROFS``, ``ENOSPC``) from the write that would meet it.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import make_photo_tree
from tests.test_cli_layer import STALLED_BUILD
from instacli.errors import InstacliError
from instacli.run_folder import RunFolder
from instacli.io import atomic_dir, atomic_file
from instacli_datasets import build_dataset

TINY = ["-E", "image_size=32", "-E", "patch_size=8", "-E", "width=32", "-E", "heads=2", "-E", "drop_path=0",
        "--epochs", "1", "--batch-size", "8", "--warmup-epochs", "0", "--quiet"]


def disk_full() -> OSError:
    """What a write to a full disk raises (no file name: the write call does not know it)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A photo folder, its dataset and a tiny trained run (a few seconds)."""
    from instacli.settings import TrainSettings
    from instacli.training import train

    root = tmp_path_factory.mktemp("os-errors")
    src = make_photo_tree(root / "src", {"animal": 6, "landscape": 6})
    build_dataset(src, root / "data", synthetic="seed", workers=1)
    options = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2, "drop_path": 0.0}
    train(TrainSettings(data=root / "data", out=root / "run", encoder_options=options, epochs=1, batch_size=8, warmup_epochs=0))
    return SimpleNamespace(src=src, data=root / "data", run=root / "run")


def one_line_error(result, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def hidden_leftovers(folder: Path) -> list[str]:
    """Temp outputs and lock files a command left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


LOCK_HOLDER = """
import sys
from pathlib import Path
from instacli.io import output_lock
with output_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


@contextmanager
def held_by_another_process(path: Path) -> Iterator[int]:
    """Another process holds the output lock of ``path`` for the block; yields its pid."""
    child = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "locked"
    try:
        yield child.pid
    finally:
        child.stdin.close()
        child.wait(timeout=60)


# --- 7: concurrent writers to one --out ---------------------------------------------------------------


def test_every_command_refuses_an_output_that_another_process_is_writing(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    commands = {
        "build": (tmp_path / "data", ["data", "build", made.src, "--out", tmp_path / "data", "--workers", "1"]),
        "predict": (tmp_path / "p.csv", ["predict", made.run, made.src, "--out", tmp_path / "p.csv", "--workers", "0"]),
        "train": (tmp_path / "run", ["train", "--data", made.data, "--out", tmp_path / "run", *TINY]),
        "compare": (tmp_path / "cmp", ["compare", "--data", made.data, "--out", tmp_path / "cmp", "--runs", made.run, "--no-baselines", "--quiet"]),
    }
    for name, (out, args) in commands.items():
        with held_by_another_process(out) as pid:
            one_line_error(run_cli(*args), str(out), f"being written by another instacli process (pid {pid})", "choose another --out")
        assert not out.exists() or name == "compare", name  # compare made its folder, wrote nothing in it
    assert hidden_leftovers(tmp_path) == []


def test_evaluate_whose_eval_folder_is_being_written_prints_its_metrics_then_fails(made: SimpleNamespace, run_cli) -> None:
    with held_by_another_process(RunFolder(made.run).evaluation(made.data, "test")) as pid:
        result = run_cli("evaluate", made.run, "--data", made.data, "--json", "--workers", "0")
    one_line_error(result, "not saved", f"(pid {pid})")
    assert json.loads(result.stdout)["n"] > 0


def stalled_build(src: Path, out: Path) -> subprocess.Popen:
    """A real ``data build`` stopped inside its atomic output folder (after decoding, before the swap)."""
    command = [sys.executable, "-c", STALLED_BUILD, "data", "build", str(src), "--out", str(out), "--workers", "1"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == "writing":
            return child
    raise AssertionError(child.communicate()[1])


def test_a_second_build_while_the_first_runs_fails_and_a_killed_ones_temp_folder_is_cleaned(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    first = stalled_build(made.src, tmp_path / "data")
    try:
        one_line_error(run_cli("data", "build", made.src, "--out", tmp_path / "data", "--workers", "1"), f"(pid {first.pid})")
    finally:
        first.send_signal(signal.SIGKILL)  # no cleanup: its hidden temp folder stays behind
        first.communicate(timeout=60)
    assert any(name.startswith(".data.tmp-") for name in hidden_leftovers(tmp_path))
    assert run_cli("data", "build", made.src, "--out", tmp_path / "data", "--workers", "1").code == 0
    assert hidden_leftovers(tmp_path) == [] and (tmp_path / "data" / "instacli_dataset.json").is_file()


def test_the_swap_rechecks_the_target(tmp_path: Path) -> None:
    """Something made the output while the command wrote it: without --overwrite it is kept, not replaced."""
    with pytest.raises(InstacliError, match="already exists"), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "mine").write_text("mine")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "theirs").write_text("theirs")
    assert os.listdir(tmp_path / "out") == ["theirs"]
    with pytest.raises(InstacliError, match="already exists"), atomic_file(tmp_path / "p.csv", overwrite=False) as handle:
        handle.write("mine")
        (tmp_path / "p.csv").write_text("theirs")
    assert (tmp_path / "p.csv").read_text() == "theirs"
    assert hidden_leftovers(tmp_path) == []


def test_the_lock_is_shared_by_nested_blocks_and_removed_after(tmp_path: Path) -> None:
    from instacli.io import output_lock

    with output_lock(tmp_path / "out"), output_lock(tmp_path / "out"):
        assert hidden_leftovers(tmp_path) == [".out.lock"]
    assert hidden_leftovers(tmp_path) == []


def test_taking_the_lock_removes_only_the_temp_outputs_of_that_output(tmp_path: Path) -> None:
    """What a SIGKILLed predict or build leaves (``.p.csv.<random>.tmp``, ``.data.tmp-<random>/``,
    ``.data.old-<random>/``) goes; the temp outputs of other names stay."""
    from instacli.io import output_lock

    (tmp_path / ".p.csv.k3j_x9az.tmp").write_text("half")
    (tmp_path / ".data.tmp-a1b2c3d4").mkdir()
    (tmp_path / ".data.old-a1b2c3d4").mkdir()
    (tmp_path / ".p.csv.v2.k3j_x9az.tmp").write_text("another output's")
    (tmp_path / ".data2.tmp-a1b2c3d4").mkdir()
    with output_lock(tmp_path / "p.csv"), output_lock(tmp_path / "data"):
        pass
    assert hidden_leftovers(tmp_path) == [".data2.tmp-a1b2c3d4", ".p.csv.v2.k3j_x9az.tmp"]


# --- 10: OS errors -------------------------------------------------------------------------------------


def _fail_writer(*args: object, **kwargs: object):
    def write(rows: object) -> None:
        raise disk_full()
    return write


@pytest.mark.parametrize("command", ["build", "predict", "train"])
def test_a_full_disk_is_one_line_naming_the_output(made: SimpleNamespace, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise disk_full()

    if command == "build":
        monkeypatch.setattr("instacli_datasets.build.write_json", full)
        out, args = tmp_path / "data", ["data", "build", made.src, "--out", tmp_path / "data", "--workers", "1"]
    elif command == "predict":
        monkeypatch.setattr("instacli.prediction._writer", _fail_writer)
        out, args = tmp_path / "p.csv", ["predict", made.run, made.src, "--out", tmp_path / "p.csv", "--workers", "0"]
    else:
        monkeypatch.setattr("instacli.run_folder.write_json", full)
        out, args = tmp_path / "run", ["train", "--data", made.data, "--out", tmp_path / "run", *TINY]
    one_line_error(run_cli(*args), str(out), "No space left on device", "free some space")
    assert hidden_leftovers(tmp_path) == []


def test_an_out_in_a_read_only_folder_fails_before_any_decoding(made: SimpleNamespace, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def read_only(path: object, *args: object, **kwargs: object) -> int:
        if Path(str(path)).parent == tmp_path / "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    def decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded before checking --out")

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr("instacli_datasets.build.collect", decode)
    one_line_error(run_cli("data", "build", made.src, "--out", tmp_path / "ro" / "data"), "ro/data: cannot write here (Read-only file system)")
    one_line_error(run_cli("predict", made.run, made.src, "--out", tmp_path / "ro" / "p.csv"), "Read-only file system")


def test_outs_where_a_file_or_folder_is_in_the_way(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    (tmp_path / "file").write_text("not a folder")
    one_line_error(run_cli("data", "build", made.src, "--out", tmp_path / "file" / "data"), "file/data: cannot write here")
    one_line_error(run_cli("train", "--data", made.data, "--out", tmp_path / "file", *TINY), "is a file, not a run folder")
    one_line_error(run_cli("compare", "--data", made.data, "--out", tmp_path / "file", "--runs", made.run, "--quiet"), "file: File exists")
    (tmp_path / "dir.csv").mkdir()
    one_line_error(run_cli("predict", made.run, made.src, "--out", tmp_path / "dir.csv", "--overwrite"), "dir.csv: is a folder")
    assert (tmp_path / "file").read_text() == "not a folder" and (tmp_path / "dir.csv").is_dir()


def test_overwrite_replaces_only_an_earlier_output_of_the_same_kind(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    """``evaluate --out RUN --overwrite`` deleted the run, and ``--out PHOTOS`` the photos; so did explain."""
    run = Path(shutil.copytree(made.run, tmp_path / "run"))
    photos = make_photo_tree(tmp_path / "photos", {"animal": 1})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for folder in (run, photos):
        one_line_error(run_cli("evaluate", made.run, "--data", made.data, "--out", folder, "--overwrite"),
                       f"--out {folder}: exists and is not an instacli evaluation folder (no metrics.json); refusing to replace it")
        one_line_error(run_cli("explain", made.run, made.src, "--out", folder, "--overwrite"),
                       f"--out {folder}: exists and is not an instacli explanation folder (no index.html)")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    evaluation = tmp_path / "evaluation"
    for again in ([], ["--overwrite"]):  # an earlier evaluation is replaced
        assert run_cli("evaluate", made.run, "--data", made.data, "--out", evaluation, *again).code == 0


def test_predict_never_writes_over_its_metadata_table(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    """``predict --metadata t.csv --out t.csv --overwrite`` replaced the input table with the predictions."""
    table = tmp_path / "t.csv"
    table.write_text("file_name,comments\nanimal/animal_00.jpg,3\n")
    one_line_error(run_cli("predict", made.run, made.src, "--metadata", table, "--out", table, "--overwrite"),
                   f"--out {table}: is the --metadata table")
    assert table.read_text() == "file_name,comments\nanimal/animal_00.jpg,3\n"


def test_compare_writes_into_no_folder_but_a_comparison(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    """``compare --out .`` in a project folder replaced its report.md and results.json without a word."""
    (tmp_path / "report.md").write_text("mine")
    one_line_error(run_cli("compare", "--data", made.data, "--out", tmp_path, "--runs", made.run, "--quiet"),
                   f"--out {tmp_path}: exists and is not an instacli comparison folder (no results.json or runs/)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"] and (tmp_path / "report.md").read_text() == "mine"

def test_compare_lists_a_run_given_twice_once(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    """``compare --runs RUN,RUN/`` evaluated the run twice and listed it twice."""
    result = run_cli("compare", "--data", made.data, "--out", tmp_path / "cmp", "--runs", f"{made.run},{made.run}/", "--runs", made.run,
                     "--no-baselines", "--quiet")
    assert result.code == 0, result.stderr
    assert len(json.loads((tmp_path / "cmp" / "results.json").read_text())["runs"]) == 1


def test_an_unreadable_config_json_is_one_line(made: SimpleNamespace, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = pathlib.Path.open

    def unreadable(self: Path, *args: object, **kwargs: object):
        if self.name == "config.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", unreadable)
    one_line_error(run_cli("predict", made.run, made.src, "--out", tmp_path / "p.csv"), "config.json", "Permission denied")


def test_a_cache_that_cannot_be_written_warns_and_the_command_works(made: SimpleNamespace, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setenv("INSTACLI_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.warns(UserWarning, match="cannot write the cache folder .*INSTACLI_CACHE"):
        result = run_cli("evaluate", made.run, "--data", made.data, "--json", "--workers", "0")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] is not None


def test_the_cache_warning_is_one_line_on_the_console(made: SimpleNamespace, tmp_path: Path) -> None:
    """It was Python's two lines: `.../decode_cache.py:108: UserWarning: instacli: …` and the source line."""
    (tmp_path / "file").write_text("in the way")
    env = {**os.environ, "INSTACLI_CACHE": str(tmp_path / "file" / "cache")}
    done = subprocess.run([sys.executable, "-c", "from instacli.cli.main import main; main()", "evaluate", str(made.run), "--data", str(made.data),
                           "--json", "--workers", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"warning: cannot write the cache folder {tmp_path / 'file' / 'cache'} (INSTACLI_CACHE): Not a directory; "
                                        "going on without caching; point INSTACLI_CACHE at a writable folder"]


def test_evaluate_of_a_read_only_run_prints_its_metrics_before_failing(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "run"
    shutil.copytree(made.run, run, ignore=shutil.ignore_patterns("eval"))
    (run / "eval").write_text("a file where eval/ should be")  # mkdir fails as in a read-only run
    result = run_cli("evaluate", run, "--data", made.data, "--json", "--workers", "0")
    one_line_error(result, "the metrics above were not saved", "eval")
    printed = json.loads(result.stdout)
    assert printed["n"] > 0 and printed["accuracy"] is not None and printed["outputs"] is None
    result = run_cli("evaluate", run, "--data", made.data, "--workers", "0")
    assert "accuracy" in result.stdout and "Confusion matrix" in result.stdout
    one_line_error(result, "not saved")


# --- 13: a run folder that is not a run, torch's refusal, settings from the environment ------------------


def test_train_refuses_an_out_that_is_not_a_run(made: SimpleNamespace, tmp_path: Path, run_cli) -> None:
    before = sorted(p.name for p in made.data.iterdir())
    one_line_error(run_cli("train", "--data", made.data, "--out", made.data, *TINY), "is not an instacli run")
    assert sorted(p.name for p in made.data.iterdir()) == before
    photos = make_photo_tree(tmp_path / "photos", {"animal": 1})
    (photos / "metrics.jsonl").write_text('{"mine": 1}\n')
    one_line_error(run_cli("train", "--data", made.data, "--out", photos, *TINY), "is not an instacli run")
    assert (photos / "metrics.jsonl").read_text() == '{"mine": 1}\n'


class _Pickled:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_a_refused_pickle_in_pretrained_weights_is_one_line(tmp_path: Path) -> None:
    import torch

    from instacli_plugins.encoders.inception_v3 import read_state_dict
    from instacli_plugins.encoders.timm_backbone import build_network

    torch.save({"weight": torch.zeros(1), "payload": _Pickled()}, tmp_path / "w.pth")
    for load in (lambda: read_state_dict(tmp_path / "w.pth"), lambda: build_network("test_resnet", str(tmp_path / "w.pth"), None, 0.0)):
        with pytest.raises(InstacliError) as caught:
            load()
        message = str(caught.value)
        assert "\n" not in message and "refused for safety" in message and "getcwd" in message
        assert "weights_only` set to `False`" not in message and "weights_only=False" not in message  # timm's advice too


def test_bad_json_in_an_environment_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from instacli.settings import load_settings

    monkeypatch.setenv("INSTACLI_ENCODER_OPTIONS", "{width: 8")
    with pytest.raises(InstacliError, match=r"^INSTACLI_ENCODER_OPTIONS: not valid JSON") as caught:
        load_settings(data=Path("d"))
    assert "TOML" not in str(caught.value) and "None" not in str(caught.value)


def test_evaluate_of_a_plain_folder_is_labelled_as_the_folder_whatever_the_split(made: SimpleNamespace, run_cli) -> None:
    result = run_cli("evaluate", made.run, "--data", made.src, "--split", "validation", "--json", "--workers", "0")
    assert result.code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["split"] is None and Path(printed["outputs"]).name == "src-folder"
