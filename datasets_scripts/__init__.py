"""Dataset building and loading for instacli (installed as ``instacli_datasets``).

``build_dataset`` turns a folder of photos (+ engagement) into a split, portable
``datasets.DatasetDict``; ``load_data`` gives one split of it, or every photo of a plain folder,
with a :class:`DataInfo`; ``iter_image_files`` lists the photos of a folder the same way the
builder does; ``oracle_log_likes`` is the best possible likes prediction on ``synthetic:realistic``
data (pass it ``DataInfo.params``).
"""

from instacli_datasets.build import BuildReport, build_dataset
from instacli_datasets.folder import Skipped, iter_image_files
from instacli_datasets.load import DataInfo, load_data
from instacli_datasets.synthetic import oracle_log_likes

__all__ = ["BuildReport", "DataInfo", "Skipped", "build_dataset", "iter_image_files", "load_data", "oracle_log_likes"]
