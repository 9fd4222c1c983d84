"""``instacli explain``: where a photo's category came from, and what drives its predicted likes.

* **Category: Grad-CAM** (Selvaraju et al. 2017, with the ``grad-cam`` package): the gradient of the
  predicted class's logit weighs the channels of the encoder's last spatial layer, which the encoder
  names itself (:meth:`instacli.encoders.ImageEncoder.cam_layer`): a conv net's last feature maps, or
  a ViT's tokens entering its last block, reshaped to their grid. The map, upsampled to the photo and
  scaled to [0, 1], is drawn over the photo the model saw (the center crop of the evaluation view).
* **Likes: integrated gradients** (Sundararajan et al. 2017, with Captum) of the predicted log1p likes
  over the inputs of the heads: the photo's embedding, each engagement number, the caption's
  embedding. Each group's attributions are summed, so the groups and the baseline's prediction add
  up to the photo's predicted log1p likes (``delta`` says how closely, per photo). The baseline is a
  zero embedding (no photo), the training mean of every number (their scaled value 0) and a zero
  caption embedding. Averaged over photos as the mean absolute attribution per group.

Outputs of one explanation, in one folder written at once: ``category/<photo>.png`` (the photo beside
its heatmap), ``likes_attributions.json`` (per photo and on average), ``likes_attributions.png``
(the bar chart of the averages) and ``index.html`` showing them all.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image
from torch import nn

from instacli.augment import center_crop, eval_view
from instacli.errors import InstacliError, require_extra
from instacli.io import atomic_dir
from instacli.model import LoadedRun

#: The optional extra that installs Grad-CAM and Captum.
EXTRA = "explain"
#: Steps of the integrated gradients' path integral; Captum's default, whose ``delta`` stays below 1 % here.
IG_STEPS = 50
#: Side of each half of a heatmap PNG: tiny model inputs (32 px) are upscaled to be seen.
PANEL_SIZE = 224
ATTRIBUTIONS_JSON = "likes_attributions.json"
ATTRIBUTIONS_PNG = "likes_attributions.png"
CATEGORY_DIR = "category"
INDEX = "index.html"
#: The group of the photo embedding (with what the category head reads of it) and of the caption.
PHOTO, CAPTION = "photo", "caption"


class _CategoryLogits(nn.Module):
    """Pixels → category logits, the caption (when the classifier reads one) held fixed per batch."""

    def __init__(self, run: LoadedRun) -> None:
        super().__init__()
        self.model = run.model
        self.text: torch.Tensor | None = None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        embedding = self.model.encoder(pixels)
        return self.model.classify(embedding, self.model.fuse(embedding, self.text))


def _tokens_to_grid(prefix: int):  # noqa: ANN202 — a reshape_transform for pytorch-grad-cam
    """``(B, N, C)`` tokens → ``(B, C, g, g)`` maps, dropping the first ``prefix`` (class) tokens."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:]
        side = int(round(patches.shape[1] ** 0.5))
        if side * side != patches.shape[1]:
            raise InstacliError(f"the encoder's Grad-CAM layer gives {patches.shape[1]} patch tokens, not a square grid; fix its cam_layer")
        return patches.reshape(len(patches), side, side, -1).permute(0, 3, 1, 2)

    return reshape


def category_heatmaps(run: LoadedRun, images: torch.Tensor, text: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of the predicted class for decoded uint8 ``images``: ``(B, S, S)`` maps in [0, 1] over
    the evaluation view (``S = image_size``), and the predicted class of each photo."""
    gradcam = require_extra("pytorch_grad_cam", EXTRA, "explain")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if run.model.classifier is None:
        raise InstacliError(f"{run.path}: predicts likes only; there is no category to explain")
    layer = run.model.encoder.cam_layer()
    if layer is None:
        raise InstacliError(f"{run.path}: encoder '{run.config.encoder}' does not name a layer for Grad-CAM (ImageEncoder.cam_layer); "
                            "its category cannot be explained")
    module, prefix = layer
    logits_of = _CategoryLogits(run).eval()
    logits_of.text = text
    pixels = eval_view(images, run.preprocess)
    with torch.no_grad():
        predicted = logits_of(pixels).argmax(1).numpy()
    probe: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: probe.append(out))
    with torch.no_grad():
        logits_of(pixels[:1])
    handle.remove()
    reshape = _tokens_to_grid(prefix) if probe[0].ndim == 3 else None
    cam = gradcam.GradCAM(model=logits_of, target_layers=[module], reshape_transform=reshape)
    try:  # pixels that want a gradient: a frozen encoder's activations would otherwise have none
        maps = cam(input_tensor=pixels.contiguous().requires_grad_(True), targets=[ClassifierOutputTarget(int(c)) for c in predicted])
    finally:  # (not its context manager, which prints and swallows an IndexError)
        cam.activations_and_grads.release()
    return maps, predicted


def likes_attributions(run: LoadedRun, images: torch.Tensor, features: torch.Tensor, text: torch.Tensor | None = None) -> dict[str, Any]:
    """Integrated gradients of the predicted log1p likes of each photo: ``{"groups": names,
    "attributions": (B, G), "log_likes": (B,), "baseline_log_likes": (B,), "delta": (B,)}``, in log1p likes."""
    captum_attr = require_extra("captum.attr", EXTRA, "explain")
    if run.model.regressor is None:
        raise InstacliError(f"{run.path}: predicts the category only; there are no likes to explain")
    model, scaler = run.model, run.scaler

    def log_likes(embedding: torch.Tensor, numbers: torch.Tensor, caption: torch.Tensor | None = None) -> torch.Tensor:
        _, likes_z = model.heads(embedding, numbers, caption)
        return likes_z * scaler.target_std + scaler.target_mean

    with torch.no_grad():
        embedding = model.encoder(eval_view(images, run.preprocess))
    inputs = (embedding, features.float()) + ((text.float(),) if text is not None and text.shape[1] else ())
    baselines = tuple(torch.zeros_like(x) for x in inputs)
    ig = captum_attr.IntegratedGradients(log_likes)
    parts, delta = ig.attribute(inputs, baselines=baselines, n_steps=IG_STEPS, return_convergence_delta=True)
    columns = [parts[0].sum(1, keepdim=True), parts[1]] + ([parts[2].sum(1, keepdim=True)] if len(parts) > 2 else [])
    with torch.no_grad():
        predicted, baseline = log_likes(*inputs), log_likes(*baselines)
    return {
        "groups": [PHOTO, *scaler.features] + ([CAPTION] if len(parts) > 2 else []),
        "attributions": torch.cat(columns, dim=1).detach().numpy(),
        "log_likes": predicted.numpy(), "baseline_log_likes": baseline.numpy(), "delta": delta.detach().numpy(),
    }


@dataclass
class Photos:
    """What explain reads of the photos, whichever their source (a folder or a dataset split)."""

    names: list[str]
    images: torch.Tensor  # (N, 3, R, R) uint8 squares at the run's decode size
    features: torch.Tensor  # (N, F) scaled engagement numbers
    text: torch.Tensor | None  # (N, T) caption embeddings, None without captions
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"} of files that could not be read


def folder_photos(run: LoadedRun, folder: Path, metadata: Path | None = None) -> Photos:
    """The readable photos under ``folder`` with their engagement rows from ``metadata`` (by relative
    path or file name; training medians where a photo has none), read as ``predict`` reads them."""
    from instacli.decode_cache import FileDataset
    from instacli.photo_files import relative_name
    from instacli.prediction import _feature_matrix, _metadata_rows, _read_metadata
    from instacli_datasets.folder import is_image_file, scan

    if not folder.is_dir():
        raise InstacliError(f"{folder}: not a folder; pass the folder of photos to explain")
    found, unwalked = scan(folder)
    files = [f for f in found if is_image_file(f)]
    if not files:
        raise InstacliError(f"{folder}: no image files found (jpg, png, webp, …); check the path")
    names = [relative_name(folder, f) for f in files]
    dataset = FileDataset(files, run.preprocess.resize_size)
    decoded = [dataset[i] for i in range(len(files))]
    ok = [i for i, (_, _, error) in enumerate(decoded) if not error]
    if not ok:
        raise InstacliError(f"{folder}: none of the {len(files)} files could be read as an image (e.g. {names[0]}: {decoded[0][2]})")
    table = _read_metadata(metadata, run.scaler.features, names) if metadata else None
    rows = _metadata_rows([names[i] for i in ok], table)
    features, _ = _feature_matrix(run, rows)
    text = None
    if run.config.text_encoder:
        from instacli import registry

        encoder = registry.text_encoders.create(run.config.text_encoder, **run.config.text_options)
        text = torch.from_numpy(encoder.encode([row.get("caption") or "" for row in rows]))
    skipped = [{"file": names[i], "reason": error} for i, (_, _, error) in enumerate(decoded) if error]
    skipped += [{"file": s.file, "reason": s.reason} for s in unwalked]
    return Photos([names[i] for i in ok], torch.stack([decoded[i][0] for i in ok]), torch.from_numpy(features), text, skipped)


def split_photos(run: LoadedRun, data: Path, split: str) -> Photos:
    """Every photo of ``split`` of the dataset ``data`` with its engagement numbers and caption."""
    from instacli.split_arrays import load_split_arrays

    arrays = load_split_arrays(data, split, settings=None, scaler=run.scaler, task=run.config.task,
                               text=(run.config.text_encoder, run.config.text_options) if run.config.text_encoder else None)
    column = "file_name" if "file_name" in arrays.dataset.column_names else None
    names = [str(n) for n in arrays.dataset[column]] if column else [f"{split}-{i}" for i in range(len(arrays))]
    return Photos(names, arrays.images(run.preprocess.resize_size), arrays.features, arrays.text if arrays.text.shape[1] else None)


def _png_name(name: str, taken: set[str]) -> str:
    """A flat, unique PNG file name for the photo ``name`` (a relative path), without control characters
    or a leading dash (a photo named ``-rf\n.jpg`` gave an output file a shell reads as an option)."""
    stem = re.sub(r"[\x00-\x1f\x7f]", "_", "__".join(Path(name).with_suffix("").parts)) or "photo"
    stem = "_" + stem[1:] if stem.startswith("-") else stem
    candidate, k = f"{stem}.png", 1
    while candidate in taken:
        k += 1
        candidate = f"{stem}-{k}.png"
    taken.add(candidate)
    return candidate


def _heatmap_png(view: np.ndarray, heatmap: np.ndarray, path: Path) -> None:
    """The photo (``(3, S, S)`` uint8, as the model saw it) beside it with its heatmap laid over."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = view.transpose(1, 2, 0).astype(np.float32) / 255.0
    overlay = show_cam_on_image(rgb, heatmap, use_rgb=True)
    panels = [Image.fromarray(a).resize((PANEL_SIZE, PANEL_SIZE), Image.NEAREST) for a in (view.transpose(1, 2, 0), overlay)]
    canvas = Image.new("RGB", (2 * PANEL_SIZE + 8, PANEL_SIZE), "white")
    canvas.paste(panels[0], (0, 0))
    canvas.paste(panels[1], (PANEL_SIZE + 8, 0))
    canvas.save(path)


def _bar_chart(mean_abs: dict[str, float], path: Path, title: str) -> None:
    from instacli.plots import plt, save_figure

    groups = sorted(mean_abs, key=mean_abs.get)
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(groups) + 1.5))
    ax.barh(groups, [mean_abs[g] for g in groups], color="tab:blue")
    ax.set(xlabel="mean |attribution| (log1p likes)", title=title)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)


def _index_html(run: LoadedRun, rows: list[dict[str, Any]], summary: dict[str, Any] | None, skipped: Sequence[dict[str, str]], title: str) -> str:
    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:6px}img{max-width:460px}</style>",
             f"<h1>{esc(title)}</h1><p>Run <code>{esc(str(run.path))}</code>, encoder {esc(run.config.encoder)}.</p>"]
    if summary is not None:
        parts.append(f"<h2>What drives the predicted likes</h2><p>Mean absolute integrated-gradients attribution per input over "
                     f"{len(rows)} photos, in log1p likes (baseline: {esc(summary['baseline'])}).</p><img src='{ATTRIBUTIONS_PNG}'>")
    parts.append("<h2>Photos</h2><table><tr><th>photo | where the category came from</th><th>prediction</th></tr>")
    for row in rows:
        cells = [f"<b>{esc(row['file'])}</b>"]
        if row.get("label") is not None:
            cells.append(f"category <b>{esc(row['label'])}</b> ({row['confidence']:.2f})")
        if row.get("likes") is not None:
            cells.append(f"likes {row['likes']:,}")
            ranked = sorted(row["attributions"].items(), key=lambda kv: -abs(kv[1]))
            cells.append("<br>".join(f"{esc(g)}: {v:+.3f}" for g, v in ranked))
        # quoted: a photo named "50% off #1?.jpg" is no URL as it stands ('#' starts a fragment, '?' a query)
        image = f"<img src='{CATEGORY_DIR}/{esc(quote(row['heatmap']))}'>" if row.get("heatmap") else ""
        parts.append(f"<tr><td>{image}</td><td>{'<br>'.join(cells)}</td></tr>")
    parts.append("</table>")
    if skipped:
        parts.append("<h2>Not read</h2><ul>" + "".join(f"<li>{esc(s['file'])}: {esc(s['reason'])}</li>" for s in skipped) + "</ul>")
    return "\n".join(parts) + "\n"


@dataclass
class ExplainSummary:
    out: Path
    photos: int
    skipped: int
    #: Mean absolute attribution per input group (None for a category-only run).
    mean_abs: dict[str, float] | None


def explain(run: LoadedRun, photos: Photos, out: Path, title: str, overwrite: bool = False, batch_size: int = 32) -> ExplainSummary:
    """Write the explanation of ``photos`` by ``run`` into the folder ``out`` (all of it at once)."""
    from instacli.calibration import probabilities
    from instacli.features import likes_from_log

    model = run.model.eval()
    has_category, has_likes = model.classifier is not None, model.regressor is not None
    rows: list[dict[str, Any]] = [{"file": name} for name in photos.names]
    likes_parts: list[dict[str, Any]] = []
    taken: set[str] = set()
    with atomic_dir(out, overwrite, "explanation folder", INDEX) as tmp:
        (tmp / CATEGORY_DIR).mkdir()
        for start in range(0, len(rows), batch_size):
            batch = slice(start, start + batch_size)
            images, text = photos.images[batch], photos.text[batch] if photos.text is not None else None
            if has_category:
                maps, _ = category_heatmaps(run, images, text if model.text_to_classifier else None)
                with torch.no_grad():
                    logits, _ = model(eval_view(images, run.preprocess), photos.features[batch], text)
                probs = probabilities(logits, run.config.temperature)
                views = center_crop(images, run.preprocess.image_size).numpy()
                for k, row in enumerate(rows[batch]):
                    row.update(label=run.config.class_names[int(probs[k].argmax())], confidence=round(float(probs[k].max()), 6),
                               heatmap=_png_name(row["file"], taken))
                    _heatmap_png(views[k], maps[k], tmp / CATEGORY_DIR / row["heatmap"])
            if has_likes:
                likes_parts.append(likes_attributions(run, images, photos.features[batch], text))
        summary = None
        if has_likes:
            groups = likes_parts[0]["groups"]
            merged = {key: np.concatenate([p[key] for p in likes_parts]) for key in ("attributions", "log_likes", "baseline_log_likes", "delta")}
            attributions, likes = merged["attributions"], likes_from_log(merged["log_likes"])
            for k, row in enumerate(rows):
                row["likes"] = round(float(likes[k]))  # a count, as predict writes it
                row.update({key: round(float(merged[key][k]), 6) for key in ("log_likes", "baseline_log_likes", "delta")})
                row["attributions"] = {g: round(float(v), 6) for g, v in zip(groups, attributions[k])}
            summary = {
                "baseline": "a zero photo embedding, the training mean of every number" + (", a zero caption embedding" if CAPTION in groups else ""),
                "unit": "log1p likes", "photos": len(rows),
                "mean_abs": {g: float(v) for g, v in zip(groups, np.abs(attributions).mean(0))},
                "mean": {g: float(v) for g, v in zip(groups, attributions.mean(0))},
            }
            _bar_chart(summary["mean_abs"], tmp / ATTRIBUTIONS_PNG, f"What drives the predicted likes\n{title}")
            (tmp / ATTRIBUTIONS_JSON).write_text(json.dumps({**summary, "per_photo": rows}, indent=2) + "\n")
        (tmp / INDEX).write_text(_index_html(run, rows, summary, photos.skipped, title))
    return ExplainSummary(out, len(rows), len(photos.skipped), summary["mean_abs"] if summary else None)
