"""Dataset building and loading for instacli (installed as ``instacli_datasets``).

``build_dataset`` turns a folder of photos (+ engagement) into a split, portable
``datasets.DatasetDict``; ``load_data`` gives one split of it, or every photo of a plain folder,
with a :class:`DataInfo`; ``iter_image_files`` lists the photos of a folder the same way the
builder does; ``oracle_log_likes`` is the best possible likes prediction on ``synthetic:realistic``
data (pass it ``DataInfo.params``).

The names are imported when first used (PEP 562): a build's decode workers import
:mod:`instacli_datasets.photo_bytes`, and importing the whole package with it (scipy among others)
cost each worker 0.45 s of CPU, more than 1,000 small photos take to decode.
"""

import importlib
from typing import Any

#: Each exported name → the module that defines it.
_HOMES = {
    "BuildReport": "build", "build_dataset": "build", "Skipped": "folder", "iter_image_files": "folder",
    "DataInfo": "load", "load_data": "load", "oracle_log_likes": "synthetic",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
