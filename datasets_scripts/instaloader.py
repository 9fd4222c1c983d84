"""Instaloader downloads as a source of ``data build``: real photos with their real engagement.

Instaloader (4.x) writes, per account folder, ``<date>_UTC.jpg`` (carousels ``<date>_UTC_1.jpg``,
``_2``…; the extension follows the server's content type), the post's metadata
``<date>_UTC.json.xz`` (LZMA; ``.json`` with ``--no-compress-json``) as
``{"node": {...}, "instaloader": {"version": ..., "node_type": "Post"}}``, an optional
``<date>_UTC.txt`` caption, videos as ``.mp4`` (with a ``.jpg`` thumbnail), and the profile as
``<username>_<id>.json.xz`` (node_type ``Profile``). From a post's ``node`` we read:

* likes ``edge_media_preview_like.count`` (else ``edge_liked_by.count``); a negative count means
  the owner hid it, so it becomes missing (None), never zero;
* comments ``edge_media_to_comment.count`` (else ``edge_media_to_parent_comment.count``, else
  ``comments``), negative likewise missing;
* caption ``edge_media_to_caption.edges[0].node.text`` (else ``caption``, else the ``.txt`` file);
* timestamp ``taken_at_timestamp``; owner ``owner.username`` (else the folder name; a column to
  split by, not stored unless split by); followers
  ``owner.edge_followed_by.count``, else the owner's profile file in the download.

Video posts are skipped (and listed); a carousel contributes its first photo, or all of them with
``carousel="all"`` (its photos then share a split, so one post never leaks across splits). Labels
come from a table (``file_name`` → ``label``), from the owner's username, or nowhere: then the
data is likes-only (every ``label`` is -1 and ``class_names`` is empty). Unreadable metadata and
photos without metadata are listed as skipped, never fatal.
"""

from __future__ import annotations

import json
import lzma
from collections import defaultdict
from pathlib import Path
from typing import Any

from instacli.errors import InstacliError
from instacli.photo_files import read_text_limited, reason, relative_name
from instacli_datasets.engagement import Table, parse_count, parse_timestamp, read_table
from instacli_datasets.folder import Photo, Skipped, Source, is_image_file, scan

VIDEO_REASON = "video post (videos are not used)"
CAROUSEL_MODES = ("first", "all")
COLUMNS = ("likes", "comments", "followers", "caption", "timestamp")


def is_instaloader_folder(src: Path) -> bool:
    """True when ``src`` holds instaloader post metadata (``*_UTC.json.xz`` / ``*_UTC.json``)."""
    return any(p.name.endswith(("_UTC.json.xz", "_UTC.json")) for p in Path(src).rglob("*_UTC.json*"))


def _metadata_stem(name: str) -> str | None:
    for suffix in (".json.xz", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(read_text_limited(path))
    if not isinstance(data, dict) or not isinstance(data.get("node"), dict):
        raise ValueError("no 'node' object")
    return data


def _get(node: dict[str, Any], *keys: str) -> Any:
    """``node[k1][k2]...`` or None when any level is missing."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _count(value: Any) -> int | None:
    """An instaloader count: negative means hidden → None; garbage raises ValueError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return None
    return parse_count(value)


def _count_or_none(value: Any) -> int | None:
    """Like :func:`_count` for followers, where a bad value is just unknown."""
    try:
        return _count(value)
    except ValueError:
        return None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _node_type(data: dict[str, Any]) -> str | None:
    node = data["node"]
    declared = _get(data, "instaloader", "node_type")
    if declared:
        return declared
    if "shortcode" in node or "__typename" in node:
        return "Post"
    return "Profile" if "username" in node else None


class _Download:
    """Every file of an instaloader download, indexed once."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self.posts: list[tuple[Path, str, dict[str, Any]]] = []
        self.followers_by_user: dict[str, int | None] = {}
        self.followers_by_id: dict[str, int | None] = {}
        self.images: dict[Path, list[Path]] = defaultdict(list)
        #: (folder, post stem) → (carousel index, path): a file ``S.jpg`` is image 0 of post S, ``S_2.jpg`` image 2
        self.post_images: dict[tuple[Path, str], list[tuple[int, Path]]] = defaultdict(list)
        self.names: dict[Path, set[str]] = defaultdict(set)
        files, self.skipped = scan(src)
        for path in files:
            self.names[path.parent].add(path.name)
            stem = _metadata_stem(path.name)
            if is_image_file(path):
                self.images[path.parent].append(path)
                base = path.name[: -len(path.suffix)]
                self.post_images[path.parent, base].append((0, path))
                prefix, _, index = base.rpartition("_")
                if prefix and index.isdigit():
                    self.post_images[path.parent, prefix].append((int(index), path))
            elif stem is not None:
                self._add_metadata(path, stem)

    def key(self, path: Path) -> str:
        return relative_name(self.src, path)

    def _add_metadata(self, path: Path, stem: str) -> None:
        try:
            data = _read_json(path)
        except (OSError, EOFError, lzma.LZMAError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            self.skipped.append(Skipped(self.key(path), f"unreadable instaloader metadata ({reason(exc)})"))
            return
        kind, node = _node_type(data), data["node"]
        if kind == "Post":
            self.posts.append((path, stem, node))
        elif kind == "Profile":
            followers = _count_or_none(_get(node, "edge_followed_by", "count"))
            self.followers_by_user[str(node.get("username", "")).lower()] = followers
            self.followers_by_id[str(node.get("id"))] = followers

    def followers(self, node: dict[str, Any]) -> int | None:
        own = _count_or_none(_get(node, "owner", "edge_followed_by", "count"))
        if own is not None:
            return own
        username = str(_get(node, "owner", "username") or "").lower()
        return _first(self.followers_by_user.get(username), self.followers_by_id.get(str(_get(node, "owner", "id"))))

    def photos_of(self, folder: Path, stem: str) -> list[tuple[int, Path]]:
        """(carousel index, path) of the images saved for post ``stem``; index 0 for a single image."""
        return sorted(self.post_images.get((folder, stem), []))


def _caption(node: dict[str, Any], txt: Path) -> str | None:
    edges = _get(node, "edge_media_to_caption", "edges") or []
    text = _get(edges[0], "node", "text") if edges else None
    if text is None and isinstance(node.get("caption"), str):
        text = node["caption"]
    if text is None and txt.is_file():
        text = read_text_limited(txt).rstrip("\n")
    return text


def _is_video_item(node: dict[str, Any], index: int, folder_names: set[str], stem: str) -> bool:
    edges = _get(node, "edge_sidecar_to_children", "edges") or []
    if 0 < index <= len(edges) and _get(edges[index - 1], "node", "is_video") is not None:
        return bool(_get(edges[index - 1], "node", "is_video"))
    return f"{stem}_{index}.mp4" in folder_names


def discover_instaloader(
    src: Path, *, labels: Path | None = None, label_from: str | None = None, carousel: str = "first", min_classes: int = 2
) -> Source:
    """The posts of an instaloader download as a :class:`Source` whose table carries their engagement."""
    if carousel not in CAROUSEL_MODES:
        raise InstacliError(f"--carousel: unknown mode '{carousel}'; choose first or all")
    if label_from not in (None, "owner"):
        raise InstacliError(f"--label-from: unknown source '{label_from}'; the only one is owner")
    if labels is not None and label_from is not None:
        raise InstacliError("--labels and --label-from: both given; choose one way to label the photos")
    download = _Download(Path(src))
    label_table = read_table(Path(labels)) if labels is not None else None
    if label_table is not None and "label" not in label_table.columns:
        raise InstacliError(f"{labels}: no 'label' column; add one (file_name,label) or pick it with --map label=<column>")
    photos: list[Photo] = []
    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    claimed: set[Path] = set()
    for meta, stem, node in download.posts:
        post_key = download.key(meta)
        items = download.photos_of(meta.parent, stem)
        claimed.update(path for _, path in items)
        if node.get("is_video") or node.get("__typename") == "GraphVideo":
            download.skipped.append(Skipped(post_key, VIDEO_REASON))
            continue
        pictures = [path for index, path in items if not (index and _is_video_item(node, index, download.names[meta.parent], stem))]
        if not pictures:
            download.skipped.append(Skipped(post_key, "no downloaded photo for this post"))
            continue
        try:
            values = {
                "likes": _count(_first(_get(node, "edge_media_preview_like", "count"), _get(node, "edge_liked_by", "count"))),
                "comments": _count(_first(_get(node, "edge_media_to_comment", "count"),
                                          _get(node, "edge_media_to_parent_comment", "count"), node.get("comments"))),
                "followers": download.followers(node),
                "caption": _caption(node, meta.parent / f"{stem}.txt"),
                "timestamp": parse_timestamp(node.get("taken_at_timestamp")),
            }
        except ValueError as exc:
            download.skipped.append(Skipped(post_key, f"unusable engagement value ({exc})"))
            continue
        owner = str(_get(node, "owner", "username") or meta.parent.name)
        values["owner"] = owner  # not a dataset column; there to split by (--split-by owner)
        values["shortcode"] = node.get("shortcode")  # nor this: `predict` writes it beside the post's photos
        for path in pictures[: None if carousel == "all" else 1]:
            file_name = download.key(path)
            photos.append(Photo(str(path), file_name, _label(file_name, owner, label_table, label_from), group=post_key))
            rows[file_name], where[file_name] = values, post_key
    for images in download.images.values():
        download.skipped.extend(Skipped(download.key(p), "no instaloader post metadata for it") for p in images if p not in claimed)
    photos.sort(key=lambda p: p.file_name)
    class_names = sorted({p.label for p in photos if p.label is not None})
    if (labels or label_from) and len(class_names) < min_classes:
        raise InstacliError(f"{src}: the labels give {len(class_names)} categor{'y' if len(class_names) == 1 else 'ies'} ({', '.join(class_names) or 'none'}); need at least {min_classes}, or drop the labels for likes-only data")
    if not photos:
        raise InstacliError(f"{src}: no usable instaloader post photos (see the skipped list: {len(download.skipped)} files); check the folder")
    table = Table(path=Path(src), columns=COLUMNS, rows=rows, where=where, extra_columns=("owner",))
    return Source(root=Path(src), kind="instaloader", photos=photos, class_names=class_names,
                  skipped=sorted(download.skipped, key=lambda s: s.file), table=table, engagement="instaloader")


def _label(file_name: str, owner: str, table: Table | None, label_from: str | None) -> str | None:
    if label_from == "owner":
        return owner
    if table is None:
        return None
    if file_name not in table.rows or not table.rows[file_name].get("label"):
        raise InstacliError(f"{table.path}: no label for photo '{file_name}'; add a row file_name,label for it")
    return table.rows[file_name]["label"]
