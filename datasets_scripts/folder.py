"""Finding the photos of a source folder and the category of each.

Two layouts are understood: one sub-folder per category (any names; photos may sit deeper inside),
or the ``datasets`` imagefolder convention, a ``metadata.csv``/``.jsonl``/``.parquet`` with
``file_name`` and ``label`` columns. Photos are keyed by their path relative to the source in posix
form, so tables, splits and fingerprints do not depend on where the folder lives. Hidden files and
folders (``.DS_Store``, ``.git``) are ignored; anything else that cannot be used is *listed* as
skipped, never dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from instacli.errors import InstacliError
from instacli.photo_files import NOT_UTF8, printable_name, relative_name
from instacli_datasets.engagement import Table, read_table

#: Suffixes listed as photos. HEIC/HEIF/AVIF are listed even where no plugin decodes them, so that
#: they are reported as unreadable (with the plugin to install) rather than silently left out.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif"})
METADATA_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


@dataclass(frozen=True, slots=True)
class Photo:
    """One photo to decode: where it is, its key, its category (None for unlabeled data) and the
    group it must share a split with (the photos of one post; None: a group of its own).

    A build holds one per photo, so it is small: slots, and the file as a ``str`` (a ``Path`` also
    keeps each of its parts: 350 bytes a photo, 35 MB for 100,000 photos)."""

    file_path: str
    file_name: str
    label: str | None
    group: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.file_path)


@dataclass(frozen=True)
class Skipped:
    """A file left out of the dataset and why; listed in build_report.json."""

    file: str
    reason: str


@dataclass
class Source:
    """What a source folder holds, before any photo is decoded; ``table`` is its own per-photo table
    (metadata file, instaloader JSON) and ``engagement`` names it when it carries engagement."""

    root: Path
    kind: str
    photos: list[Photo]
    class_names: list[str]
    skipped: list[Skipped]
    table: Table | None = None
    engagement: str | None = None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _not_entered(folder: str, chain: frozenset[str], real_root: str) -> str | None:
    """Why the sub-folder ``folder`` is not walked, or None. ``chain`` holds the real paths of the
    folders above it: reaching one of them again is a symlink loop (``ln -s . self`` would list every
    photo again as a fake category, forever); a symlink may not lead out of the source either."""
    real = os.path.realpath(folder)
    if real in chain:
        return "folder reached again through a symlink (a loop); not followed"
    if os.path.islink(folder) and os.path.commonpath([real, real_root]) != real_root:
        return "symlink to a folder outside the source folder; not followed"
    return None


def scan(folder: Path, root: Path | None = None) -> tuple[list[Path], list[Skipped]]:
    """Every non-hidden file below ``folder`` (sorted by relative path: stable across machines), and
    the sub-folders not walked with why (unreadable, symlink loop, symlink out of ``root``)."""
    folder = Path(folder)
    root = Path(root or folder)
    real_root = os.path.realpath(root)
    chains = {str(folder): frozenset({real_root, os.path.realpath(folder)})}
    found: list[Path] = []
    skipped: list[Skipped] = []

    def unreadable(error: OSError) -> None:
        skipped.append(Skipped(relative_name(root, Path(error.filename)), f"unreadable folder ({error.strerror}); its files were not read"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        entered = []
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                continue
            why = _not_entered(path, chains[dirpath], real_root)
            if why is not None:
                skipped.append(Skipped(relative_name(root, Path(path)), why))
                continue
            entered.append(name)
            chains[path] = chains[dirpath] | {os.path.realpath(path)}
        dirnames[:] = entered
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix()), skipped


def iter_image_files(folder: Path) -> Iterator[Path]:
    """Image files below ``folder`` (recursive, sorted, suffix match case-insensitive)."""
    return (p for p in scan(Path(folder))[0] if is_image_file(p))


def discover(src: Path, min_classes: int = 2, column_map: dict[str, str] | None = None) -> Source:
    """Read the layout of ``src``: a metadata table if there is one (read with ``column_map``), else
    one folder per category."""
    src = Path(src)
    if not src.is_dir():
        raise InstacliError(f"{src}: not a folder; SRC must be a folder of category sub-folders or of photos with a metadata.csv")
    metadata = [src / name for name in METADATA_NAMES if (src / name).is_file()]
    if len(metadata) > 1:
        raise InstacliError(f"{src}: has {' and '.join(p.name for p in metadata)}; keep one metadata file")
    source = _from_metadata(src, metadata[0], column_map) if metadata else _from_category_folders(src)
    if len(source.class_names) < min_classes:
        found = ", ".join(source.class_names) or "none"
        raise InstacliError(
            f"{src}: found {len(source.class_names)} categor{'y' if len(source.class_names) == 1 else 'ies'} ({found}); "
            f"need at least {min_classes}: one sub-folder per category, or a metadata.csv with file_name,label"
        )
    return source


def _from_category_folders(src: Path) -> Source:
    photos: list[Photo] = []
    skipped: list[Skipped] = []
    chain = frozenset({os.path.realpath(src)})
    categories = []
    for folder in sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")):
        why = _not_entered(str(folder), chain, os.path.realpath(src))
        if why is not None:
            skipped.append(Skipped(relative_name(src, folder), why))
        elif printable_name(folder.name) != folder.name:
            raise InstacliError(f"{printable_name(str(folder))}: category folder name is not valid UTF-8; rename the folder")
        else:
            categories.append(folder.name)
    for category in categories:
        files, unwalked = scan(src / category, src)
        images = [f for f in files if is_image_file(f)]
        if not images:
            raise InstacliError(f"{src / category}: category folder has no photos ({', '.join(sorted(IMAGE_SUFFIXES))}); add photos or remove the folder")
        photos.extend(Photo(str(f), relative_name(src, f), category) for f in images)
        skipped.extend(unwalked)
        skipped.extend(Skipped(relative_name(src, f), "not an image file (by its suffix)") for f in files if not is_image_file(f))
    skipped.extend(Skipped(relative_name(src, f), "not inside a category folder") for f in src.iterdir() if f.is_file() and is_image_file(f))
    photos.sort(key=lambda p: p.file_name)
    return Source(root=src, kind="folders", photos=photos, class_names=categories, skipped=skipped)


def _from_metadata(src: Path, metadata: Path, column_map: dict[str, str] | None) -> Source:
    table = read_table(metadata, column_map)
    if "label" not in table.columns:
        raise InstacliError(f"{metadata}: no 'label' column; add one, or arrange the photos in one sub-folder per category")
    photos: list[Photo] = []
    skipped: list[Skipped] = []
    for file_name, values in sorted(table.rows.items()):
        path = src / file_name
        if not path.is_file():
            raise InstacliError(f"{table.locate(file_name)}: photo '{file_name}' not found under {src}; fix file_name or remove the row")
        if not values.get("label"):
            raise InstacliError(f"{table.locate(file_name)}: photo '{file_name}' has no label; fill it in or remove the row")
        real_src = os.path.realpath(src)
        if os.path.commonpath([os.path.realpath(path.parent), real_src]) != real_src:
            skipped.append(Skipped(file_name, "in a symlinked folder outside the source folder; not read"))
        elif is_image_file(path):
            photos.append(Photo(str(path), file_name, values["label"]))
        else:
            skipped.append(Skipped(file_name, "not an image file (by its suffix)"))
    listed = set(table.rows)
    files, unwalked = scan(src)
    skipped.extend(unwalked)
    unlisted = []
    for path in filter(is_image_file, files):
        name = relative_name(src, path)
        if name in listed:
            continue
        if name != path.relative_to(src).as_posix():  # escaped: not UTF-8, so no table row can name it
            skipped.append(Skipped(name, NOT_UTF8))
        else:
            unlisted.append(name)
    if unlisted:
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        raise InstacliError(f"{metadata}: no row for photo '{unlisted[0]}'{more}; add rows for them or move them out of SRC")
    class_names = sorted({p.label for p in photos if p.label})
    has_engagement = bool(set(table.columns) - {"label"})
    return Source(root=src, kind="metadata", photos=photos, class_names=class_names, skipped=skipped, table=table,
                  engagement=f"table:{table.name}" if has_engagement else None)
