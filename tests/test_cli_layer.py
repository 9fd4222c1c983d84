"""The outer layer of the ``instacli`` command: usage errors, interruptions, flags, ``--help``, ``--version``,
and ``python -m instacli`` from any folder (issue 14, items 1, 2, 6 and 13)."""

from __future__ import annotations

import inspect
import os
import pkgutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from instacli import __version__
from instacli.settings import TrainSettings
from tests.conftest import TINY_VIT, make_photo_tree

#: The console script is `instacli = instacli.cli.main:main`; this runs the same function in a child.
MAIN = [sys.executable, "-c", "from instacli.cli.main import main; main()"]


def _flat(text: str) -> str:
    """Output with rich's box borders and line wrapping removed, so that assertions do not depend on the width."""
    return " ".join(text.replace("│", " ").split())


# -- item 1: usage errors are click's usage message and exit 2, never a traceback -------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "[OPTIONS] COMMAND [ARGS]"),
        (["data", "build", "photos"], "Missing option '--out'"),
        (["data", "build", "photos", "--out", "d", "--split-into", "3"], "No such option"),
        (["trian"], "No such command 'trian'. Did you mean 'train'?"),
        (["train", "--epochs", "two"], "Invalid value for '--epochs'"),
    ],
)
def test_usage_errors_print_usage_and_exit_2(run_cli, args: list[str], message: str) -> None:
    result = run_cli(*args)
    output = _flat(result.stdout + result.stderr)
    assert result.code == 2 and message in output and "Traceback" not in output


def test_usage_error_of_the_real_entry_point_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([*MAIN, "trian"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Did you mean 'train'?" in _flat(done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""


# -- item 2: Ctrl-C (and SIGTERM) stop every command with one line and 128 + signal ------------------

#: Every command, the arguments it needs to reach its work, and the function it hands that work to.
COMMANDS = {
    "data build": (["data", "build", "{tmp}", "--out", "{tmp}/d"], "instacli_datasets.build_dataset"),
    "data info": (["data", "info", "{tmp}"], "instacli_datasets.summary.summarize"),
    "train": (["train", "--data", "{tmp}", "--out", "{tmp}/run"], "instacli.training.train"),
    "evaluate": (["evaluate", "{tmp}", "--data", "{tmp}"], "instacli.evaluation.evaluate"),
    "predict": (["predict", "{tmp}", "{tmp}", "--out", "{tmp}/p.csv"], "instacli.prediction.predict_folder"),
    "serve": (["serve", "{tmp}"], "instacli.serve.create_app"),
    "export": (["export", "{tmp}"], "instacli.export.export_onnx"),
    "explain": (["explain", "{tmp}", "{tmp}", "--out", "{tmp}/why"], "instacli.model.load_run"),
    "compare": (["compare", "--data", "{tmp}", "--out", "{tmp}/r", "--encoders", "vit-scratch"], "instacli.cli.compare.compare"),
    "report": (["report", "{tmp}"], "instacli.report.rerender"),
    "demo": (["demo", "--out", "{tmp}/demo"], "instacli.demo.run_demo"),
    "tune": (["tune", "--data", "{tmp}", "--out", "{tmp}/study"], "instacli.cli.tune.tune"),
    "models list": (["models", "list"], "instacli.cli.models.Table"),
    "models show": (["models", "show", "vit-scratch"], "instacli.cli.models.find"),
}


def _command_names(command: object, prefix: str = "") -> list[str]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [prefix.strip()]
    return [name for key, sub in subcommands.items() for name in _command_names(sub, f"{prefix} {key}")]


def test_the_interrupt_test_covers_every_command() -> None:
    from instacli.cli.main import app

    assert sorted(_command_names(typer.main.get_command(app))) == sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_ctrl_c_in_any_command_says_interrupted_and_exits_130(run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str) -> None:
    args, target = COMMANDS[command]

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    result = run_cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.code == 130, result.stderr
    assert result.stderr.startswith("interrupted") and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("cli-layer")
    build_dataset(make_photo_tree(root / "src"), root / "data", synthetic="seed", seed=1, workers=1)
    return root / "data"


def test_ctrl_c_stops_a_real_training_with_a_message_and_130(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", tiny_dataset, "--out", run, "--epochs", "100000", "--patience", "100000", "--batch-size", "4",
            "--workers", "1", "-E", "image_size=32", "-E", "patch_size=8", "-E", "width=16", "-E", "heads=2"]
    child = subprocess.Popen([*MAIN, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # training is under way once the first epoch is recorded
    child.send_signal(signal.SIGINT)
    try:
        _, stderr = child.communicate(timeout=120)
    finally:
        child.kill()  # a failed run must not leave a training of 100,000 epochs behind
    assert child.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr


class _SwallowsCtrlC:
    """Deleted at once, its finalizer receives a Ctrl-C, as a DataLoader iterator's may while it shuts
    its workers down at the end of an epoch: Python prints the KeyboardInterrupt as ignored and drops it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the handler runs here, inside the finalizer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing is the point
def test_a_ctrl_c_that_a_finalizer_swallowed_still_stops_training(tiny_dataset: Path, tmp_path: Path) -> None:
    """The run that went on training after its Ctrl-C (its child found still training minutes later)."""
    from instacli.interrupts import Interrupted, signals_interrupt
    from instacli.training import train

    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(len(asked))
        if len(asked) == 2:
            _SwallowsCtrlC()
        return False

    settings = TrainSettings(data=tiny_dataset, out=tmp_path / "run", epochs=50, batch_size=2, workers=0,
                             encoder_options={"image_size": 32, "patch_size": 8, "width": 16, "heads": 2})
    with signals_interrupt(), pytest.raises(Interrupted) as stopped:
        train(settings, should_stop=should_stop)
    assert stopped.value.signum == signal.SIGINT and len(asked) == 2, "stopped after the next batch, not 50 epochs later"


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli.training import train

    run = tmp_path_factory.mktemp("cli-layer-run") / "run"
    train(TrainSettings(data=tiny_dataset, out=run, epochs=1, batch_size=8, workers=0, warmup_epochs=0, encoder_options=TINY_VIT))
    return run


#: Per command: its arguments (``{run}``, ``{data}``, ``{tmp}``), what it must not leave behind, and a
#: function it calls once per photo or batch, after which a finalizer swallows a Ctrl-C.
SWALLOWED_IN = {
    "data build": (["data", "build", "{tmp}/src", "--out", "{tmp}/out", "--workers", "1", "--synthetic-engagement", "seed"],
                   "instacli_datasets.photo_bytes.encode_photo"),
    "predict": (["predict", "{run}", "{tmp}/src", "--out", "{tmp}/out.csv", "--batch-size", "1", "--workers", "0"],
                "instacli.prediction.Predictor.rows"),
    "evaluate": (["evaluate", "{run}", "--data", "{data}", "--out", "{tmp}/out", "--batch-size", "1", "--workers", "0"],
                 "instacli.evaluation.score_views"),
}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing is the point
@pytest.mark.parametrize("command", sorted(SWALLOWED_IN))
def test_a_ctrl_c_that_a_finalizer_swallowed_still_stops_every_long_loop(command: str, run_cli, tiny_run: Path, tiny_dataset: Path,
                                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """predict, evaluate and data build went on to the end, exit 0 and a full output, after such a Ctrl-C."""
    args, target = SWALLOWED_IN[command]
    make_photo_tree(tmp_path / "src", {"animal": 3, "landscape": 3})
    original = pkgutil.resolve_name(target)
    calls: list[int] = []

    def then_swallowed(*args: object, **kwargs: object) -> object:
        calls.append(1)
        answer = original(*args, **kwargs)
        _SwallowsCtrlC()
        return answer

    monkeypatch.setattr(target, then_swallowed)
    result = run_cli(*(a.format(run=tiny_run, data=tiny_dataset, tmp=tmp_path) for a in args))
    assert result.code == 130 and result.stderr.startswith("interrupted"), result.stderr
    assert len(calls) == 1, "stopped at the next photo or batch, not at the end"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no temp file, no lock


#: ``data build`` that stops inside its atomic output folder, saying so on stdout.
STALLED_BUILD = """
import time
import instacli_datasets.build as build
def stall(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(120)
build.write_json = stall
from instacli.cli.main import main
main()
"""


def test_sigterm_stops_like_ctrl_c_and_leaves_no_temp_output(tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 3, "landscape": 3})
    command = [sys.executable, "-c", STALLED_BUILD, "data", "build", str(src), "--out", str(tmp_path / "data"), "--workers", "1",
               "--val-fraction", "0.34", "--test-fraction", "0.34"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == "writing":
            break
    child.terminate()
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # the hidden temp folder of the dataset is gone


# -- item 6: durations, the three training flags, --help defaults, --version -----------------------


@pytest.fixture
def trained_with(monkeypatch: pytest.MonkeyPatch) -> list[TrainSettings]:
    """The settings ``instacli train`` hands to the library (nothing is trained)."""
    seen: list[TrainSettings] = []
    monkeypatch.setattr("instacli.training.train", lambda settings, reporter=None: seen.append(settings))
    return seen


def test_train_takes_a_duration_and_the_three_optimizer_flags(run_cli, trained_with: list[TrainSettings], tmp_path: Path) -> None:
    result = run_cli("train", "--data", tmp_path, "--time-budget", "5m", "--weight-decay", "0.01", "--warmup-epochs", "0.5",
                     "--label-smoothing", "0")
    assert result.code == 0, result.stderr
    settings = trained_with[0]
    assert (settings.time_budget, settings.weight_decay, settings.warmup_epochs, settings.label_smoothing) == (300.0, 0.01, 0.5, 0.0)
    result = run_cli("train", "--data", tmp_path, "--time-budget", "soon")
    assert result.code == 2 and "time budget 'soon': expected a duration like 600, 90s, 10m" in _flat(result.stderr)


def test_a_duration_in_the_environment_is_read_too(run_cli, trained_with: list[TrainSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTACLI_TIME_BUDGET", "1h30m")
    assert run_cli("train", "--data", tmp_path).code == 0
    assert trained_with[0].time_budget == 5400.0


def _help_line(run_cli, command: str, option: str) -> str:
    result = run_cli(command, "--help")
    assert result.code == 0
    lines = [line for line in result.stdout.splitlines() if f"{option} " in line]
    assert lines, result.stdout
    return _flat(lines[0])


@pytest.mark.parametrize(("command", "option", "field"), [
    ("train", "--epochs", "epochs"), ("train", "--lr", "lr"), ("train", "--weight-decay", "weight_decay"),
    ("train", "--batch-size", "batch_size"), ("compare", "--epochs", "epochs"), ("compare", "--workers", "workers"),
])
def test_help_shows_the_defaults_of_the_settings_model(run_cli, monkeypatch: pytest.MonkeyPatch, command: str, option: str, field: str) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert f"[default: ({TrainSettings.model_fields[field].default})]" in _help_line(run_cli, command, option)


def test_every_setting_is_a_train_flag_with_the_help_of_its_field(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags are generated from TrainSettings: a new setting is a flag, with its field's help, without a second definition."""
    monkeypatch.setenv("COLUMNS", "400")
    text = _flat(run_cli("train", "--help").stdout)
    for name, field in TrainSettings.model_fields.items():
        flags = (field.json_schema_extra or {}).get("flag") or "--" + name.replace("_", "-")
        assert (flags if isinstance(flags, str) else flags[0]) in text, name
        assert " ".join(field.description.split()) in text, name


def test_generated_flags_reach_the_settings_converted(run_cli, trained_with: list[TrainSettings], tmp_path: Path) -> None:
    result = run_cli("train", "--data", tmp_path, "--features", "comments, followers", "-E", "width=96", "-E", "pool=cls",
                     "--text-option", "pretrained=x", "--no-freeze-encoder", "--probe-first", "--task", "category")
    assert result.code == 0, result.stderr
    settings = trained_with[0]
    assert settings.features == ["comments", "followers"] and settings.encoder_options == {"width": 96, "pool": "cls"}
    assert settings.text_options == {"pretrained": "x"} and settings.freeze_encoder is False and settings.probe_first
    assert settings.task == "category" and settings.epochs == TrainSettings.model_fields["epochs"].default
    result = run_cli("train", "--data", tmp_path, "--task", "everything")
    assert result.code == 2 and "task='everything'" in _flat(result.stderr)


def _pages(command, path: tuple[str, ...] = ()):
    """Every command of the tree under ``command`` with the arguments that reach it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _pages(sub, (*path, name))


def test_every_help_text_is_printed_as_written(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich markup ate bracketed text: `'^([a-z]+-[a-z]+)_'` showed as `'^(+-+)_'`, `'instacli[ray]'` as
    `'instacli'`, and demo's `[default: a new temp folder]` vanished."""
    from instacli.cli.main import app

    monkeypatch.setenv("COLUMNS", "400")
    for path, command in _pages(typer.main.get_command(app)):
        text = _flat(run_cli(*path, "--help").stdout)
        for param in command.params:
            if getattr(param, "help", None):
                assert " ".join(param.help.replace("\\[", "[").split()) in text, (path, param.name)


def test_the_command_list_shows_each_summary_unbroken(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """`instacli --help` kept the docstrings' line breaks: export's summary broke after "and a JSON"."""
    from instacli.cli.main import app

    monkeypatch.setenv("COLUMNS", "400")
    lines = [" ".join(line.replace("│", " ").split()) for line in run_cli("--help").stdout.splitlines()]
    for name, command in typer.main.get_command(app).commands.items():
        summary = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert f"{name} {summary}" in lines, name


def test_train_help_does_not_call_data_required(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    line = _help_line(run_cli, "train", "--data")
    assert "required]" not in line and "unless --resume" in line


def test_version(run_cli) -> None:
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"instacli {__version__}"


# -- item 13: `python -m instacli` from the folder above a checkout ---------------------------------


def test_python_m_instacli_works_beside_a_folder_named_instacli(tmp_path: Path) -> None:
    (tmp_path / "instacli").mkdir()  # what the folder above a checkout holds
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "instacli", "--version"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"instacli {__version__}"


def test_rates_below_ten_per_second_keep_two_significant_digits() -> None:
    """A slow model scoring 0.3 photos a second printed "(0 images/s)" in predict's and train's summaries."""
    from instacli.cli.common import per_second

    assert [per_second(rate) for rate in (0.3, 0.0123, 2.345, 9.96, 312.4)] == ["0.3", "0.012", "2.3", "10", "312"]
