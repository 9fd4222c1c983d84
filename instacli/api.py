"""The in-memory Python API: a trained run loaded once, answering for photos already in memory.

``instacli predict`` scores a folder into a file; a notebook or a service of the user's own wants
rows back for the images it holds::

    import instacli

    model = instacli.load("runs/vit")                      # or several runs: an ensemble
    frame = model.predict(["a.jpg", pil_image, array], metadata=engagement_frame)

The rows are those of ``instacli predict`` (:meth:`instacli.prediction.Predictor.rows`, the one code
path of predict and serve), in the order of the images, as a :class:`pandas.DataFrame`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from PIL import Image

from instacli.errors import InstacliError
from instacli.photo_files import check_photo_size, decode_or_reason, reason, square_of
from instacli.prediction import Predictor, check_compatible, open_run, output_columns
from instacli.settings import PREDICT_BATCH_SIZE, ScoringBatch, check_flag

if TYPE_CHECKING:
    import pandas as pd

#: What :meth:`Model.predict` takes as a photo: a file path, a PIL image, an ``(H, W, 3)`` or
#: ``(H, W)`` uint8 array, or the encoded bytes of a file.
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]
#: One image, not a list of them (file bytes may come as a bytearray or memoryview: iterated, they are ints).
_ONE_IMAGE = (str, os.PathLike, Image.Image, np.ndarray, bytes, bytearray, memoryview)


class Model:
    """One trained run (or an ensemble of runs) ready to answer in memory; see :func:`load`."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @property
    def classes(self) -> list[str]:
        """The category labels, in the order of the ``prob_*`` columns (empty for a likes-only run)."""
        return list(self.predictor.classes)

    @property
    def features(self) -> list[str]:
        """The engagement numbers the runs read (columns of ``metadata``); missing ones get the training median."""
        return list(dict.fromkeys(f for run in self.predictor.runs for f in run.scaler.features))

    def predict(self, images: ImageLike | Sequence[ImageLike], metadata: Any = None, batch_size: int = PREDICT_BATCH_SIZE) -> pd.DataFrame:
        """One row per image, as ``instacli predict`` writes it: label, ``prob_*``, confidence,
        unfamiliar, likes, likes_from_defaults, error (``file`` holds the path of a path, else None).

        ``metadata``: the engagement numbers (and caption) of each image, a DataFrame or a list of
        dicts in the order of ``images`` (a dict for a single image); without it, likes come from the
        training medians, as for a photo without an engagement row. A file that cannot be read gets a
        row with ``error`` filled, as in ``predict``; an object that is no image at all is refused."""
        import pandas as pd

        if not isinstance(images, _ONE_IMAGE) and not isinstance(images, Iterable):
            raise InstacliError(f"images: a {type(images).__name__} is no image; give an image or a list of them")
        items = [images] if isinstance(images, _ONE_IMAGE) else list(images)
        meta = _metadata_rows(metadata, len(items))
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise InstacliError(f"batch_size={batch_size!r}: give a whole number of at least 1")
        check_flag("batch_size", batch_size, ScoringBatch)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            decoded = {size: [_square(item, size, start + k) for k, item in enumerate(batch)] for size in self.predictor.sizes}
            errors = [next((by_size[k][1] for by_size in decoded.values() if by_size[k][1]), "") for k in range(len(batch))]
            pixels = {size: torch.from_numpy(np.stack([square for square, _ in squares])) for size, squares in decoded.items()}
            names = [str(item) if isinstance(item, (str, os.PathLike)) else None for item in batch]
            rows += self.predictor.rows(pixels, names, meta[start : start + len(batch)], errors)  # type: ignore[arg-type]
        return pd.DataFrame(rows, columns=output_columns(self.classes))


def load(runs: str | os.PathLike | Sequence[str | os.PathLike], tta: bool | str = False, backend: str = "pytorch") -> Model:
    """The run folder(s) at ``runs`` loaded for :meth:`Model.predict`: several runs answer as an
    ensemble (probabilities and log-likes averaged); ``tta`` True averages each photo with its mirror
    image (or a view name of :data:`instacli.augment.TTA_CHOICES`); ``backend`` ``onnxruntime`` runs
    the graph ``instacli export`` wrote."""
    from instacli.augment import TTA_CHOICES, TTA_DEFAULT

    paths = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    if not paths:
        raise InstacliError("load(): give at least one run folder")
    view = TTA_DEFAULT if tta is True else "none" if tta is False else tta
    if view not in TTA_CHOICES:
        raise InstacliError(f"tta={tta!r}: choose True, False or one of {', '.join(TTA_CHOICES)}")
    loaded = [open_run(Path(path), backend) for path in paths]
    check_compatible(loaded)
    return Model(Predictor(loaded, view))


def _metadata_rows(metadata: Any, n: int) -> list[dict[str, Any]]:
    """One engagement row (a dict, ``{}`` when there is none) per image, from a DataFrame, a list of
    dicts, or one dict (or a DataFrame row, a Series); missing cells are left for the training
    medians to fill. Known columns are checked as a ``--metadata`` table's cells are
    (:data:`instacli_datasets.engagement.PARSERS`): a negative, infinite or non-numeric count gave
    NaN likes and a traceback from deep inside."""
    import pandas as pd
    from instacli_datasets.engagement import PARSERS

    if metadata is None:
        return [{} for _ in range(n)]
    if hasattr(metadata, "to_dict") and not hasattr(metadata, "columns"):  # a pandas Series: one row, as a dict
        metadata = metadata.to_dict()
    if isinstance(metadata, Mapping):
        metadata = [metadata]
    if hasattr(metadata, "to_dict") and hasattr(metadata, "columns"):  # a pandas DataFrame
        metadata = metadata.to_dict("records")
    if isinstance(metadata, (str, bytes)):
        raise InstacliError("metadata: give a DataFrame, a list of dicts or one dict (column name → value)")
    rows = list(metadata)
    if len(rows) != n:
        raise InstacliError(f"metadata has {len(rows)} rows for {n} images; give one row per image, in the order of the images")
    if not all(isinstance(row, Mapping) for row in rows):
        raise InstacliError("metadata: give a DataFrame, a list of dicts or one dict (column name → value)")
    checked = []
    for i, row in enumerate(rows):
        values = {}
        for key, value in row.items():
            try:
                missing = pd.api.types.is_scalar(value) and pd.isna(value)  # None, NaN, pd.NA of a nullable column
                values[key] = None if missing else PARSERS[key](value) if key in PARSERS else value
            except ValueError as exc:
                raise InstacliError(f"metadata row {i}: {key} {exc}") from None
        checked.append({k: v for k, v in values.items() if v is not None})
    return checked


def _square(item: Any, size: int, position: int) -> tuple[np.ndarray, str]:
    """The ``(3, size, size)`` uint8 square of one image and why it could not be read ("" when it could)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_or_reason(bytes(item), size)
    if isinstance(item, (str, os.PathLike)):
        return decode_or_reason(Path(item), size)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
            raise InstacliError(f"image #{position}: an array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4); "
                                f"got {item.dtype} {item.shape}")
        item = Image.fromarray(item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item)
    if isinstance(item, Image.Image):
        try:
            check_photo_size(*item.size)  # as for a file: a 1×200,000 strip is no photo
            return square_of(item, size), ""
        except Exception as exc:  # noqa: BLE001 — an empty image, a lazily opened file that turns out truncated: its error row
            return np.zeros((3, size, size), dtype=np.uint8), reason(exc)
    raise InstacliError(f"image #{position}: a {type(item).__name__} is not an image; give a path, a PIL image, a uint8 array or file bytes")
