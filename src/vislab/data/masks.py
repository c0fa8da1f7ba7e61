"""Segmentation data: ``images/`` and ``masks/`` folders matched by file stem -> an in-memory :class:`Dataset`.

Layouts (``--data DIR``):
    DIR/images/*.jpg + DIR/masks/*.png                     one pool, split by --val-split/--test-split
    DIR/{train,val,test}/images + DIR/{train,val,test}/masks   the splits as given (val carved from
                                                            train when absent)

Masks are indexed (palette) or grey PNGs whose values are class IDs, or RGB masks whose
colours are mapped to IDs through a palette (``--palette camvid``). Class names come from
``DIR/classes.txt`` (line i names ID i), ``--classes FILE``, or the palette; without any of
them the IDs found in the masks are the classes (``0`` .. the largest ID; when some IDs below the largest
never occur, the audit warns, naming the masks that hold the values above the gap). ``ignore_index``
(default 255) marks void pixels. Of two masks with one stem a lossless one (PNG first) is read, not a JPEG.

Bad pairs never stop a run: each is listed in bad_files.csv with its path and reason
(a mask whose size differs from its image; a mask value that is neither a class nor the
ignore index; an image without a mask or a mask without an image; an unreadable file), and
the rest trains. Every split's images share one size: the most common one; other pairs are
resized to it, the image bilinearly and the mask with nearest only, so no label is made up.

A split holds uint8 images (N, C, H, W) and masks (N, H, W) as its ``labels``.

Example:
    >>> from vislab.core.config import DataConfig, SegmentationConfig
    >>> ds = load_segmentation_dataset(DataConfig(source="seg_data"), SegmentationConfig())  # doctest: +SKIP
    >>> ds.splits["train"].labels.shape   # doctest: +SKIP
    torch.Size([800, 64, 64])
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from warnings import warn

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vislab.core.errors import DataError
from vislab.core.files import BadFileError, read_text, reading
from vislab.data.images import BadImageError, is_image_file, read_image, upright
from vislab.data.palettes import Palette, get_palette
from vislab.data.sources import Dataset, Split

SPLIT_FOLDERS = ("train", "val", "test")


class SegmentationDataset(Dataset):
    """A :class:`Dataset` whose labels are masks: counts are pixels per class, not images."""

    counted = "pixels"

    def counts(self) -> dict[str, list[int]]:
        return {name: pixel_counts(split.labels, self.num_classes).tolist() for name, split in self.splits.items()}


def _class_folders(root: Path) -> bool:
    """Whether ``root`` looks like a classification set: sub-folders holding images, or split folders of
    such sub-folders (at most 20 folders a level looked at)."""
    def holds_images(folder: Path, depth: int) -> bool:
        entries = sorted(folder.iterdir())[:200]
        if any(is_image_file(f) for f in entries if f.is_file()):
            return depth >= 1
        folders = [d for d in entries if d.is_dir() and not d.name.startswith(".")][:20]
        return depth < 2 and any(holds_images(d, depth + 1) for d in folders)

    return holds_images(root, 0)


def is_segmentation_folder(path) -> bool:
    """True for a folder in one of the two layouts above."""
    path = Path(path)
    return (path / "images").is_dir() and (path / "masks").is_dir() or \
        ((path / "train" / "images").is_dir() and (path / "train" / "masks").is_dir())


# a mask's format, best first: a lossless file keeps every class ID; JPEG's compression blurs the IDs at edges
# (a class 1 next to class 3 becomes 2 there), and WebP may be either
MASK_FORMAT_RANK = {".png": 0, ".bmp": 1, ".tif": 1, ".tiff": 1, ".gif": 1, ".webp": 2, ".jpg": 3, ".jpeg": 3}


def _by_stem(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """{stem: file} for the image files in ``folder`` and the files left out: of two files with one stem the
    first by name is kept, except in a masks/ folder, where a lossless mask (PNG first) wins over a JPEG."""
    found, bad = {}, []
    masks = folder.name == "masks"
    rank = (lambda path: MASK_FORMAT_RANK.get(path.suffix.lower(), 2)) if masks else (lambda path: 0)
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not path.is_file() or not is_image_file(path):
            continue
        stem = path.stem
        if stem.endswith("_mask") and masks:
            stem = stem[: -len("_mask")]
        if stem in found:
            kept, other = found[stem], path
            if rank(path) < rank(kept):
                kept, other = path, kept
                found[stem] = path
            why = f"kept: {kept.name}, lossless" if rank(kept) < rank(other) else f"first: {kept.name}"
            bad.append((str(other), f"a second file with the stem {stem!r} ({why}); give each image one file"))
            continue
        found[stem] = path
    return found, bad


def pair_files(images_dir: Path, masks_dir: Path) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(image, mask) pairs matched by stem (``x.jpg`` + ``x.png`` or ``x_mask.png``) and the unmatched files."""
    images, bad = _by_stem(images_dir)
    masks, bad_masks = _by_stem(masks_dir)
    bad += bad_masks
    pairs = [(images[s], masks[s]) for s in sorted(images) if s in masks]
    bad += [(str(images[s]), f"image without a mask: no {masks_dir}/{s}.png") for s in sorted(set(images) - set(masks))]
    bad += [(str(masks[s]), f"mask without an image: no {images_dir}/{s}.* ") for s in sorted(set(masks) - set(images))]
    return pairs, bad


def read_mask(path, palette: Palette | None = None) -> np.ndarray:
    """A mask file as an (H, W) int64 array of class IDs.

    Indexed (P) and grey (L, I;16, I) PNGs give their values; RGB masks are mapped
    through ``palette`` (a colour not in it is an error naming the colour and a pixel).

    Raises:
        BadImageError: unreadable, or an RGB mask without a palette / with an unknown colour.
    """
    try:
        with reading(path, "a mask image", "give an indexed, grey or RGB PNG of class IDs per pixel"):
            with Image.open(path) as image:
                image.load()
                image = upright(image)  # a mask tagged with an EXIF orientation is turned as its image is
                mode = image.mode
                if mode in ("P", "L", "I", "I;16", "1"):
                    return np.asarray(image).astype(np.int64)
                rgb = np.asarray(image.convert("RGB"))
    except BadFileError as exc:
        raise BadImageError(path, f"unreadable mask ({exc.reason})") from None
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all() and palette is None:
        return rgb[..., 0].astype(np.int64)  # a grey mask saved as RGB
    if palette is None:
        raise BadImageError(path, "an RGB colour mask needs --palette (camvid, cityscapes, voc, ade20k or a "
                                  "JSON/CSV of name, r, g, b) to map its colours to class IDs")
    return colors_to_ids(rgb, palette, path)


def colors_to_ids(rgb: np.ndarray, palette: Palette, path="mask") -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) class IDs through ``palette``; an unknown colour is an error."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(palette.colors)}
    keys = np.array(sorted(table), dtype=np.int64)
    values = np.array([table[k] for k in keys], dtype=np.int64)
    position = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    known = keys[position] == codes
    if not known.all():
        y, x = map(int, np.argwhere(~known)[0])
        raise BadImageError(path, f"mask colour {tuple(int(v) for v in rgb[y, x])} at (row {y}, col {x}) is not in "
                                  f"the {palette.name} palette; give the palette the mask was drawn with")
    return values[position]


def read_class_names(path) -> list[str]:
    text = read_text(path, "a class-names file (--classes)", "give a text file with one class name per line "
                     "(line i names class ID i)")
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"{path}: holds no class names; write one name per line (line i names class ID i)")
    if "" in names:
        raise DataError(f"{path}: line {names.index('') + 1} is empty, so class ID {names.index('')} has no name; "
                        "write one name per line (line i names class ID i)")
    return names


def resolve_classes(root: Path, seg_cfg) -> tuple[list[str] | None, Palette | None]:
    """Class names and palette from --classes / DIR/classes.txt / --palette (None: from the masks)."""
    palette = get_palette(seg_cfg.palette) if seg_cfg.palette else None
    names = None
    if seg_cfg.classes:
        names = read_class_names(seg_cfg.classes)
    elif (root / "classes.txt").exists():
        names = read_class_names(root / "classes.txt")
    elif palette is not None:
        names = list(palette.names)
    return names, palette


def _load_pairs(pairs, palette, bad):
    """Decode every pair; a failing pair goes to ``bad``."""
    loaded = []
    for image_path, mask_path in pairs:
        try:
            image = read_image(image_path)
        except BadImageError as exc:
            bad.append((str(image_path), exc.reason if hasattr(exc, "reason") else str(exc)))
            continue
        try:
            mask = read_mask(mask_path, palette)
        except BadImageError as exc:
            bad.append((str(mask_path), exc.reason if hasattr(exc, "reason") else str(exc)))
            continue
        if mask.shape != tuple(image.shape[-2:]) and mask.shape == tuple(image.shape[-2:])[::-1]:
            try:  # a photo turned by its EXIF tag, whose mask was drawn on its pixels as stored: pair those
                stored = read_image(image_path, turn=False)
            except BadImageError:
                stored = image
            image = stored if mask.shape == tuple(stored.shape[-2:]) else image
        if mask.shape != tuple(image.shape[-2:]):
            bad.append((str(mask_path), f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                                        f"{image.shape[-1]}x{image.shape[-2]} (width x height); masks must match "
                                        "their image pixel for pixel"))
            continue
        loaded.append((str(image_path), str(mask_path), image, mask))
    return loaded


def _check_values(loaded, num_classes: int, ignore_index: int, bad):
    kept = []
    for image_path, mask_path, image, mask in loaded:
        wrong = (mask < 0) | (mask >= num_classes)
        wrong &= mask != ignore_index
        if wrong.any():
            values = sorted(set(np.unique(mask[wrong]).tolist()))[:5]
            bad.append((mask_path, f"mask values {values} are neither a class ID (0..{num_classes - 1}) nor the "
                                   f"ignore index {ignore_index}; fix the mask, add the classes, or set --ignore-index"))
            continue
        kept.append((image_path, mask_path, image, mask))
    return kept


def _stack(loaded, size, channels, label_dtype, name) -> Split:
    images, masks, paths = [], [], []
    for image_path, _, image, mask in loaded:
        if image.shape[0] != channels:
            image = image.expand(channels, -1, -1) if image.shape[0] == 1 else image[:channels]
        mask_t = torch.from_numpy(mask)
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True,
                                  align_corners=False)[0].round().clamp(0, 255).byte()
            # labels are never interpolated: nearest keeps every pixel one of the mask's own IDs
            mask_t = F.interpolate(mask_t[None, None].float(), size=size, mode="nearest")[0, 0].long()
        images.append(image)
        masks.append(mask_t.to(label_dtype))
        paths.append(image_path)
    split = Split(labels=torch.stack(masks), images=torch.stack(images), name=name)
    split.sources = paths  # file names for figures and per-image tables
    return split


def load_segmentation_dataset(data_cfg, seg_cfg, seed: int = 0) -> Dataset:
    """Image/mask pairs under ``data_cfg.source`` as a :class:`Dataset` of in-memory splits.

    Raises:
        DataError: not a segmentation folder, or no usable pair.
    """
    root = Path(str(data_cfg.source)).expanduser()
    layout = ("a segmentation set is a folder with images/ and masks/ (matched by file stem), at the top or "
              "under train/, val/ and test/; e.g. DIR/images/0001.jpg + DIR/masks/0001.png")
    if not root.exists():
        from vislab.data.sources import BUILTIN

        if str(data_cfg.source) in BUILTIN:
            raise DataError(f"--data {data_cfg.source}: a built-in classification set, with no masks; drop "
                            f"--task segmentation to classify it, or give a segmentation set: {layout}")
        raise DataError(f"--data {data_cfg.source!r}: no such folder; {layout}")
    if not root.is_dir() or not is_segmentation_folder(root):
        what = "a file" if not root.is_dir() else "a folder without images/ and masks/"
        classes = " (its sub-folders look like class folders: drop --task segmentation to classify them)" \
            if root.is_dir() and _class_folders(root) else ""
        raise DataError(f"--data {data_cfg.source!r}: {what}{classes}; {layout}")
    names, palette = resolve_classes(root, seg_cfg)
    ignore = int(seg_cfg.ignore_index)
    class_gaps = None
    bad: list[tuple[str, str]] = []
    groups: dict[str, list] = {}
    folders = [root] if (root / "images").is_dir() else \
        [root / split for split in SPLIT_FOLDERS if (root / split / "images").is_dir()]
    paired, unread = 0, []
    for folder in folders:
        if not (folder / "masks").is_dir():
            raise DataError(f"{folder}: has images/ but no masks/; put its masks in {folder / 'masks'} (paired with "
                            f"the images by file stem), or remove {folder}")
        pairs, unmatched = pair_files(folder / "images", folder / "masks")
        bad += unmatched
        paired += len(pairs)
        start = len(bad)
        groups["all" if folder == root else folder.name] = _load_pairs(pairs, palette, bad)
        unread += bad[start:]
    if not paired:  # before the masks' class IDs: no pair is not "no class ID in the masks"
        raise DataError(_no_pairs(root, folders))
    if not any(groups.values()) and unread:  # every pair failed to read: the first reason says why
        path, reason = unread[0]
        raise DataError(f"{root}: none of the {paired} image/mask pair{'s' if paired > 1 else ''} could be read; "
                        f"e.g. {path}: {reason}")
    if names is None:  # the IDs found in the masks are the classes
        found = set()
        for items in groups.values():
            for *_, mask in items:
                found.update(np.unique(mask).tolist())
        found.discard(ignore)
        found = {v for v in found if v >= 0}
        if not found:
            raise DataError(f"{root}: no class IDs in the masks (every pixel is the ignore index {ignore}); "
                            "masks hold each pixel's class ID (0, 1, ...), or give --ignore-index")
        names = [str(i) for i in range(max(found) + 1)]
        if len(found) < len(names):  # the classes stay 0..max (as before); the audit says where the gap comes from
            class_gaps = _class_gap_message(root, groups, found)
    groups = {k: _check_values(v, len(names), ignore, bad) for k, v in groups.items()}
    folders = [name for name in ("val", "test") if groups.get(name) and "all" not in groups]  # before any hold-out
    everything = [item for items in groups.values() for item in items]
    if not everything:
        raise DataError(f"{root}: no usable image/mask pair ({len(bad)} bad, listed in bad_files.csv). "
                        "Masks must be PNGs of class IDs with the image's size and stem")
    size = Counter(tuple(item[2].shape[-2:]) for item in everything).most_common(1)[0][0]
    channels = max(int(item[2].shape[0]) for item in everything)
    channels = 3 if channels >= 3 else 1
    label_dtype = torch.uint8 if len(names) <= 255 and 0 <= ignore <= 255 else torch.int64
    rng = np.random.default_rng(seed)
    if "all" in groups:
        items = groups["all"]
        order = rng.permutation(len(items))
        n_test = _count(data_cfg.test_split, len(items))
        n_val = _count(data_cfg.val_split, len(items) - n_test)
        parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        groups = {k: [items[i] for i in sorted(v)] for k, v in parts.items()}
    elif "val" not in groups and data_cfg.val_split and len(groups.get("train", [])) > 1:
        items = groups["train"]
        order = rng.permutation(len(items))
        n_val = _count(data_cfg.val_split, len(items))
        groups["val"] = [items[i] for i in sorted(order[:n_val])]
        groups["train"] = [items[i] for i in sorted(order[n_val:])]
    splits = {k: _stack(v, size, channels, label_dtype, k) for k, v in groups.items() if v}
    if "train" not in splits:
        raise DataError(f"{root}: no usable training pair; put pairs in {root}/train/images and {root}/train/masks")
    dataset = SegmentationDataset(root.name, list(names), splits, bad)
    # a val/ or test/ folder of pairs is that split: --val-split / --test-split hold out nothing then
    dataset.own_splits = {name: f"{data_cfg.source} has its own {name}/ folder" for name in folders}
    dataset.palette = palette if palette is not None and len(palette) >= len(names) else Palette.for_classes(
        names, palette.colors if palette is not None else None)
    dataset.ignore_index = ignore
    # classes inferred from mask values with a gap (0..7 without 3-6): a one-line warning, given by the audit
    # (vislab audit and train), not by evaluate, which reads the masks as the run's classes
    dataset.class_gaps = class_gaps
    return dataset


def _no_pairs(root: Path, folders: list[Path]) -> str:
    """The error for a segmentation folder in which no image has a mask of its stem: what each folder holds."""
    def files(folder: Path) -> list[str]:
        return sorted(n for n in os.listdir(folder) if (folder / n).is_file() and is_image_file(n)) \
            if folder.is_dir() else []

    images = {folder: files(folder / "images") for folder in folders}
    folder = next((f for f in folders if images[f]), folders[0] if folders else root)
    names, masks = images.get(folder, []), files(folder / "masks")
    image_dir, mask_dir = folder / "images", folder / "masks"
    if not names:
        where = " or ".join(str(f / "images") for f in folders) or str(image_dir)
        return (f"{root}: no images in {where} (jpg, png, bmp, gif, webp or tif); put the images there, each "
                f"with a mask of the same file stem in {mask_dir}")
    stem = Path(names[0]).stem
    pairing = f"paired by file stem: images/{names[0]} <-> masks/{stem}.png or masks/{stem}_mask.png"
    if not masks:
        held = f"{mask_dir} holds no mask images" if mask_dir.is_dir() else f"there is no {mask_dir} folder"
    else:
        shown = ", ".join(masks[:3]) + (f" and {len(masks) - 3} more" if len(masks) > 3 else "")
        held = f"{mask_dir} holds {len(masks)} mask{'s' if len(masks) > 1 else ''} ({shown}) whose " \
               f"stem{'s match' if len(masks) > 1 else ' matches'} no image"
    count = "the image" if len(names) == 1 else f"none of the {len(names)} images"
    return (f"{root}: {count} in {image_dir} has {'no' if len(names) == 1 else 'a'} mask in {mask_dir} "
            f"({pairing}); "
            f"{held}; name each mask after its image")


def _ranges(values) -> str:
    """``[3, 4, 5, 6, 9]`` -> ``"3-6, 9"``."""
    values, parts = sorted(values), []
    for value in values:
        if parts and parts[-1][1] == value - 1:
            parts[-1][1] = value
        else:
            parts.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def _class_gap_message(root: Path, groups: dict, found: set) -> str:
    """The warning for classes inferred from mask values with gaps: which values never occur, which files hold
    the values above the first gap (the values that made the gap, e.g. a stray 7 among 0..2) and their pixels."""
    top = max(found)
    missing = sorted(set(range(top + 1)) - found)
    high = sorted(v for v in found if v > missing[0])
    pixels: dict[str, int] = {}
    for items in groups.values():
        for _, mask_path, _, mask in items:
            count = int(np.isin(mask, high).sum())
            if count:
                pixels[mask_path] = count
    files = sorted(pixels, key=lambda path: (-pixels[path], path))
    values = f"value{'s' if len(high) > 1 else ''} {_ranges(high)}"
    if len(files) == 1:
        count = pixels[files[0]]
        where = f"{values} {'are' if len(high) > 1 else 'is'} only in {files[0]} ({count:,} pixel{'s' * (count > 1)})"
    else:
        shown = ", ".join(f"{path} ({pixels[path]:,})" for path in files[:3])
        more = f" and {len(files) - 3} more" if len(files) > 3 else ""
        where = f"{values} ({sum(pixels.values()):,} pixels) {'are' if len(high) > 1 else 'is'} in {len(files)} " \
                f"masks: {shown}{more}"
    return (f"{root}: the classes were inferred from the mask values 0..{top} ({top + 1} classes), but "
            f"value{'s' if len(missing) > 1 else ''} {_ranges(missing)} never occur{'s' if len(missing) == 1 else ''};"
            f" {where}. Stray values usually come from anti-aliased, resized or JPEG-saved masks: fix those masks "
            f"(lossless PNG, resized nearest-neighbour), or name the real classes in {root / 'classes.txt'} or "
            f"--classes FILE (line i names class ID i) or by --palette; masks holding other values are then "
            f"skipped and listed in bad_files.csv")


def _count(value: float, total: int) -> int:
    if not value or total < 2:
        return 0
    count = int(round(value * total)) if value < 1 else int(value)
    return max(1, min(count, total - 1))


def pixel_counts(masks: torch.Tensor, num_classes: int) -> np.ndarray:
    """Pixels per class ID over (N, H, W) masks; the ignore index and other values are not counted."""
    flat = masks.reshape(-1).long()
    flat = flat[(flat >= 0) & (flat < num_classes)]
    return torch.bincount(flat, minlength=num_classes).numpy()


BACKGROUND_NAMES = frozenset({"background", "_background_", "void", "unlabelled", "unlabeled", "bg"})


def audit_masks(dataset: Dataset, out_dir, ignore_index: int = 255, figures: bool = True,
                task: str | None = None) -> dict:
    """The mask audit: class pixel frequencies per split, images without foreground, ignored pixels, bad pairs.

    ``task``: the name audit.json records (the task that asked for the audit).

    Written to ``out_dir/audit.json`` with ``plots/audit_class_balance.png`` (pixels per class; not with
    ``figures=False``).
    "Foreground" is any class but class 0 when class 0 is named background/void/unlabelled;
    otherwise an image "without foreground" is one whose labelled pixels are all one class.
    """
    import json

    from vislab.viz.data import plot_class_balance

    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in dataset.class_names]
    k = len(names)
    background = 0 if names and names[0].lower() in BACKGROUND_NAMES else None
    counts, splits, warnings = {}, {}, []
    for name, split in dataset.splits.items():
        masks = split.labels.long()
        pixel = pixel_counts(masks, k)
        counts[name] = pixel.tolist()
        flat = masks.flatten(1)
        valid = (flat >= 0) & (flat < k)
        if background is not None:
            no_foreground = ~((flat != background) & valid).any(1)
        else:
            low = torch.where(valid, flat, flat.new_full((), k)).min(1).values
            high = torch.where(valid, flat, flat.new_full((), -1)).max(1).values
            no_foreground = low >= high
        sources = getattr(split, "sources", None) or [split.source(i) for i in range(len(split))]
        empty = [sources[i] for i in torch.nonzero(no_foreground).flatten().tolist()]
        total = max(int(pixel.sum()), 1)
        splits[name] = {
            "images": len(split),
            "pixels_per_class": {n: int(c) for n, c in zip(names, pixel)},
            "pixel_share": {n: round(float(c) / total, 6) for n, c in zip(names, pixel)},
            "ignored_pixels": int((flat == ignore_index).sum()),
            "images_without_foreground": len(empty),
            "images_without_foreground_examples": empty[:20],
            "classes_absent": [n for n, c in zip(names, pixel) if c == 0],
        }
        if empty:
            warnings.append(f"{name}: {len(empty)} image(s) without foreground")
        if splits[name]["classes_absent"]:
            warnings.append(f"{name}: no pixels of {', '.join(splits[name]['classes_absent'][:10])}")
    bad = [{"path": str(p), "reason": str(r)} for p, r in dataset.bad_files]
    if bad:
        warnings.append(f"{len(bad)} bad pair file(s) were skipped; audit.json lists them under bad_files")
    drawn = [plot_class_balance(counts, names, out_dir / "plots" / "audit_class_balance.png")] if figures else []
    audit = {"dataset": dataset.name, "task": task, "num_classes": k, "class_names": names,
             "splits": {n: len(s) for n, s in dataset.splits.items()}, "ignore_index": ignore_index,
             "size": list(next(iter(dataset.splits.values())).images.shape[-2:]),
             "masks": splits, "bad_files": bad, "warnings": warnings,
             "figures": [str(Path(figure).relative_to(out_dir)) for figure in drawn]}
    class_gaps = getattr(dataset, "class_gaps", None)
    if class_gaps:  # one line through the warnings mechanism (a long line, which the audit's table would wrap)
        warn(class_gaps, UserWarning)
        audit["class_gaps"] = class_gaps
    (out_dir / "audit.json").write_text(json.dumps(audit, indent=2) + "\n")
    return audit
