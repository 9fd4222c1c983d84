"""data build --split-by random|COLUMN|time, --group-pattern and --holdout: which rows land in which split."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.conftest import built_rows, make_photo, make_photo_tree
from tests.test_data_instaloader import make_download
from instacli.errors import InstacliError
from instacli_datasets import build_dataset, load_data
from instacli_datasets.engagement import read_table
from instacli_datasets.split_assignment import group_split, time_split

PATTERN = r"^([a-z]+-[a-z]+)_"


def sources_tree(root: Path, sizes: dict[str, int]) -> Path:
    """``root/<category>/<source>_<i>.jpg``: sources named ``<category prefix>-<name>`` as in posts-dev."""
    for c, (source, n) in enumerate(sizes.items()):
        category = "landscape" if source.startswith("intel-") else "animal"
        for i in range(n):
            make_photo(root / category / f"{source}_{i:03d}.jpg", (8, 8), ((i * 37) % 256, (c * 53) % 256, 90))
    return root


SIZES = {"intel-forest": 8, "intel-glacier": 6, "intel-sea": 7, "pets-cats": 9, "pets-dogs": 5, "wild-fox": 6, "wild-seal": 4}


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    return sources_tree(tmp_path / "src", SIZES)


def _split_of_values(rows: dict[str, dict], column: str) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = defaultdict(set)
    for row in rows.values():
        splits[row[column]].add(row["split"])
    return splits


def test_holdout_takes_exactly_the_listed_sources_and_the_rest_is_stratified(sources: Path, tmp_path: Path) -> None:
    report = build_dataset(sources, tmp_path / "data", group_pattern=PATTERN, holdout=["intel-sea", "wild-fox"], workers=1)
    rows = built_rows(tmp_path / "data")
    assert all(r["source"] == Path(name).name.split("_")[0] for name, r in rows.items()), "source is stored per row"
    held = {name for name, r in rows.items() if r["split"] == "holdout"}
    assert held == {name for name, r in rows.items() if r["source"] in ("intel-sea", "wild-fox")}
    assert report.counts["holdout"] == {"animal": 6, "landscape": 7}
    # the other 32 photos are split as without --holdout: stratified, 15 % / 15 % of each category
    assert report.counts["test"] == report.counts["validation"] == {"animal": 3, "landscape": 2}
    meta = json.loads((tmp_path / "data" / "instacli_dataset.json").read_text())
    assert meta["split"] == {"by": "random", "group_column": "source", "group_pattern": PATTERN, "holdout": ["intel-sea", "wild-fox"]}
    assert meta["splits"] == {"train": 22, "validation": 5, "test": 5, "holdout": 13}
    ds, info = load_data(tmp_path / "data", split="holdout")
    assert len(ds) == 13 and info.split["holdout"] == ["intel-sea", "wild-fox"]


def test_split_by_a_column_never_spreads_a_value_over_splits(sources: Path, tmp_path: Path) -> None:
    build_dataset(sources, tmp_path / "one", group_pattern=PATTERN, split_by="source", seed=3, workers=1)
    build_dataset(sources, tmp_path / "two", group_pattern=PATTERN, split_by="source", seed=3, workers=1)
    rows = built_rows(tmp_path / "one")
    by_value = _split_of_values(rows, "source")
    assert set(by_value) == set(SIZES) and all(len(splits) == 1 for splits in by_value.values())
    assert {s for splits in by_value.values() for s in splits} == {"train", "validation", "test"}
    assert {n: r["split"] for n, r in rows.items()} == {n: r["split"] for n, r in built_rows(tmp_path / "two").items()}
    other_seeds = [{n: r["split"] for n, r in built_rows(build_dataset(sources, tmp_path / f"s{s}", group_pattern=PATTERN,
                                                                        split_by="source", seed=s, workers=1).out).items()}
                   for s in (4, 5)]
    assert any(o != {n: r["split"] for n, r in rows.items()} for o in other_seeds), "the seed chooses the groups"


def test_split_by_an_engagement_table_column_and_holdout_within_it(photo_tree: Path, tmp_path: Path) -> None:
    names = sorted(p.relative_to(photo_tree).as_posix() for p in photo_tree.rglob("*.jpg"))
    table = tmp_path / "eng.csv"
    table.write_text("file_name,likes,Account\n" + "".join(f"{n},{i},acct{i % 5}\n" for i, n in enumerate(names)))
    build_dataset(photo_tree, tmp_path / "data", engagement=table, split_by="Account", holdout=["acct4"], workers=1)
    rows = built_rows(tmp_path / "data")
    by_value = _split_of_values(rows, "Account")
    assert by_value["acct4"] == {"holdout"} and all(len(s) == 1 for s in by_value.values())
    assert "holdout" not in {s for v, splits in by_value.items() if v != "acct4" for s in splits}


def test_instaloader_owner_is_a_column_to_split_by(tmp_path: Path) -> None:
    download = make_download(tmp_path / "dl")
    build_dataset(download, tmp_path / "data", split_by="owner", val_fraction=0, test_fraction=0.3, workers=1)
    rows = built_rows(tmp_path / "data")
    assert {r["owner"] for r in rows.values()} == {"natgeo", "cats"}
    assert all(len(s) == 1 for s in _split_of_values(rows, "owner").values())


def test_time_split_puts_the_newest_posts_in_test(photo_tree: Path, tmp_path: Path) -> None:
    names = sorted(p.relative_to(photo_tree).as_posix() for p in photo_tree.rglob("*.jpg"))
    stamps = {n: 1_700_000_000 + 3600 * ((i * 7) % 20) for i, n in enumerate(names)}  # shuffled against the names
    table = tmp_path / "eng.csv"
    table.write_text("file_name,likes,timestamp\n" + "".join(f"{n},1,{stamps[n]}\n" for n in names))
    report = build_dataset(photo_tree, tmp_path / "data", engagement=table, split_by="time", val_fraction=0.2, test_fraction=0.25, workers=1)
    rows = built_rows(tmp_path / "data")
    times = {s: sorted(r["timestamp"] for r in rows.values() if r["split"] == s) for s in ("train", "validation", "test")}
    assert [len(t) for t in times.values()] == [11, 4, 5]
    assert times["train"][-1] < times["validation"][0] and times["validation"][-1] < times["test"][0]
    assert sum(sum(c.values()) for c in report.counts.values()) == 20


def test_group_and_time_split_functions() -> None:
    groups = [g for g, n in (("a", 50), ("b", 20), ("c", 10), ("d", 10), ("e", 5), ("f", 5)) for _ in range(n)]
    for seed in range(20):
        splits = group_split(groups, val_fraction=0.15, test_fraction=0.15, seed=seed)
        assert set(splits) == {"train", "validation", "test"}, "no needed split is ever empty"
        assert all(len({s for g2, s in zip(groups, splits) if g2 == g}) == 1 for g in set(groups))
    assert group_split(["x", "y", "z"], val_fraction=0.15, test_fraction=0.15, seed=0).count("train") == 1
    assert Counter(group_split(list("abcdefghij" * 3), val_fraction=0.2, test_fraction=0.2, seed=1)) == {"train": 18, "validation": 6, "test": 6}
    # a carousel (one group) shares its split; the newest group goes to test
    assert time_split([5, 9, 9, 1, 7], ["p", "q", "q", "r", "s"], val_fraction=0.2, test_fraction=0.4) == ["train", "test", "test", "train", "validation"]


def test_extra_columns_of_a_table_are_kept_as_text(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("file_name,like_count,likes,Account\na.jpg,3,99,alice\n")
    read = read_table(table, {"likes": "like_count"})
    assert read.rows["a.jpg"] == {"likes": 3, "Account": "alice"} and read.extra_columns == ("Account",)


@pytest.mark.parametrize(("args", "message"), [
    (["--split-by", "owner"], "error: --split-by owner: no such column (this data has: likes, comments, shares)"),
    (["--split-by", "time"], "error: --split-by time: the data has no timestamp column"),
    (["--group-pattern", "^([a-z]+)x"], "error: --group-pattern '^([a-z]+)x': photo 'animal/pets-cats_000.jpg' does not match it"),
    (["--group-pattern", "^[a-z]+-"], "has no capture group"),
    (["--group-pattern", "^([a-z]+"], "not a regular expression"),
    (["--group-pattern", PATTERN, "--holdout", "wild-wolf"], "error: --holdout wild-wolf: no photo has that source; its values: intel-forest, intel-glacier"),
    (["--holdout", "pets-cats"], "error: --holdout: needs a group column"),
    (["--group-pattern", "^([a-z]+)-", "--holdout", "intel,pets,wild"], "error: --holdout: holds out every photo"),
    (["--group-pattern", "^([a-z]+)-", "--split-by", "source", "--holdout", "wild"],
     "error: --split-by source: split 'test' would be empty (35 photos with 2 values of source)"),
])
def test_bad_split_options_are_one_line_errors(run_cli, sources: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("data", "build", sources, "--out", tmp_path / "data", "--synthetic-engagement", "seed", *args)
    assert result.code == 2 and result.stderr.strip().count("\n") == 0
    assert message in result.stderr, "a message quoting [a-z] prints verbatim, not as rich markup"
    assert not (tmp_path / "data").exists()


def test_time_split_needs_every_timestamp(sources: Path, tmp_path: Path) -> None:
    with pytest.raises(InstacliError, match=r"--split-by time: photo '.*' has no timestamp"):
        build_dataset(sources, tmp_path / "data", engagement=_write_times(sources, tmp_path), split_by="time", workers=1)


def _write_times(src: Path, tmp_path: Path) -> Path:
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    table = tmp_path / "eng.csv"
    table.write_text("file_name,likes,timestamp\n" + "".join(f"{n},1,{'' if i == 3 else i}\n" for i, n in enumerate(names)))
    return table


def test_data_info_shows_the_holdout_split(run_cli, sources: Path, tmp_path: Path) -> None:
    built = run_cli("data", "build", sources, "--out", tmp_path / "data", "--group-pattern", PATTERN, "--holdout", "intel-sea,pets-cats")
    assert built.code == 0 and "holdout" in built.stdout
    shown = run_cli("data", "info", tmp_path / "data")
    assert shown.code == 0 and "split by: random; holdout (source): intel-sea, pets-cats" in shown.stdout
    header = next(line for line in shown.stdout.splitlines() if "category" in line and "train" in line)
    assert "holdout" in header


def test_holdout_of_a_whole_category_warns_that_training_lacks_it(run_cli, tmp_path: Path) -> None:
    src = make_photo_tree(tmp_path / "src", {"animal": 6, "landscape": 6})
    result = run_cli("data", "build", src, "--out", tmp_path / "data", "--group-pattern", "^([a-z]+)_", "--holdout", "landscape")
    assert result.code == 0 and "no training photos for landscape" in result.stdout
