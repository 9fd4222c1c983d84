"""``instacli compare`` on generated photos with a tiny vit-scratch: results, resume, failures, baselines, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from instacli import registry
from instacli.baselines import SplitColumns, class_median, majority, numeric_only
from instacli.compare import CompareReporter, Plan, compare, parse_overrides
from instacli.report import render_report
from instacli.run_folder import RunFolder
from instacli.errors import InstacliError
from instacli.settings import parse_duration
from instacli.training import Reporter
from tests.conftest import make_photo_tree

TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 32, "heads": 2}
BASE = {"encoder_options": TINY_VIT, "batch_size": 8, "workers": 1}
TINY_SET = [f"vit-scratch.encoder_options.{k}={v}" for k, v in TINY_VIT.items()]
#: An encoder whose name and options are valid but that fails when built: a run failing mid-comparison.
FAILING = "failing-test"


def _failing_encoder(**options: object) -> None:
    raise InstacliError("this encoder always fails")


@pytest.fixture(scope="module")
def failing_encoder() -> Iterator[str]:
    registry.encoders.names()  # discover the built-ins first
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.encoders.entries, FAILING, registry.Entry(FAILING, "encoder", _failing_encoder, "tests"))
        yield FAILING


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instacli_datasets import build_dataset

    root = tmp_path_factory.mktemp("compare-data")
    src = make_photo_tree(root / "src", {"animal": 12, "landscape": 12})
    build_dataset(src, root / "ds", synthetic="seed", seed=1, val_fraction=0.2, test_fraction=0.25, workers=1)
    return root / "ds"


@pytest.fixture(scope="module")
def compared(dataset: Path, tmp_path_factory: pytest.TempPathFactory, failing_encoder: str) -> Path:
    """One tiny combination with two seeds, one encoder that fails, and the baselines."""
    out = tmp_path_factory.mktemp("compare") / "report"
    result = compare(dataset, out, ["vit-scratch", FAILING], ["conv1d"], epochs=1, seeds=2, base=BASE)
    render_report(result.results, out)
    assert sorted(result.trained) == ["vit-scratch__conv1d__seed1", "vit-scratch__conv1d__seed2"]
    assert sorted(result.failed) == [f"{FAILING}__conv1d__seed1", f"{FAILING}__conv1d__seed2"]
    return out


def _rows(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in json.loads((out / "results.json").read_text())["rows"]}


def test_results_json_holds_the_table_runs_and_provenance(compared: Path, dataset: Path) -> None:
    results = json.loads((compared / "results.json").read_text())
    for key in ("instacli_version", "data", "data_fingerprint", "class_names", "split", "n_test", "budget", "seeds", "rows", "runs"):
        assert key in results, key
    assert results["data_fingerprint"].startswith("sha256:")
    assert results["budget"] == {"epochs": 1, "time_budget": None} and results["seeds"] == [1, 2]
    rows = _rows(compared)
    assert list(rows) == ["vit-scratch__conv1d", f"{FAILING}__conv1d", "majority", "class-median", "ridge", "gbrt"]
    vit = rows["vit-scratch__conv1d"]
    assert vit["status"] == "ok" and vit["n_runs"] == 2 and vit["n_ok"] == 2
    for key in ("accuracy", "f1_macro", "likes_mae", "log_likes_mae"):
        assert vit["metrics"][key] is not None and vit["std"][key] is not None
    assert vit["parameters"] > 1000 and vit["train_seconds"] > 0 and vit["images_per_second"] > 0
    runs = {r["name"]: r for r in results["runs"]}
    seed2 = runs["vit-scratch__conv1d__seed2"]
    assert seed2["settings"]["seed"] == 2 and seed2["settings"]["epochs"] == 1
    assert seed2["settings"]["encoder_options"] == TINY_VIT and Path(seed2["settings"]["data"]) == dataset.resolve()
    assert len(seed2["history"]) == 1 and seed2["metrics"]["n"] == results["n_test"]
    for name in ("vit-scratch__conv1d__seed1", "vit-scratch__conv1d__seed2"):
        assert RunFolder(compared / "runs" / name).state() == "finished"


def test_a_failing_run_is_a_failed_row_not_a_crash(compared: Path) -> None:
    failed = _rows(compared)[f"{FAILING}__conv1d"]
    assert failed["status"] == "failed" and "this encoder always fails" in failed["error"]
    markdown = (compared / "report.md").read_text()
    assert "## Failed" in markdown and "this encoder always fails" in markdown


def test_unknown_names_and_options_fail_before_the_first_run(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("instacli.training.train", lambda *a, **k: pytest.fail("a run trained before every run was checked"))
    cases = [
        (["vit-scratch", "efficientnet"], ["conv1d"], {}, "unknown encoder 'efficientnet'"),
        (["vit-scratch"], ["conv1d", "gbtr"], {}, "unknown regressor 'gbtr'"),
        (["vit-scratch"], ["conv1d"], {"vit-scratch": {"encoder_options": {"widht": 8}}}, "encoder 'vit-scratch' has no option 'widht'"),
        (["vit-scratch"], ["conv1d"], {"vit-scratch": {"regressor_options": {"hiden": 8}}}, "regressor 'conv1d' has no option 'hiden'"),
        (["vit-scratch"], ["conv1d"], {"vit-scratch": {"preset": "seed-1024"}}, "encoder 'vit-scratch' has no preset 'seed-1024'"),
        (["vit-scratch"], ["conv1d"], {"vit-scratch": {"text": True, "text_encoder": "bert"}}, "unknown text encoder 'bert'"),
    ]
    for encoders, regressors, overrides, message in cases:
        with pytest.raises(InstacliError, match=message):
            compare(dataset, tmp_path / "r", encoders, regressors, epochs=1, base=BASE, overrides=overrides, baselines=False)
        assert not (tmp_path / "r").exists()


def test_reports_are_written_and_self_contained(compared: Path) -> None:
    markdown = (compared / "report.md").read_text()
    assert "| model | accuracy | macro F1 | likes MAE | log-likes MAE | Spearman | parameters | train time | images/s |" in markdown
    assert "vit-scratch + conv1d (2 seeds)" in markdown and "baseline: majority class" in markdown
    for figure in ("accuracy_vs_time", "learning_curves", "confusion_matrices"):
        assert (compared / "figures" / f"{figure}.png").is_file() and f"figures/{figure}.png" in markdown
    page = (compared / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert "<script" not in page and "<link" not in page and 'src="http' not in page and "url(" not in page
    assert "numbers only (ridge)" in page and 'class="best"' in page


def test_second_invocation_reuses_finished_runs(compared: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch, failing_encoder: str) -> None:
    weights = compared / "runs" / "vit-scratch__conv1d__seed1" / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr("instacli.training.train", no_training)
    result = compare(dataset, compared, ["vit-scratch", FAILING], ["conv1d"], epochs=1, seeds=2, base=BASE)
    assert result.trained == [] and sorted(result.reused) == ["vit-scratch__conv1d__seed1", "vit-scratch__conv1d__seed2"]
    assert weights.stat().st_mtime_ns == before
    assert _rows(compared)["vit-scratch__conv1d"]["status"] == "ok"


def test_other_settings_for_a_finished_run_need_overwrite(compared: Path, dataset: Path) -> None:
    with pytest.raises(InstacliError, match="trained with other settings.*epochs: 1 → 3.*--overwrite"):
        compare(dataset, compared, ["vit-scratch"], ["conv1d"], epochs=3, seeds=1, base=BASE)


class _InterruptAfterFirstEpoch(CompareReporter):
    class _Stop(Reporter):
        def epoch_end(self, record: dict) -> None:
            raise KeyboardInterrupt

    def run_start(self, plan: Plan, index: int, total: int, action: str) -> Reporter:
        return self._Stop()


def test_interrupted_compare_resumes_and_partial_runs_retrain(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):
        compare(dataset, out, ["vit-scratch"], ["conv1d"], epochs=2, base=BASE, reporter=_InterruptAfterFirstEpoch())
    run = out / "runs" / "vit-scratch__conv1d__seed1"
    assert RunFolder(run).state() == "resumable"
    result = compare(dataset, out, ["vit-scratch"], ["conv1d"], epochs=2, base=BASE)
    entry = json.loads((out / "results.json").read_text())["runs"][0]
    assert result.trained == ["vit-scratch__conv1d__seed1"] and entry["action"] == "resume"
    assert [r["epoch"] for r in entry["history"]] == [1, 2] and RunFolder(run).state() == "finished"
    # a folder with settings but neither weights nor checkpoint (killed before its first epoch) is retrained
    partial = out / "runs" / "vit-scratch__mlp__seed1"
    partial.mkdir(parents=True)
    (partial / "settings.json").write_text("{}")
    result = compare(dataset, out, ["vit-scratch"], ["mlp"], epochs=1, base=BASE, baselines=False)
    entry = json.loads((out / "results.json").read_text())["runs"][0]
    assert entry["action"] == "retrain" and entry["status"] == "ok" and RunFolder(partial).state() == "finished"


def test_a_crashing_plugin_is_reported_with_its_message(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.encoders.names()  # discover the built-ins first

    def broken_encoder() -> None:
        raise RuntimeError("boom inside the plugin")

    monkeypatch.setitem(registry.encoders.entries, "broken-test", registry.Entry("broken-test", "encoder", broken_encoder, "tests"))
    result = compare(dataset, tmp_path / "r", ["broken-test"], ["conv1d"], epochs=1, base={"batch_size": 8}, baselines=False)
    assert result.failed == ["broken-test__conv1d__seed1"]
    row = _rows(tmp_path / "r")["broken-test__conv1d"]
    assert row["status"] == "failed" and "RuntimeError: boom inside the plugin" in row["error"]


def test_a_first_epoch_over_the_hard_limit_is_stopped_and_remembered(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.setattr("instacli.compare.execution.HARD_LIMIT_FACTOR", 0.0)
    monkeypatch.setattr("instacli.compare.execution.HARD_LIMIT_GRACE", 0.0)
    out = tmp_path / "r"
    kwargs = dict(epochs=1, time_budget="1s", base=BASE, baselines=False)
    result = compare(dataset, out, ["vit-scratch"], ["conv1d"], **kwargs)
    assert result.failed == ["vit-scratch__conv1d__seed1"]
    row = _rows(out)["vit-scratch__conv1d"]
    assert row["status"] == "stopped" and "too slow" in row["error"] and "into its first epoch" in row["error"]
    assert row["parameters"] > 1000 and row["images_per_second"] > 0 and row["train_seconds"] > 0
    monkeypatch.setattr("instacli.training.train", lambda *a, **k: pytest.fail("a stopped run was retried with the same settings"))
    render_report(compare(dataset, out, ["vit-scratch"], ["conv1d"], **kwargs).results, out)
    assert _rows(out)["vit-scratch__conv1d"]["status"] == "stopped"
    assert "stopped: too slow" in (out / "report.md").read_text()
    # a run stopped as too slow for the budget is a result, not a failed command
    result = run_cli("compare", "--data", dataset, "--out", out, "--encoders", "vit-scratch", "--epochs", "1", "--time-budget", "1s",
                     "--batch-size", "8", "--workers", "1", "--no-baselines", "--quiet", *[a for pair in TINY_SET for a in ("--set", pair)])
    assert result.code == 0, result.stderr
    assert "0 trained, 0 reused, 0 failed, 1 stopped as too slow" in " ".join(result.stdout.split())


def test_seed_preset_is_planned_with_the_original_design_and_a_small_budget() -> None:
    from instacli.compare import plan_runs

    plans = plan_runs(["vit-scratch"], ["conv1d"], [1, 2], {"time_budget": 60.0}, base=BASE,
                      overrides={"seed-512": {"batch_size": 4}}, include_seed_preset=True)
    assert [p.name for p in plans] == ["vit-scratch__conv1d__seed1", "vit-scratch__conv1d__seed2", "vit-scratch-seed-512__conv1d__seed1"]
    preset = plans[-1]
    assert preset.kind == "seed-preset" and preset.encoder == "vit-scratch"
    assert preset.settings["preset"] == "seed-512" and preset.settings["epochs"] == 2 and preset.settings["time_budget"] == 60.0
    assert preset.settings["batch_size"] == 4 and preset.settings["encoder_options"] == {}  # test-sized options stay off it


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("600", 600.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("2.5m", 150.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "m", ""])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(InstacliError, match="expected a duration"):
        parse_duration(text)


def test_parse_overrides() -> None:
    models = ["vit-scratch", "efficientnet-lite0", "seed-512"]
    parsed = parse_overrides(
        ["efficientnet-lite0.freeze_encoder=false", "efficientnet-lite0.lr=1e-3", "vit-scratch.width=64",
         "vit-scratch.regressor_options.hidden=16", "seed-512.time_budget=120"],
        models,
    )
    assert parsed == {
        "efficientnet-lite0": {"freeze_encoder": False, "lr": 0.001},
        "vit-scratch": {"encoder_options": {"width": 64}, "regressor_options": {"hidden": 16}},
        "seed-512": {"time_budget": 120},
    }
    with pytest.raises(InstacliError, match="expected ENCODER.KEY=VALUE"):
        parse_overrides(["freeze_encoder=true"], models)
    with pytest.raises(InstacliError, match="'hf-vit' is not compared here"):
        parse_overrides(["hf-vit.epochs=3"], models)
    with pytest.raises(InstacliError, match="neither a training setting nor an option of encoder 'vit-scratch'"):
        parse_overrides(["vit-scratch.widht=64"], models)
    with pytest.raises(InstacliError, match="decided by compare"):
        parse_overrides(["vit-scratch.seed=3"], models)
    # a timm tag has dots of its own: it said "'timm:test_resnet' is not compared here"
    tagged = parse_overrides(["timm:test_resnet.r160_in1k.lr=0.01", "timm:test_resnet.r160_in1k.encoder_options.drop_path=0.1"],
                             ["timm:test_resnet", "timm:test_resnet.r160_in1k"])
    assert tagged == {"timm:test_resnet.r160_in1k": {"lr": 0.01, "encoder_options": {"drop_path": 0.1}}}
    with pytest.raises(InstacliError, match="expected ENCODER.KEY=VALUE or ENCODER.encoder_options"):
        parse_overrides(["vit-scratch.options.width=3"], models)
    with pytest.raises(InstacliError, match="'timm:test_resnet.r160_in1k' is not compared here"):  # said 'timm:test_resnet'
        parse_overrides(["timm:test_resnet.r160_in1k.lr=0.01"], models)
    with pytest.raises(InstacliError, match="'hf-vit' is not compared here"):
        parse_overrides(["hf-vit.encoder_options.width=3"], models)


# -- baselines on a hand-made example --------------------------------------------------------


def _split(labels: list[int], likes: list[float], **numeric: list[float]) -> SplitColumns:
    return SplitColumns(labels=np.array(labels), likes=np.array(likes, dtype=float),
                        numeric={k: np.array(v, dtype=float) for k, v in numeric.items()}, class_names=["animal", "landscape"])


def test_majority_and_class_median_baselines_by_hand() -> None:
    train = _split([0, 0, 0, 1, 1], [10, 20, 30, 1000, 3000])
    test = _split([0, 1, 1, 1], [40, 500, 2000, 1000])
    row = majority(train, test)
    m = row["metrics"]
    assert m["predicted_class"] == "animal"
    assert m["accuracy"] == pytest.approx(0.25) and m["confusion_matrix"] == [[1, 0], [3, 0]]
    # constant prediction: the training median likes (30)
    assert m["likes_mae"] == pytest.approx((10 + 470 + 1970 + 970) / 4)
    # per-class medians of train: animal 20, landscape 2000
    row = class_median(train, test)
    m = row["metrics"]
    assert row["oracle"] and m["class_medians"] == {"animal": 20.0, "landscape": 2000.0}
    assert m["likes_mae"] == pytest.approx((20 + 1500 + 0 + 1000) / 4)
    assert m["accuracy"] is None
    assert row["likes_predictions"]["predicted"] == [20.0, 2000.0, 2000.0, 2000.0]


def test_numeric_only_baselines_fit_log_likes_from_the_numbers() -> None:
    rng = np.random.default_rng(0)
    comments = rng.integers(1, 10_000, 200).astype(float)
    likes = np.round(np.expm1(1.0 + np.log1p(comments)))  # likes ≈ e · comments: exact in log space
    train = _split([0] * 150, list(likes[:150]), comments=list(comments[:150]))
    test = _split([0] * 50, list(likes[150:]), comments=list(comments[150:]))
    ridge = numeric_only("ridge", train, test)
    assert ridge["status"] == "ok" and ridge["features"] == ["comments"]
    assert ridge["metrics"]["log_likes_mae"] < 0.01 and ridge["metrics"]["likes_spearman"] > 0.99
    gbrt = numeric_only("gbrt", train, test)
    assert gbrt["metrics"]["log_likes_mae"] < 0.3 and gbrt["metrics"]["likes_spearman"] > 0.95
    no_numbers = numeric_only("ridge", _split([0, 1], [1, 2]), _split([0], [3]))
    assert no_numbers["status"] == "failed" and "no comments, shares or followers" in no_numbers["error"]


def test_realistic_engagement_adds_the_generator_oracle(tmp_path: Path) -> None:
    from instacli.baselines import all_baselines
    from instacli_datasets import build_dataset

    src = make_photo_tree(tmp_path / "src", {"animal": 30, "landscape": 30}, size=(8, 8))
    build_dataset(src, tmp_path / "ds", synthetic="realistic", seed=3, workers=1)
    rows = {r["key"]: r for r in all_baselines(tmp_path / "ds")}
    assert list(rows) == ["majority", "class-median", "generator", "ridge", "gbrt"]
    oracle = rows["generator"]
    assert oracle["oracle"] and oracle["status"] == "ok"
    # it knows how likes were made: far better than a constant
    assert oracle["metrics"]["log_likes_mae"] < 0.8 * rows["majority"]["metrics"]["log_likes_mae"]
    assert rows["ridge"]["features"] == ["comments", "followers"]


def test_numeric_only_imputes_missing_values_with_the_training_median() -> None:
    train = _split([0, 0, 0, 0], [10, 100, 1000, 10000], shares=[9, 99, np.nan, 9999])
    test = _split([0, 0], [100, 1000], shares=[np.nan, 999])
    row = numeric_only("ridge", train, test)
    assert row["status"] == "ok" and all(np.isfinite(row["likes_predictions"]["predicted"]))


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_compare_reuses_and_report_rerenders(compared: Path, dataset: Path, run_cli, failing_encoder: str) -> None:
    args = ["compare", "--data", dataset, "--out", compared, "--encoders", f"vit-scratch,{FAILING}", "--epochs", "1",
            "--seeds", "2", "--batch-size", "8", "--workers", "1", "--quiet"]
    for pair in TINY_SET:
        args += ["--set", pair]
    result = run_cli(*args)
    printed = " ".join(result.stdout.split())
    assert "vit-scratch" in printed and "0 trained, 2 reused, 2 failed" in printed
    assert "this encoder always fails" in printed
    # a failed run fails the command, so that `instacli compare … && next-step` stops
    assert result.code == 2 and f"2 run(s) failed ({FAILING}__conv1d__seed1, {FAILING}__conv1d__seed2)" in result.stderr

    (compared / "report.html").unlink()
    result = run_cli("report", compared)
    assert result.code == 0, result.stderr
    assert (compared / "report.html").is_file() and "majority class" in result.stdout

    run = compared / "runs" / "vit-scratch__conv1d__seed1"
    result = run_cli("report", run, "--quiet")
    assert result.code == 0, result.stderr
    page = (run / "report" / "report.html").read_text()
    assert "Run vit-scratch__conv1d__seed1" in page and "data:image/png;base64," in page


def test_cli_compare_checks_every_name_before_the_first_run(dataset: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("instacli.training.train", lambda *a, **k: pytest.fail("a run trained before every run was checked"))
    result = run_cli("compare", "--data", dataset, "--out", tmp_path / "r", "--encoders", "vit-scratch,efficientnet", "--quiet")
    assert result.code == 2 and "unknown encoder 'efficientnet'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_errors_are_one_line(dataset: Path, tmp_path: Path, run_cli) -> None:
    result = run_cli("compare", "--data", dataset, "--out", tmp_path / "r", "--encoders", "vit-scratch", "--set", "vit-scratch.freeze")
    assert result.code == 2 and "expected ENCODER.KEY=VALUE" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("compare", "--data", dataset, "--out", tmp_path / "r", "--time-budget", "soon")
    assert result.code == 2 and "expected a duration" in result.stderr
    result = run_cli("report", tmp_path)
    assert result.code == 2 and "neither a comparison folder" in result.stderr
