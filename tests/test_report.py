"""Rendering reports from saved results, without any training: table, highlighting, failures, HTML."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from instacli.errors import InstacliError
from instacli.report import render_report, rerender, table_rows
from instacli.report.table import fmt_params, fmt_seconds
from instacli.results import load_results


def _history(n: int, seconds: float) -> list[dict]:
    return [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "val_accuracy": 0.5 + 0.4 * e / n, "seconds": seconds} for e in range(1, n + 1)]


def _model(key: str, name: str, accuracy: float, mae: float, seconds: float, *, std: float | None = None, n: int = 1,
           spearman: float = 0.3) -> dict:
    metrics = {"accuracy": accuracy, "f1_macro": accuracy - 0.05, "likes_mae": mae, "log_likes_mae": mae / 1e5,
               "likes_spearman": spearman, "confusion_matrix": [[5, 1], [2, 4]]}
    return {"key": key, "name": name, "kind": "model", "status": "ok", "error": None, "runs": [f"{key}__seed1"], "n_runs": n, "n_ok": n,
            "metrics": metrics, "std": {"accuracy": std}, "parameters": 1_234_567, "train_seconds": seconds, "images_per_second": 1000 / seconds}


@pytest.fixture
def results() -> dict:
    rows = [
        _model("a__conv1d", "a + conv1d", 0.90, 50_000, 300.0, std=0.01, n=2),
        _model("b__conv1d", "b + conv1d", 0.80, 40_000, 30.0, spearman=0.35),
        {"key": "c__conv1d", "name": "c + conv1d", "kind": "model", "status": "failed", "error": "unknown encoder 'c'; known: a, b",
         "runs": ["c__conv1d__seed1"], "n_runs": 1, "n_ok": 0, "metrics": {}, "std": {}},
        {"key": "majority", "name": "majority class", "kind": "baseline", "status": "ok", "error": None,
         "metrics": {"accuracy": 0.5, "f1_macro": 0.33, "likes_mae": 90_000, "log_likes_mae": 1.2, "likes_spearman": None},
         "likes_predictions": {"actual": [10, 1000, 100000], "predicted": [500, 500, 500]}},
        {"key": "class-median", "name": "per-class median likes", "kind": "baseline", "status": "ok", "error": None, "oracle": True,
         "metrics": {"accuracy": None, "likes_mae": 1_000, "log_likes_mae": 0.1, "likes_spearman": 0.9}},
        {"key": "ridge", "name": "numbers only (ridge)", "kind": "baseline", "status": "failed", "error": "the data has no comments",
         "metrics": {}},
    ]
    runs = [
        {"name": "a__conv1d__seed1", "label": "a + conv1d", "seed": 1, "status": "ok", "history": _history(5, 60.0),
         "settings": {"encoder": "a", "epochs": 5, "seed": 1}},
        {"name": "b__conv1d__seed1", "label": "b + conv1d", "seed": 1, "status": "ok", "history": _history(3, 10.0),
         "settings": {"encoder": "b", "epochs": 5, "seed": 1}},
        {"name": "c__conv1d__seed1", "label": "c + conv1d", "seed": 1, "status": "failed", "error": "unknown encoder 'c'; known: a, b",
         "history": [], "settings": {"encoder": "c"}},
    ]
    return {"instacli_version": "0.1.0", "data": "/data/posts", "data_fingerprint": "sha256:abc", "class_names": ["animal", "landscape"],
            "split": "test", "n_test": 12, "n_train": 40, "budget": {"epochs": 5, "time_budget": None}, "seeds": [1], "rows": rows, "runs": runs}


def test_best_values_ignore_failed_rows_and_the_oracle(results: dict) -> None:
    rows = {r.name.split(" (")[0]: r for r in table_rows(results)}
    best = {name: [i for i, c in enumerate(r.cells) if c.best] for name, r in rows.items()}
    # columns: accuracy, F1, likes MAE, log MAE, Spearman, parameters, train time, images/s
    assert best["a + conv1d"] == [0, 1]
    assert best["b + conv1d"] == [2, 3, 4, 6, 7]  # the oracle's MAE (1,000) and Spearman are not "best"
    assert best["per-class median likes"] == [] and best["majority class"] == []
    assert rows["a + conv1d"].cells[0].text == "0.900 ± 0.010" and rows["a + conv1d"].name.endswith("(2 seeds)")
    assert rows["b + conv1d"].cells[2].text == "40,000" and rows["b + conv1d"].cells[5].text == "1.23M"
    assert all(c.missing for c in rows["c + conv1d"].cells) and rows["c + conv1d"].note == "failed"
    assert rows["per-class median likes"].note == "knows the true category"


def test_render_writes_markdown_html_and_figures(results: dict, tmp_path: Path) -> None:
    files = render_report(results, tmp_path)
    markdown = files.markdown.read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 6  # header + rows
    assert "| a + conv1d (2 seeds) | **0.900 ± 0.010** | **0.850** | 50,000 |" in markdown
    assert "- **c + conv1d**: unknown encoder 'c'; known: a, b" in markdown
    assert "- **numbers only (ridge)**: the data has no comments" in markdown
    for name in ("accuracy_vs_time", "learning_curves", "confusion_matrices", "likes_baseline_majority"):
        assert (tmp_path / "figures" / f"{name}.png").is_file()
    page = files.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"<script|<link|@import|url\(|https?://", page)
    assert page.count('class="best"') == 7
    assert "<details><summary>a__conv1d__seed1</summary>" in page


def test_html_escapes_names_and_messages(results: dict, tmp_path: Path) -> None:
    results["rows"][2]["error"] = results["runs"][2]["error"] = "bad <b>name</b> & more"
    page = render_report(results, tmp_path).html.read_text()
    assert "bad &lt;b&gt;name&lt;/b&gt; &amp; more" in page and "<b>name</b>" not in page


def test_rerender_a_comparison_folder(results: dict, tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(results))
    loaded, files = rerender(tmp_path)
    assert loaded["data_fingerprint"] == "sha256:abc" and files.html == tmp_path / "report.html" and files.html.is_file()


def test_single_run_report_from_metrics_and_eval(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _history(4, 2.0)))
    (run / "settings.json").write_text(json.dumps({"encoder": "vit-scratch", "regressor": "conv1d", "epochs": 4, "seed": 7, "data": "/d"}))
    (run / "eval" / "metrics.json").write_text(json.dumps(
        {"n": 12, "split": "test", "data": "/d", "accuracy": 0.75, "f1_macro": 0.7, "likes_mae": 123.0, "log_likes_mae": 0.5,
         "likes_spearman": 0.4, "confusion_matrix": [[6, 0], [3, 3]]}
    ))
    results, files = rerender(run)
    assert files.html == run / "report" / "report.html" and files.markdown.is_file()
    (row,) = results["rows"]
    assert row["name"] == "vit-scratch + conv1d" and row["metrics"]["accuracy"] == 0.75 and row["parameters"] is None
    assert row["train_seconds"] == pytest.approx(8.0)
    assert (run / "report" / "figures" / "learning_curves.png").is_file()
    assert "Run run" in files.html.read_text()


def test_load_results_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(InstacliError, match="neither a comparison folder"):
        load_results(tmp_path)


@pytest.mark.parametrize(("seconds", "text"), [(4.25, "4.2 s"), (42, "42 s"), (125, "2m 05s"), (600, "10 min"), (3725, "1h 02m"), (7200, "2 h")])
def test_fmt_seconds(seconds: float, text: str) -> None:
    assert fmt_seconds(seconds) == text


def test_fmt_params() -> None:
    assert (fmt_params(950), fmt_params(62_500), fmt_params(137_000_000)) == ("950", "62.5k", "137M")


def test_render_with_every_model_failed(results: dict, tmp_path: Path) -> None:
    results["rows"] = [r for r in results["rows"] if r["kind"] == "baseline" or r["status"] == "failed"]
    results["runs"] = [r for r in results["runs"] if r["status"] == "failed"]
    files = render_report(results, tmp_path / "fresh")
    assert files.html.is_file() and (tmp_path / "fresh" / "figures" / "likes_baseline_majority.png").is_file()
    assert "unknown encoder 'c'" in files.markdown.read_text()


def test_only_png_files_inside_the_report_folder_are_embedded(results: dict, tmp_path: Path) -> None:
    """results.json is data anyone may edit: its figure paths must not pull other files into report.html."""
    from PIL import Image

    root = tmp_path / "cmp"
    (root / "runs" / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(root / "runs" / "a" / "likes.png")
    (tmp_path / "secret.txt").write_text("SECRET-TEXT")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "outside.png")
    (root / "runs" / "a" / "fake.png").write_text("SECRET-TEXT")
    figures = ["runs/a/likes.png", "../secret.txt", str(tmp_path / "outside.png"), "runs/../../outside.png", "runs/a/fake.png"]
    models = [r for r in results["rows"] if r["kind"] == "model" and r["status"] == "ok"]
    results["rows"] += [{**models[0], "key": f"m{i}", "name": f"m{i}", "figures": {"likes": path}} for i, path in enumerate(figures)]
    page = render_report(results, root).html.read_text()
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in re.findall(r'<img src="([^"]+)"', page)]
    assert (root / "runs" / "a" / "likes.png").read_bytes() in embedded
    assert (tmp_path / "outside.png").read_bytes() not in embedded
    assert not any(b"SECRET-TEXT" in data for data in embedded)
    assert "secret" not in (root / "report.md").read_text()
