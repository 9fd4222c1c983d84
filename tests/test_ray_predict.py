"""``instacli predict --engine ray``: the rows of the local path, from a Ray Data pipeline.

A local Ray instance (2 CPUs, started once for the module) scores the photos the local path scores,
a corrupt file and a metadata table included; every row must be the same.
"""

from __future__ import annotations

import builtins
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instacli.errors import InstacliError
from instacli.prediction import predict_folder
from tests.test_pipeline import TINY_VIT, dataset, learnable_tree, trained  # noqa: F401 (session fixtures, trained once)

ray = pytest.importorskip("ray")
from instacli.ray_predict import predict_on_ray  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module: starting one costs seconds."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(learnable_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Photos of both categories in nested folders, a corrupt file, and a table with rows for two of them."""
    folder = tmp_path_factory.mktemp("ray-photos")
    for category in ("animal", "landscape"):
        for f in sorted((learnable_tree / category).iterdir())[:5]:
            (folder / category).mkdir(exist_ok=True)
            (folder / category / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    table = folder.parent / "meta.csv"
    table.write_text("file_name,comments,shares\nanimal_00.png,5,50\nlandscape_01.png,40,\n")
    return folder, table


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_rows(ray_rows: list[dict], local_rows: list[dict]) -> None:
    assert [r["file"] for r in ray_rows] == [r["file"] for r in local_rows]
    for mine, theirs in zip(ray_rows, local_rows):
        assert {k: v for k, v in mine.items() if not k.startswith("prob_") and k != "confidence"} == \
               {k: v for k, v in theirs.items() if not k.startswith("prob_") and k != "confidence"}
        for key in (k for k in theirs if k.startswith("prob_") or k == "confidence"):
            assert (mine[key] is None) == (theirs[key] is None) and abs((mine[key] or 0) - (theirs[key] or 0)) <= 1e-5, (mine, theirs)


def test_ray_rows_are_the_local_rows(trained: Path, photos: tuple[Path, Path], tmp_path: Path) -> None:
    folder, table = photos
    local = predict_folder(trained, folder, tmp_path / "local.jsonl", metadata=table, workers=0)
    remote = predict_on_ray([trained], folder, tmp_path / "ray.jsonl", metadata=table, batch_size=4)
    rows = _jsonl(tmp_path / "ray.jsonl")
    _assert_same_rows(rows, _jsonl(tmp_path / "local.jsonl"))
    assert (remote.scored, remote.failed, remote.from_defaults, remote.imputed) == (local.scored, local.failed, local.from_defaults, local.imputed) == (10, 1, 8, 1)
    broken = next(r for r in rows if r["file"] == "broken.jpg")
    assert broken["error"].startswith("unreadable") and broken["label"] is None and broken["likes"] is None


def test_ray_writes_a_folder_of_parquet_shards_never_over_an_output(trained: Path, photos: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    folder, _ = photos
    predict_folder(trained, folder, tmp_path / "local.parquet", workers=0)
    local = pq.read_table(tmp_path / "local.parquet").to_pylist()
    result = run_cli("predict", trained, folder, "--engine", "ray", "--out", tmp_path / "shards", "--batch-size", "3")
    assert result.code == 0, result.stderr
    assert "10 scored, 1 unreadable" in " ".join(result.stdout.split())
    shards = sorted((tmp_path / "shards").glob("*.parquet"))
    assert shards and not list(tmp_path.glob(".shards*"))  # written whole, no temp folder left
    rows = sorted((row for shard in shards for row in pq.read_table(shard).to_pylist()), key=lambda r: r["file"])
    _assert_same_rows(rows, sorted(local, key=lambda r: r["file"]))
    again = run_cli("predict", trained, folder, "--engine", "ray", "--out", tmp_path / "shards")
    assert again.code == 2 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert run_cli("predict", trained, folder, "--address", "auto", "--out", tmp_path / "q.csv").code == 2  # --address needs --engine ray
    ignored = run_cli("predict", trained, folder, "--engine", "ray", "--workers", "3", "--out", tmp_path / "q.csv")
    assert ignored.code == 2 and ignored.stderr.startswith("error: --workers:")  # Ray decodes in its own tasks: not silently dropped


def test_a_folder_of_more_than_shards_is_never_replaced(trained: Path, photos: tuple[Path, Path], run_cli) -> None:
    """``--engine ray --out PHOTOS --overwrite`` would have replaced the photo folder by the shards."""
    folder, _ = photos
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    result = run_cli("predict", trained, folder, "--engine", "ray", "--out", folder, "--overwrite")
    assert result.code == 2 and "holds more than Parquet shards" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_missing_ray_is_one_line_naming_the_extra(trained: Path, photos: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(InstacliError, match=r"pip install 'instacli\[ray\]'"):
        predict_on_ray([trained], photos[0], tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_ray_reads_an_instaloader_download_as_the_local_path_does(trained: Path, tmp_path: Path) -> None:
    """Each post's own numbers, its shortcode and owner in the rows, the same skipped files, in a Parquet file too."""
    from tests.test_data_instaloader import make_download

    download = make_download(tmp_path / "dl")
    local = predict_folder(trained, download, tmp_path / "local.jsonl", workers=0, carousel="all")
    remote = predict_on_ray([trained], download, tmp_path / "ray.parquet", batch_size=2, carousel="all")
    local_rows = _jsonl(tmp_path / "local.jsonl")
    assert local_rows and all(r["shortcode"] and r["owner"] for r in local_rows)
    _assert_same_rows(pq.read_table(tmp_path / "ray.parquet").to_pylist(), local_rows)
    assert remote.skipped == local.skipped and remote.skipped and remote.scored == local.scored


def test_an_address_where_nothing_listens_is_one_line_in_seconds(trained: Path, photos: tuple[Path, Path], tmp_path: Path) -> None:
    """ray.init retried such an address for ~13 minutes, then raised a traceback (and a Ray already
    started in this process was used instead of the address given)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(InstacliError, match=rf"--address 127.0.0.1:{port}: no Ray cluster answers there"):
        predict_on_ray([trained], photos[0], tmp_path / "p.csv", address=f"127.0.0.1:{port}")
    with pytest.raises(InstacliError, match="give auto, HOST:PORT"):
        predict_on_ray([trained], photos[0], tmp_path / "p.csv", address="nowhere")
    assert not (tmp_path / "p.csv").exists()


def test_auto_without_a_cluster_names_the_address_not_the_disk(trained: Path, photos: tuple[Path, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cluster(**_: object) -> None:  # what ray.init(address="auto") raises when no Ray runs on this machine
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(InstacliError, match="--address auto: Could not find any running Ray instance"):
        predict_on_ray([trained], photos[0], tmp_path / "p.csv", address="auto")
