"""Loading data for training, evaluation or prediction from whatever the user points at.

A folder made by ``instacli data build`` (it has ``dataset_dict.json``) is memory-mapped as is. A
plain folder of photos (one sub-folder per category, a metadata file, or an instaloader download)
is decoded in memory with every photo in it, so ``evaluate RUN --data FOLDER`` works without a
build step; its unreadable photos are skipped and listed in ``DataInfo.skipped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict  # pydantic validates typing's TypedDict from Python 3.12 only

from instacli.errors import InstacliError, invalid_file
from instacli_datasets.build import INFO_FILE, collect, fingerprint, open_source, quiet_datasets, to_dataset
from instacli_datasets.folder import Skipped

#: Longer side of photos decoded from a plain folder; large enough for any encoder's input.
PLAIN_MAX_SIDE = 512


@dataclass
class DataInfo:
    """What a consumer needs to know about a dataset besides its rows."""

    class_names: list[str]
    engagement: str | None
    fingerprint: str
    source: str
    numeric_columns: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    #: Parameters of the engagement generator (``synthetic:realistic``), e.g. for ``oracle_log_likes``.
    params: dict[str, Any] = field(default_factory=dict)
    #: How ``data build`` split the rows: ``by``, ``group_column``, ``group_pattern``, ``holdout`` (empty for a plain folder).
    split: dict[str, Any] = field(default_factory=dict)


class _InfoFile(TypedDict):
    """What :func:`read_info` needs of ``instacli_dataset.json`` (checked, so that a damaged file is one line)."""

    class_names: list[str]
    engagement: str | None
    fingerprint: str
    source: str
    numeric_columns: list[str]
    engagement_params: NotRequired[dict[str, Any]]
    split: NotRequired[dict[str, Any]]


#: The fix of every damaged file of a built dataset.
_REBUILD = "the dataset is damaged: rebuild it with `instacli data build`"


def is_built_dataset(path: Path) -> bool:
    return (Path(path) / "dataset_dict.json").is_file()


def read_info(path: Path) -> DataInfo:
    """The ``DataInfo`` recorded by ``data build`` in ``instacli_dataset.json``."""
    info_path = Path(path) / INFO_FILE
    if not info_path.is_file():
        raise InstacliError(f"{path}: no {INFO_FILE}, so it was not made by 'instacli data build'; build it with that command")
    try:
        info = TypeAdapter(_InfoFile).validate_json(info_path.read_bytes())
    except ValidationError as exc:
        raise invalid_file(info_path, exc, _REBUILD) from None
    return DataInfo(
        class_names=info["class_names"], engagement=info["engagement"], fingerprint=info["fingerprint"],
        source=info["source"], numeric_columns=info["numeric_columns"], params=info.get("engagement_params", {}),
        split=info.get("split", {}),
    )


def load_dataset_dict(path: Path):
    """``(DatasetDict, DataInfo)`` of a folder made by ``data build``."""
    from datasets import DatasetDict

    info = read_info(path)
    try:
        with quiet_datasets():
            dataset_dict = DatasetDict.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as exc:  # truncated Arrow shards (pyarrow's errors are OSError/ValueError), bad JSON
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise InstacliError(f"{path}: cannot read the dataset ({reason}); {_REBUILD}") from None
    for name, split in dataset_dict.items():  # edited class_names gave training an IndexError, or a class it never saw
        labels = getattr(split.features.get("label"), "names", None)
        if labels != info.class_names:
            raise InstacliError(f"{path / INFO_FILE}: class_names {info.class_names} are not the categories of its {name} split ({labels}); {_REBUILD}")
    return dataset_dict, info


def load_data(path: Path, split: str = "test", *, workers: int = 2):
    """``(datasets.Dataset, DataInfo)``: split ``split`` of a built dataset, or all photos of a plain folder."""
    path = Path(path)
    if not path.is_dir():
        raise InstacliError(f"{path}: no such folder; give a dataset built by 'instacli data build' or a folder of photos")
    if is_built_dataset(path):
        dataset_dict, info = load_dataset_dict(path)
        if split not in dataset_dict:
            raise InstacliError(f"{path}: has no split '{split}'; its splits: {', '.join(dataset_dict)}")
        return dataset_dict[split], info
    collected = collect(open_source(path, min_classes=1), max_side=PLAIN_MAX_SIDE, workers=workers)
    info = DataInfo(
        class_names=collected.source.class_names, engagement=collected.engagement,
        fingerprint=fingerprint(collected), source=str(path.resolve()),
        numeric_columns=collected.numeric_columns, skipped=collected.skipped, params=collected.params,
    )
    rows = [row | {"image": collected.spool.image(row["image"])} for row in collected.rows()]
    return to_dataset(rows, info.class_names, collected.columns), info
