"""``instacli serve``: a trained run behind an HTTP API (FastAPI), scoring photos as ``predict`` does.

The run is loaded once, when the app is made. ``POST /predict`` takes photos as multipart files and
answers one ``predict`` row per photo (:meth:`instacli.prediction.Predictor.rows`, the code path of
``instacli predict``, so both give the same numbers). Photos of concurrent requests are scored
together: each waits in a queue at most ``max_wait_ms`` for others, up to ``max_batch`` photos per
forward pass, as one batch of 32 costs far less than 32 batches of one. Decoding (one thread per
core, whatever the number of requests) and the forward pass run in threads, so the event loop keeps
accepting requests meanwhile.

An upload is read as it streams in (python-multipart's parser) and refused as soon as a photo
passes ``max_file_mb`` or the request brings more than ``max_files`` photos, so a huge upload never
sits in memory. Photos are decoded by :func:`instacli.photo_files.decode_square`, which refuses what is
not a photo in a supported format, decompression bombs and absurd sizes. Every refusal is a 4xx
whose ``detail`` is one line; nothing a client sends stops the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import python_multipart
import torch
from fastapi import FastAPI, HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from instacli import __version__
from instacli.features import NUMERIC_COLUMNS
from instacli.model import load_run
from instacli.photo_files import decode_square, printable_name, reason
from instacli.prediction import Predictor, output_columns
from instacli.run_folder import RunFolder
from instacli.settings import ServeLimits, usable_cores

#: Room for the form fields (engagement numbers, captions, JSON parts) of one request, all together.
MAX_FIELD_BYTES = 2**20
#: Requests per core that may hold their uploads at once (one decoding, one being read).
UPLOADS_PER_CORE = 2
#: Seconds a request may take to send its upload while it holds one of those places: without a
#: deadline a few clients stalled mid-upload would keep every other request waiting forever.
#: 16 photos × 20 MB arrive in it at 6 MB/s.
UPLOAD_SECONDS = 60.0
#: The form field holding a photo's engagement as one JSON object (once for all photos, or once per photo).
METADATA_FIELD = "metadata"
#: Form fields a photo's engagement may be given in (each once for all photos, or once per photo).
ENGAGEMENT_FIELDS = (*NUMERIC_COLUMNS, "caption")


class Refused(HTTPException):
    """A request the server will not score: its status code and a one-line reason for the client."""


@dataclass
class _Upload:
    """What a multipart request brought: photos (name, bytes) and form fields (name → values in order)."""

    photos: list[tuple[str, bytes]] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)


class _UploadReader:
    """python-multipart callbacks that collect an upload and stop it at the first limit passed.

    A part with a file name is a photo (whatever its field name), except a ``metadata`` part, which
    is JSON text whether it came as a field or as a file (``curl -F metadata=@post.json``)."""

    def __init__(self, max_file_bytes: int, max_files: int) -> None:
        self.max_file_bytes, self.max_files = max_file_bytes, max_files
        self.upload = _Upload()
        self.field_bytes = 0
        self._header, self._value = b"", b""
        # the part being read
        self._name: str = ""
        self._filename: str | None = None
        self._data = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end, "on_part_data": self._part_data, "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._name, self._filename, self._data = "", None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            _, options = parse_options_header(self._value)
            self._name = options.get(b"name", b"").decode("utf-8", "replace")
            filename = options.get(b"filename")
            self._filename = filename.decode("utf-8", "replace") if filename is not None and self._name != METADATA_FIELD else None
            if self._filename is not None and len(self.upload.photos) >= self.max_files:
                raise Refused(413, f"more than {self.max_files} photos in one request; send at most {self.max_files} per request")
        self._header, self._value = b"", b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]
        if self._filename is not None:
            if len(self._data) > self.max_file_bytes:
                raise Refused(413, f"{self._filename}: larger than {self.max_file_bytes / 2**20:.3g} MB; send a smaller photo")
        else:
            self.field_bytes += end - start
            if self.field_bytes > MAX_FIELD_BYTES:
                raise Refused(413, f"form fields over {MAX_FIELD_BYTES // 1024} KB in all; send shorter captions or fewer fields")

    def _part_end(self) -> None:
        if self._filename is not None:
            self.upload.photos.append((printable_name(self._filename) or f"photo-{len(self.upload.photos) + 1}", bytes(self._data)))
        else:
            self.upload.fields.setdefault(self._name, []).append(self._data.decode("utf-8", "replace"))


async def read_upload(request: Request, max_file_bytes: int, max_files: int) -> _Upload:
    """The photos and fields of a ``multipart/form-data`` request, read chunk by chunk as it arrives."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise Refused(415, "send the photos as multipart/form-data files (e.g. curl -F files=@photo.jpg)")
    reader = _UploadReader(max_file_bytes, max_files)
    try:
        parser = python_multipart.MultipartParser(options[b"boundary"], reader.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise Refused(400, f"malformed multipart body ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); send it as multipart/form-data") from None
    if not reader.upload.photos:
        raise Refused(422, "no photo in the request; send one or more as multipart files (e.g. curl -F files=@photo.jpg)")
    return reader.upload


def _per_photo(name: str, values: Sequence[Any], n: int) -> list[Any]:
    """The value of field ``name`` for each of ``n`` photos: given once, it is every photo's; else one per photo."""
    if len(values) == 1:
        return list(values) * n
    if len(values) != n:
        raise Refused(422, f"{name}: given {len(values)} times for {n} photos; give it once (for every photo) or once per photo, in order")
    return list(values)


def engagement_rows(fields: dict[str, list[str]], n: int) -> list[dict[str, Any]]:
    """Each photo's engagement row, from plain fields (``comments=12``) and JSON ``metadata`` parts,
    checked as a ``--metadata`` table's cells are (:data:`instacli_datasets.engagement.PARSERS`)."""
    from instacli_datasets.engagement import PARSERS

    plain: dict[str, list[Any]] = {}
    from_json: dict[str, list[Any]] = {}
    for name, values in fields.items():
        if name != METADATA_FIELD:
            plain[name] = _per_photo(name, values, n)
            continue
        for i, text in enumerate(_per_photo(name, values, n)):
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                raise Refused(422, f"{METADATA_FIELD}: not JSON ({exc}); send a JSON object such as {{\"comments\": 12}}") from None
            if not isinstance(item, dict):
                raise Refused(422, f"{METADATA_FIELD}: is {type(item).__name__}, not a JSON object; send one such as {{\"comments\": 12}}")
            for key, value in item.items():
                from_json.setdefault(key, [None] * n)[i] = value
    twice = sorted(set(plain) & set(from_json))
    if twice:
        raise Refused(422, f"{twice[0]}: given both as a field and in {METADATA_FIELD}; give it once")
    given = {**plain, **from_json}
    unknown = sorted(set(given) - set(ENGAGEMENT_FIELDS))
    if unknown:
        raise Refused(422, f"unknown field '{unknown[0]}'; send photos as files and engagement as {', '.join(ENGAGEMENT_FIELDS)} or a JSON {METADATA_FIELD} part")
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, values in given.items():
        for row, value in zip(rows, values):
            try:
                row[name] = PARSERS[name](value)
            except ValueError as exc:  # only counts can be wrong: a caption is any text
                raise Refused(422, f"{name} {exc}; send a whole number ≥ 0") from None
    return rows


@dataclass
class _Photo:
    """A decoded photo waiting for its forward pass, and where its row goes."""

    name: str
    images: dict[int, torch.Tensor]  # uint8 (3, R, R) per decode size
    meta: dict[str, Any]
    answer: asyncio.Future[dict[str, Any]]


class Batcher:
    """Scores photos of concurrent requests together: a queue emptied by one loop, a batch at a time.

    A batch closes when it holds ``max_batch`` photos or its first photo has waited ``max_wait_s``;
    the forward pass runs in a thread, so the queue fills with the next batch meanwhile. The counts
    (``batches``, ``photos``, ``largest_batch``) are shown by ``GET /health``."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait_s: float) -> None:
        self.predictor, self.max_batch, self.max_wait_s = predictor, max_batch, max_wait_s
        self.queue: asyncio.Queue[_Photo] = asyncio.Queue()
        self.batches = self.photos = self.largest_batch = 0

    async def score(self, names: Sequence[str], images: Sequence[dict[int, torch.Tensor]], meta: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of these decoded photos, once their batches have been scored."""
        loop = asyncio.get_running_loop()
        photos = [_Photo(name, image, row, loop.create_future()) for name, image, row in zip(names, images, meta)]
        for photo in photos:
            self.queue.put_nowait(photo)
        return list(await asyncio.gather(*(photo.answer for photo in photos)))

    async def _next_batch(self) -> list[_Photo]:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
            except asyncio.TimeoutError:
                break
        return batch

    def _rows(self, batch: Sequence[_Photo]) -> list[dict[str, Any]]:
        images = {size: torch.stack([photo.images[size] for photo in batch]) for size in self.predictor.sizes}
        return self.predictor.rows(images, [p.name for p in batch], [p.meta for p in batch], [""] * len(batch))

    async def run(self) -> None:
        """Score batches until cancelled; a failed batch fails its own requests only."""
        while True:
            batch = await self._next_batch()
            self.batches += 1
            self.photos += len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                rows = await run_in_threadpool(self._rows, batch)
            except Exception as exc:
                for photo in batch:
                    if not photo.answer.done():
                        photo.answer.set_exception(exc)
                continue
            for photo, row in zip(batch, rows):
                if not photo.answer.done():  # a client that went away cancelled its wait
                    photo.answer.set_result(row)


async def received(
    request: Request, max_file_bytes: int, max_files: int, sizes: Sequence[int], decoding: anyio.CapacityLimiter,
) -> tuple[list[str], list[dict[str, Any]], list[dict[int, torch.Tensor] | str]]:
    """A request's photo names, engagement rows and decoded photos (or why each could not be read); its
    uploaded bytes are gone when this returns."""
    try:
        with anyio.fail_after(UPLOAD_SECONDS):
            upload = await read_upload(request, max_file_bytes, max_files)
    except TimeoutError:
        raise Refused(408, f"the upload took over {UPLOAD_SECONDS:g} s; send it again, or fewer or smaller photos") from None
    meta = engagement_rows(upload.fields, len(upload.photos))
    decoded = await anyio.to_thread.run_sync(_decode, upload.photos, sizes, limiter=decoding)
    return [name for name, _ in upload.photos], meta, decoded


def _decode(photos: Iterable[tuple[str, bytes]], sizes: Sequence[int]) -> list[dict[int, torch.Tensor] | str]:
    """Each photo as uint8 squares at every size, or the one-line reason it cannot be read."""
    out: list[dict[int, torch.Tensor] | str] = []
    for _, data in photos:
        try:
            out.append({size: torch.from_numpy(decode_square(data, size)) for size in sizes})
        except Exception as exc:  # not an image, truncated, a bomb, an absurd size: that photo's error
            out.append(reason(exc))
    return out


def create_app(run: Path | str, limits: ServeLimits | None = None) -> FastAPI:
    """The HTTP API of the trained run at ``run`` (loaded now; a bad run is an :class:`InstacliError`).

    Serve it with any ASGI server, e.g. ``uvicorn.run(create_app("runs/vit", ServeLimits(max_files=4)))``."""
    limits = limits or ServeLimits()
    max_file_bytes = int(limits.max_file_mb * 2**20)
    loaded = load_run(run)
    predictor = Predictor([loaded])
    classes = predictor.classes
    batcher = Batcher(predictor, limits.max_batch, limits.max_wait_ms / 1000)
    # one decoding thread per core: decoding is CPU-bound, and a big photo takes up to ~1 GB while it
    # is decoded, so a thread per request (up to 40) let concurrent uploads take 40 GB
    decoding = anyio.CapacityLimiter(usable_cores())
    # requests holding their uploaded bytes (up to max_files × max_file_mb each) until decoded: the others wait
    # unread, so a crowd of clients cannot fill the memory; decoded photos are small, and batch together
    uploads = anyio.CapacityLimiter(UPLOADS_PER_CORE * usable_cores())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())  # on the server's event loop, which the queue then belongs to
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="instacli", version=__version__, lifespan=lifespan,
                  description=f"Category and likes of photos, from the trained run `{Path(run).name}`.")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Whether the server answers, and how many photos it scored in how many batches."""
        return {"status": "ok", "batches": batcher.batches, "photos": batcher.photos, "largest_batch": batcher.largest_batch}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The run served: encoder, classes, the numeric inputs it reads, its training metrics per epoch."""
        config = loaded.config
        return {"run": str(loaded.path), "encoder": config.encoder, "task": config.task, "classes": classes,
                "features": loaded.scaler.features, "reads_captions": bool(config.text_encoder),
                "columns": output_columns(classes), "training": RunFolder(loaded.path).history()}

    form = {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": f"Photos (at most {limits.max_files}, {limits.max_file_mb:g} MB each)."},
        **{name: {"type": "array", "items": {"type": "integer", "minimum": 0}, "description": "Once for every photo, or once per photo."} for name in NUMERIC_COLUMNS},
        "caption": {"type": "array", "items": {"type": "string"}},
        METADATA_FIELD: {"type": "array", "items": {"type": "string"}, "description": 'A JSON object per photo (or one for all), e.g. {"comments": 12, "caption": "…"}.'},
    }}

    @app.post("/predict", openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}})
    async def predict(request: Request) -> dict[str, list[dict[str, Any]]]:
        """One row per photo, as a row of `instacli predict`: label, probabilities, confidence, unfamiliar,
        likes, likes_from_defaults, error. A photo that cannot be read gets its reason in `error`; a
        request none of whose photos can be read is refused (422)."""
        async with uploads:
            names, meta, decoded = await received(request, max_file_bytes, limits.max_files, predictor.sizes, decoding)
        good = [i for i, item in enumerate(decoded) if not isinstance(item, str)]
        if not good:
            raise Refused(422, f"{names[0]}: {decoded[0]}" if len(names) == 1 else f"none of the {len(names)} photos could be read; {names[0]}: {decoded[0]}")
        try:
            scored = await batcher.score([names[i] for i in good], [decoded[i] for i in good], [meta[i] for i in good])  # type: ignore[misc]
        except Exception as exc:
            raise HTTPException(500, f"scoring failed: {reason(exc)}") from None
        rows = dict(zip(good, scored))
        empty = dict.fromkeys(output_columns(classes))
        return {"predictions": [rows.get(i) or {**empty, "file": name, "error": decoded[i]} for i, name in enumerate(names)]}

    return app
