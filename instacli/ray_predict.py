"""``instacli predict --engine ray``: the same rows as the local path, scored on a Ray cluster.

A Ray Data pipeline: the photo list (made here, as locally) → decoding in CPU tasks
(:func:`~instacli.photo_files.decode_or_reason`, the hardened reader every command uses) → scoring in
model actors that each hold a :class:`~instacli.prediction.Predictor` (one GPU each when the cluster
has GPUs) → the rows. A one-file ``--out`` is streamed back here in the order of the photo list and
written by predict's own writer, atomically: on a remote cluster the workers' disks are not this
machine's. An ``--out`` without a suffix is a folder of Parquet shards written by the workers
themselves (it must be on storage every node sees, as must the photos and the run folders).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from instacli.errors import InstacliError, exception_line
from instacli.io import atomic_dir, atomic_file, check_writable_target, output_lock
from instacli.settings import PREDICT_BATCH_SIZE

if TYPE_CHECKING:
    from instacli.prediction import PhotoInputs, PhotoList, PredictSummary

# torch and the models are imported inside the functions: the decoding tasks import this module and
# need neither, so their workers start in a fraction of a second instead of ~5-10 s.

#: The optional extra that installs Ray (pyproject.toml).
EXTRA = "ray"


def _ray() -> Any:
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library comes with the [data] extra of ray)
    except ImportError:
        raise InstacliError(f"--engine ray needs Ray Data; install it with: pip install 'instacli[{EXTRA}]'") from None
    return ray


def _decode(batch: dict[str, np.ndarray], sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """Decode a batch of photo paths at each size (a CPU task that needs no torch: a worker starts in
    a second, not ten); an unreadable file gets zeros and its error, as locally. Paths travel as
    bytes: a file name that is not UTF-8 cannot be an Arrow string."""
    from instacli.photo_files import decode_or_reason

    paths = [Path(os.fsdecode(bytes(p))) for p in batch["path"]]
    errors = list(batch["error"])  # a sub-folder that could not be walked comes with its error and no file
    out = dict(batch)
    for size in sizes:
        decoded = [decode_or_reason(path, size) if not batch["error"][k] else (np.zeros((3, size, size), np.uint8), "")
                   for k, path in enumerate(paths)]
        out[f"pixels_{size}"] = np.stack([pixels for pixels, _ in decoded])
        errors = [error or reason for error, (_, reason) in zip(errors, decoded)]
    out["error"] = np.array(errors, dtype=object)
    return out


class _Scorer:
    """A model actor: loads the runs once, then turns decoded batches into output rows."""

    def __init__(self, run_paths: Sequence[str], tta: str, backend: str, post_columns: Sequence[str]) -> None:
        import torch

        from instacli.prediction import Predictor, open_run, parquet_schema

        torch.set_num_threads(1)  # an actor holds one core (or one GPU): more threads would take the decoders' CPU
        self.predictor = Predictor([open_run(path, backend) for path in run_paths], tta)
        self.post_columns = list(post_columns)
        self.schema = parquet_schema(self.predictor.classes, post_columns)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa
        import torch

        images = {size: torch.from_numpy(np.ascontiguousarray(batch[f"pixels_{size}"])) for size in self.predictor.sizes}
        rows = self.predictor.rows(images, list(batch["file"]), [json.loads(m) for m in batch["meta"]], list(batch["error"]), self.post_columns)
        return pa.Table.from_pylist(rows, schema=self.schema)


def _actors(ray: Any) -> dict[str, Any]:
    """How many model actors, and what each holds: one GPU each where the cluster has GPUs, else one per
    CPU, each leaving a fifth of its core to the decoding tasks (decoding costs ~1/10 of a forward pass)."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus:
        return {"concurrency": gpus, "num_gpus": 1, "num_cpus": 1}
    return {"concurrency": cpus, "num_gpus": 0, "num_cpus": 0.8}


def predict_on_ray(
    run_path: Sequence[Path | str],
    folder: Path | str,
    out: Path | str,
    metadata: Path | str | None = None,
    batch_size: int = PREDICT_BATCH_SIZE,
    overwrite: bool = False,
    column_map: dict[str, str] | None = None,
    tta: str = "none",
    address: str | None = None,
    backend: str = "pytorch",
    carousel: str | None = None,
) -> PredictSummary:
    """:func:`~instacli.prediction.predict_folder` on Ray: connect to the cluster at ``address``
    (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; None starts a local one, or uses the one this
    process already joined) and score there. The photos, run folders (or exported graphs, with ``backend``
    onnxruntime) and a shards ``out`` must be on storage every node of the cluster sees."""
    import time

    from instacli.ensemble import check_compatible
    from instacli.prediction import PhotoInputs, Tally, _writer, check_paths, list_photos, open_run
    from instacli.settings import ScoringBatch, check_flag

    ray = _ray()
    _check_reachable(address)
    started = time.perf_counter()
    folder, out = Path(folder), Path(out)
    batch_size = check_flag("--batch-size", batch_size, ScoringBatch)
    check_paths(folder, out, shards=True, metadata=metadata)
    with output_lock(out):
        check_writable_target(out, overwrite, "prediction output")
        photos = list_photos(folder, metadata, carousel)
        run_paths = [str(Path(path).absolute()) for path in run_path]
        runs = [open_run(path, backend) for path in run_paths]  # here too: check them before the cluster does any work
        check_compatible(runs)
        inputs = PhotoInputs.read(runs, folder, photos, Path(metadata) if metadata else None, column_map)
        classes = runs[0].config.class_names
        sizes = list(dict.fromkeys(run.preprocess.resize_size for run in runs))
        joined = ray.is_initialized()
        if not joined:
            local = {} if address else {"include_dashboard": False}  # a fresh local instance needs no dashboard
            try:
                ray.init(address=address, log_to_driver=False, **local)
            except ConnectionError as exc:  # an OSError: the CLI called it "a file operation" and blamed the disk
                raise InstacliError(f"--address {address}: {exception_line(exc)}") from None
        try:
            rows = _pipeline(ray, photos, inputs, sizes, run_paths, batch_size, tta, backend, classes)
            tally = Tally(inputs)
            if out.suffix:
                with atomic_file(out, "wb" if out.suffix == ".parquet" else "w", overwrite) as handle:
                    write = _writer(out, handle, classes, inputs.post_columns)
                    for batch in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
                        if batch.num_rows:  # (an empty list would close the Parquet file)
                            written = batch.to_pylist()
                            write(written)
                            tally.add(written)
                    if out.suffix == ".parquet":
                        write([])  # closes the Parquet footer
                    return tally.summary(out, folder, started, photos.skipped)
            import pyarrow.parquet as pq

            with atomic_dir(out, overwrite, "prediction folder") as tmp:
                rows.write_parquet(str(tmp.absolute()))
                for shard in sorted(tmp.glob("*.parquet")):
                    for batch in pq.ParquetFile(shard).iter_batches(columns=["file", "likes", "likes_from_defaults", "error", *(["unfamiliar"] if classes else [])]):
                        tally.add(batch.to_pylist())
                return tally.summary(out, folder, started, photos.skipped)
        finally:
            if not joined:
                ray.shutdown()


#: Seconds to wait for a cluster's port to accept a connection before saying nothing answers there.
CONNECT_TIMEOUT_S = 5


def _check_reachable(address: str | None) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) where nothing listens, in seconds: ``ray.init`` retried
    such an address 20 times, ~40 s each (about 13 minutes of warnings), then raised a traceback."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InstacliError(f"--address {address}: give auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise InstacliError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                            "start one (ray start --head) or check the address") from None


def _pipeline(ray: Any, photos: PhotoList, inputs: PhotoInputs, sizes: Sequence[int],
              run_paths: Sequence[str], batch_size: int, tta: str, backend: str, classes: Sequence[str]) -> Any:
    """The Ray Dataset of output rows, in the order of ``files`` then the unwalked sub-folders (as locally)."""
    from instacli.prediction import unwalked_rows

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in the order of the photo list
    items = [{"path": os.fsencode(f), "file": name, "meta": json.dumps(meta, default=str), "error": ""}
             for f, name, meta in zip(photos.files, inputs.names, inputs.meta)]
    items += [{"path": b"", "file": row["file"], "meta": "{}", "error": row["error"]} for row in unwalked_rows(photos.unwalked, classes)]
    actors = _actors(ray)
    return (
        ray.data.from_items(items, override_num_blocks=max(1, len(items) // batch_size))  # a block per batch, not per 2 rows
        .map_batches(_decode, fn_kwargs={"sizes": list(sizes)}, batch_size=batch_size, num_cpus=0.2 if not actors["num_gpus"] else 1)
        .map_batches(_Scorer, fn_constructor_kwargs={"run_paths": list(run_paths), "tta": tta, "backend": backend,
                                                     "post_columns": list(inputs.post_columns)},
                     batch_size=batch_size, batch_format="numpy", **actors)
    )
