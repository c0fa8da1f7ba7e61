"""Dataset audit: class balance, image geometry and formats, dominant colours, samples,
duplicates (train/test leakage) and bad files.

Everything lands in ``out_dir/audit.json`` and ``out_dir/plots/audit_*.png``.
Duplicates are found twice over:

* exact: a hash of the decoded pixels (so a PNG re-saved with other compression, or the
  same picture as a BMP, is still a duplicate; a grey picture stored as RGB counts as grey);
* near (a second, labelled check): a perceptual hash (``imagehash.dhash``, 64 bits) within
  ``NEAR_DUPLICATE_DISTANCE`` bits across splits, which also finds resized or re-encoded JPEG
  copies; it can also pair different images that look alike, so it is reported apart.

Every image is hashed (duplicates must be exhaustive); only a seeded sample of
``max_images`` images is decoded for the colour study.

The audit of the same data with the same settings is the same, and every training run starts with one: it
is kept in ``cache_dir()/audit`` (audit.json and its figures) and copied into the next run folder that asks
for it. The entry is named by a digest of the images (in memory: their pixels; on disk: each file's path,
size and modification time), the labels, the class names, the settings, and the code and library versions
that compute and draw it, so any change to the data or to vislab audits afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from vislab.core.files import BadFileError, cache_dir, code_digest, keep_recent, reading, stat_digest, written_whole
from vislab.data.images import upright_size

# Listing every duplicate group of a badly scraped set would bury the summary.
MAX_LISTED_DUPLICATE_GROUPS = 50
SAMPLES_PER_CLASS = 8
# 8 levels per channel: coarse enough that a colour "mode" is stable, fine enough to tell hues apart.
COLOUR_LEVELS = 8
# Perceptual hashes cost ~0.1 ms an image: run by default up to this many images (training runs the
# audit on every start), always with ``near_duplicates=True`` (`vislab audit`).
NEAR_DUPLICATE_MAX_IMAGES = 20_000
# dHash bits (of 64) two images may differ in and still count as near-duplicates
NEAR_DUPLICATE_DISTANCE = 4
# audits kept in the cache folder, the least recently used dropped first (a Fashion-MNIST one: 0.4 MB)
CACHED_AUDITS = 32


class SingleLabels:
    """How the audit reads a split's labels: one class index per image (the default).

    A task whose targets are something else hands :func:`audit_dataset` its own (the multi-label
    task's counts every label of an image); a per-pixel task audits its masks instead.
    """

    def counts(self, labels, k: int) -> np.ndarray:
        """Images per class, length ``k``."""
        return np.bincount(np.asarray(labels), minlength=k)[:k]

    def per_image(self, labels):
        """One class index per image (-1: none), for the per-image studies (duplicates, colours, samples)."""
        return labels

    def balance_extra(self, splits: dict) -> dict:
        """Fields the class-balance section adds (none here)."""
        return {}


def audit_dataset(dataset, out_dir, max_images: int = 2000, seed: int = 0, samples_per_class: int = SAMPLES_PER_CLASS,
                  near_duplicates: bool | None = None, figures: bool = True, labels: SingleLabels | None = None,
                  label_issues: dict | None = None) -> dict:
    """Audit ``dataset`` and write ``audit.json`` plus figures under ``out_dir/plots/``.

    Args:
        dataset: a :class:`vislab.data.sources.Dataset` (``name``, ``class_names``,
            ``splits`` of :class:`~vislab.data.sources.Split`, ``bad_files``).
        out_dir: folder for ``audit.json`` and ``plots/`` (a run folder, or any folder).
        max_images: how many images (over all splits, seeded sample) are decoded for
            dominant colours. Duplicates are always checked on every image.
        seed: seed of that sample and of the sample grid.
        samples_per_class: images per class in the samples grid.
        figures: False writes audit.json alone (``vislab train --no-figures``).
        labels: how the labels are counted (:class:`SingleLabels` by default; a task passes its own).
        label_issues: the ``label_issues`` section to add (label errors need trained models, a layer above
            data: :func:`vislab.train.label_issues.find_label_issues` computes it; ``vislab audit --label-issues``).

    Returns:
        The audit as a dict (the same content as ``audit.json``).

    Example:
        >>> import torch, tempfile
        >>> from vislab.data.sources import Dataset, Split
        >>> imgs = torch.zeros(4, 1, 8, 8, dtype=torch.uint8); imgs[1] = 255
        >>> ds = Dataset("toy", ["a", "b"], {"train": Split(torch.tensor([0, 1, 0, 1]), images=imgs)})
        >>> audit = audit_dataset(ds, tempfile.mkdtemp())
        >>> audit["duplicates"]["within_split"]["train"]["extra_copies"]  # images 0, 2, 3 are identical
        2
    """
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    class_names = [str(c) for c in dataset.class_names]
    splits = dict(dataset.splits)
    rng = np.random.default_rng(seed)
    warnings: list[str] = []
    bad_files = [{"path": str(p), "reason": str(r)} for p, r in getattr(dataset, "bad_files", []) or []]

    labels = labels or SingleLabels()
    key = None
    if label_issues is None:  # label issues come from trained models: that audit is not kept
        key = _cache_key(getattr(dataset, "name", ""), class_names, splits, labels, bad_files,
                         {"max_images": max_images, "seed": seed, "samples_per_class": samples_per_class,
                          "near_duplicates": near_duplicates, "figures": figures})
        cached = _from_cache(key, out_dir) if key is not None else None
        if cached is not None:
            return cached
    balance = _class_balance(splits, class_names, warnings, labels)
    # the per-image studies below (duplicates, colours, samples) use one label per image; the balance
    # above counts what the task counts
    splits = {name: _per_image_view(split, labels) for name, split in splits.items()}
    scan = _scan(splits, bad_files)
    geometry = _geometry_summary(scan)
    colours = _dominant_colours(splits, class_names, max_images, rng, bad_files)
    # the figures first: a run's helper interpreter draws them while the duplicates are searched here
    drawn = _draw(splits, balance, scan, geometry, colours, class_names, samples_per_class, rng, bad_files,
                  plots) if figures else []
    duplicates = _duplicates(scan, class_names, warnings)
    if near_duplicates is None:
        near_duplicates = len(scan["records"]) <= NEAR_DUPLICATE_MAX_IMAGES
    duplicates["near"] = (_near_duplicates(scan, class_names, warnings) if near_duplicates else
                          {"checked": False, "reason": f"more than {NEAR_DUPLICATE_MAX_IMAGES:,} images; "
                           "`vislab audit` runs it"})

    # The same broken file can fail in the scan, the colour sample and the grid: list it once.
    bad_files = list({entry["path"]: entry for entry in bad_files}.values())
    if bad_files:
        warnings.append(f"{len(bad_files)} bad file(s) were skipped; audit.json lists them under bad_files")
    if label_issues is not None and label_issues["issues"]:  # none flagged: the label issues line says so
        warnings.append(f"{label_issues['issues']} image(s) of {label_issues['images_checked']:,} probably carry a wrong "
                        f"label; see {label_issues['csv']} (train --exclude or --relabel it)")
    audit = {
        "dataset": str(getattr(dataset, "name", "")),
        "num_classes": len(class_names),
        "class_names": class_names,
        "splits": {name: len(split) for name, split in splits.items()},
        "class_balance": balance,
        "geometry": geometry,
        "dominant_colour": colours["summary"],
        "duplicates": duplicates,
        "bad_files": bad_files,
        "warnings": warnings,
        "figures": [str(p.relative_to(out_dir)) for p in drawn] + ([label_issues["figure"]] if label_issues and
                                                                   label_issues.get("figure") else []),
    }
    if label_issues is not None:
        audit["label_issues"] = label_issues
    (out_dir / "audit.json").write_text(_as_json(audit))
    if key is not None:
        from vislab.core.background import when_drawn

        when_drawn(_to_cache, key, out_dir, audit)
    return audit


def _as_json(audit: dict) -> str:
    """audit.json's text, in the run folder and in the cache alike."""
    return json.dumps(audit, indent=2, allow_nan=False) + "\n"


# ----------------------------------------------------------------------------- the cache
def _cache_key(name: str, class_names, splits, labels, bad_files, settings: dict) -> str | None:
    """A digest of everything the audit reads: the splits' labels and pixels (or each file's path, size and
    modification time), the class names, the settings, and the code and versions that compute and draw it.
    SHA-256: 70,000 Fashion-MNIST images in about 0.05 s where the CPU has SHA instructions. None (nothing
    kept) when a file is missing or has just been modified (:func:`~vislab.core.files.stat_digest`)."""
    digest = hashlib.sha256()
    about = {"name": str(name), "classes": class_names, "settings": settings, "bad_files": bad_files,
             "labels": f"{type(labels).__module__}.{type(labels).__qualname__}", "code": _code_digest()}
    digest.update(json.dumps(about, sort_keys=True, default=str).encode())
    for split_name, split in splits.items():
        targets = np.ascontiguousarray(np.asarray(split.labels))
        digest.update(f"\0split {split_name} labels {targets.dtype} {targets.shape}\0".encode())
        digest.update(memoryview(targets).cast("B"))
        if getattr(split, "images", None) is not None:
            images = np.ascontiguousarray(np.asarray(split.images))
            digest.update(f"\0images {images.dtype} {images.shape}\0".encode())
            digest.update(memoryview(images).cast("B"))
            continue
        if not stat_digest(split.paths, digest):  # a file missing or just modified: audited every time
            return None
    return digest.hexdigest()


def _code_digest() -> str:
    """The audit's and the figures' code, with the versions of the libraries that compute and draw them."""
    here = Path(__file__).resolve()
    return code_digest([here, here.parent / "images.py", *sorted((here.parents[1] / "viz").glob("*.py"))],
                       ("numpy", "pillow", "matplotlib", "imagehash"))


def _from_cache(key: str, out_dir: Path) -> dict | None:
    """The kept audit copied into ``out_dir`` (audit.json and its figures), or None when there is none or it
    cannot be read whole."""
    from vislab.core.errors import UserError
    from vislab.core.files import read_json

    entry = cache_dir() / "audit" / key
    if not (entry / "audit.json").is_file():
        return None
    try:
        audit = read_json(entry / "audit.json", "a kept audit", f"delete {entry}")
        if not all((entry / figure).is_file() for figure in audit["figures"]):
            raise ValueError("a figure is missing")
    except (UserError, ValueError, KeyError, TypeError):  # damaged: audited again, and kept anew
        shutil.rmtree(entry, ignore_errors=True)
        return None
    try:
        for figure in audit["figures"]:
            (out_dir / figure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry / figure, out_dir / figure)
        os.utime(entry)  # recently used: kept longest
    except OSError:  # the entry dropped meanwhile by another run, or out_dir unwritable: the audit says which
        return None
    (out_dir / "audit.json").write_text(_as_json(audit))
    return audit


def _to_cache(key: str, out_dir: Path, audit: dict) -> None:
    """Keep the audit and its drawn figures under ``cache_dir()/audit/<key>``: written in a folder of its own,
    then renamed into place, so a reader never finds half an entry. A cache that cannot be written costs
    the next run its audit, nothing else."""
    root = cache_dir() / "audit"
    entry = root / key
    if entry.exists():
        return
    with contextlib.suppress(OSError):
        with written_whole(entry) as partial:
            for figure in audit["figures"]:
                (partial / figure).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out_dir / figure, partial / figure)
            partial.mkdir(parents=True, exist_ok=True)
            (partial / "audit.json").write_text(_as_json(audit))
        keep_recent([p for p in root.iterdir() if not p.name.startswith(".")], CACHED_AUDITS)


def _draw(splits, balance, scan, geometry, colours, class_names, samples_per_class, rng, bad_files,
          plots) -> list[Path]:
    """The audit's figures: class balance, image geometry (when the images differ in size: audit.json and the
    report's table say the one size otherwise), dominant colours, samples per class."""
    from vislab.core.background import draw

    figures = []
    counts = {name: [row[name] for row in balance["table"]] for name in splits}
    figures.append(draw("vislab.viz.data:plot_class_balance", counts, class_names, plots / "audit_class_balance.png"))
    if geometry.get("distinct_sizes", 0) > 1:
        figures.append(draw("vislab.viz.data:plot_image_geometry", scan["widths"], scan["heights"],
                            plots / "audit_image_geometry.png"))
    if len(colours["colours"]):
        figures.append(draw("vislab.viz.data:plot_dominant_colours", colours["colours"], colours["labels"], class_names,
                            plots / "audit_dominant_colours.png"))
    samples = _samples(splits, class_names, samples_per_class, rng, bad_files)
    figures.append(draw("vislab.viz.data:plot_samples_per_class", samples, class_names, plots / "audit_samples.png"))
    return figures


# ----------------------------------------------------------------------------- balance


# above this largest / smallest class ratio the audit suggests vislab's imbalance options
IMBALANCE_SUGGESTION_RATIO = 10.0


def _per_image_view(split, labels: SingleLabels):
    """The split with one label per image (the same split when its labels already are)."""
    per_image = labels.per_image(split.labels)
    if per_image is split.labels:
        return split
    return type(split)(labels=per_image, images=split.images, paths=split.paths, name=split.name)


def _class_balance(splits, class_names, warnings, labels: SingleLabels) -> dict:
    k = len(class_names)
    counts = {name: labels.counts(split.labels, k) for name, split in splits.items()}
    table = [{"class": cls, **{name: int(counts[name][c]) for name in splits}} for c, cls in enumerate(class_names)]
    ratios = {}
    for name, values in counts.items():
        ratios[name] = _ratio(values)
        empty = [class_names[c] for c in range(k) if values[c] == 0]
        if empty and len(values):
            warnings.append(f"split '{name}' has no images of: {empty}")
    total = sum(counts.values()) if counts else np.zeros(k, dtype=int)
    ratios["all"] = _ratio(total)
    for name, ratio in ratios.items():
        if ratio is not None and ratio >= 3:
            warnings.append(f"split '{name}' is imbalanced: largest class / smallest class = {ratio:.1f}")
    train_ratio = ratios.get("train")
    suggestion = None
    if train_ratio is not None and train_ratio > IMBALANCE_SUGGESTION_RATIO:
        suggestion = (f"the training classes differ {train_ratio:.0f}-fold: try --class-weights auto, --sampler balanced "
                      "or --loss focal, and judge by balanced accuracy / macro-F1 (multi-label: mAP, macro-F1)")
        warnings.append(suggestion)
    extra = labels.balance_extra(splits)
    return {
        **extra,
        "suggestion": suggestion,
        "table": table,
        "totals": {name: int(values.sum()) for name, values in counts.items()},
        # max/min count over classes; null when a class has no images there (ratio undefined)
        "imbalance_ratio": ratios,
    }


def _ratio(values) -> float | None:
    values = np.asarray(values)
    if len(values) == 0 or values.min() == 0:
        return None
    return round(float(values.max() / values.min()), 4)


# ----------------------------------------------------------------------------- hashing + headers


def pixel_digest(image) -> str:
    """Hash of an image's decoded pixels (uint8 C x H x W): equal for the same picture in any
    file format or compression. RGB with three equal channels hashes as grey.

    Example:
        >>> import numpy as np
        >>> grey = np.full((1, 4, 4), 7, np.uint8)
        >>> pixel_digest(grey) == pixel_digest(np.repeat(grey, 3, axis=0))
        True
    """
    return _pixel_digests(np.asarray(image, dtype=np.uint8)[None])[0]


def _pixel_digests(images: np.ndarray) -> list[str]:
    """:func:`pixel_digest` of each image of an (N, C, H, W) uint8 array: BLAKE2b of the pixels, keyed
    by the shape, a grey picture stored as RGB hashed as its one channel. The grey test and the key are
    computed once for the array (70,000 Fashion-MNIST images in about half the time of one call each).

    Example:
        >>> import numpy as np
        >>> images = np.random.default_rng(0).integers(0, 256, (3, 3, 4, 4), dtype=np.uint8)
        >>> images[1] = images[1, :1]  # grey stored as RGB
        >>> _pixel_digests(images)[1] == _pixel_digests(images[1:2, :1])[0], len(set(_pixel_digests(images)))
        (True, 3)
    """
    images = np.ascontiguousarray(np.asarray(images, dtype=np.uint8))
    n, c, h, w = images.shape
    grey = np.zeros(n, dtype=bool)
    if c == 3:
        grey = (images[:, 0] == images[:, 1]).all(axis=(1, 2)) & (images[:, 0] == images[:, 2]).all(axis=(1, 2))
    blake2b = hashlib.blake2b
    key, grey_key = f"{c}x{h}x{w}".encode()[:64], f"1x{h}x{w}".encode()[:64]
    flat, first = images.reshape(n, -1), images[:, 0].reshape(n, -1)
    return [blake2b(first[i].tobytes(), digest_size=16, key=grey_key).hexdigest() if grey[i] else
            blake2b(flat[i].tobytes(), digest_size=16, key=key).hexdigest() for i in range(n)]


def _scan(splits, bad_files) -> dict:
    """Hash every image's decoded pixels and read its geometry (file header, or tensor shape)."""
    records = []  # (hash, split, index, label)
    widths, heights = [], []
    modes, channels, formats = Counter(), Counter(), Counter()
    for name, split in splits.items():
        labels = np.asarray(split.labels)
        if getattr(split, "images", None) is not None:
            images = np.asarray(split.images)
            n, c, h, w = images.shape
            records += zip(_pixel_digests(images), [name] * n, range(n), labels.tolist())
            widths += [w] * n
            heights += [h] * n
            modes["L" if c == 1 else "RGB"] += n
            channels[str(c)] += n
            formats["in-memory uint8 tensor"] += n
            continue
        for i, path in enumerate(split.paths):
            try:
                with reading(path, "an image", "replace it with the original image, or delete it"):
                    data = Path(path).read_bytes()
            except BadFileError as exc:
                bad_files.append({"path": str(path), "reason": exc.reason})
                continue
            try:
                with Image.open(io.BytesIO(data)) as image:
                    width, height = upright_size(image)  # as the image is read: turned by its EXIF tag
                    widths.append(width)
                    heights.append(height)
                    modes[image.mode] += 1
                    channels[str(len(image.getbands()))] += 1
                    formats[image.format or "unknown"] += 1
            except Exception as exc:  # noqa: BLE001 - any header failure is a bad file, not a crash
                bad_files.append({"path": str(path), "reason": f"unreadable header ({exc})"})
                continue
            image = _load(split, i, bad_files)  # decoded as training decodes it
            if image is not None:
                records.append((pixel_digest(image), name, i, int(labels[i])))
    return {
        "records": records,
        "widths": widths,
        "heights": heights,
        "modes": modes,
        "channels": channels,
        "formats": formats,
        "sources": {name: split for name, split in splits.items()},
    }


def _duplicates(scan, class_names, warnings) -> dict:
    # only the digests seen more than once are grouped: most data sets have few duplicates
    repeated = {digest for digest, count in Counter(record[0] for record in scan["records"]).items() if count > 1}
    groups: dict[str, list] = defaultdict(list)
    for digest, split, index, label in scan["records"]:
        if digest in repeated:
            groups[digest].append((split, index, label))
    within: dict[str, dict] = defaultdict(lambda: {"groups": 0, "extra_copies": 0})
    across_pairs: Counter = Counter()
    across_groups = 0
    conflicts = 0
    listed = []
    for members in groups.values():
        if len(members) < 2:
            continue
        by_split = Counter(split for split, _, _ in members)
        for split, count in by_split.items():
            if count > 1:
                within[split]["groups"] += 1
                within[split]["extra_copies"] += count - 1
        split_names = sorted(by_split)
        if len(split_names) > 1:
            across_groups += 1
            for a_pos, a in enumerate(split_names):
                for b in split_names[a_pos + 1 :]:
                    across_pairs[f"{a}/{b}"] += 1
        labels = sorted({label for _, _, label in members})
        if len(labels) > 1:
            conflicts += 1
        if len(listed) < MAX_LISTED_DUPLICATE_GROUPS:
            listed.append(
                {
                    "sources": [scan["sources"][s].source(i) for s, i, _ in members],
                    "splits": [s for s, _, _ in members],
                    "labels": [class_names[label] if 0 <= label < len(class_names) else str(label) for _, _, label in members],
                }
            )
    for split in scan["sources"]:
        within.setdefault(split, {"groups": 0, "extra_copies": 0})
        if within[split]["groups"]:
            warnings.append(f"split '{split}' holds {within[split]['extra_copies']} exact duplicate image(s)")
    if across_groups:
        warnings.append(
            f"{across_groups} image(s) appear in more than one split ({dict(across_pairs)}): "
            "train/test leakage inflates test scores; remove them from one split"
        )
    if conflicts:
        warnings.append(f"{conflicts} duplicate group(s) carry different labels")
    return {
        "method": "exact: BLAKE2b of the decoded pixels (any file format or compression; grey stored as RGB "
                  "counts as grey)",
        "images_hashed": len(scan["records"]),
        "within_split": dict(within),
        "across_splits": {"groups": across_groups, "pairs": dict(across_pairs)},
        "leakage": across_groups > 0,
        "label_conflicts": conflicts,
        "examples": listed,
    }


def _near_duplicates(scan, class_names, warnings) -> dict:
    """Across-split pairs whose perceptual hashes (dHash) differ in at most NEAR_DUPLICATE_DISTANCE bits,
    leaving out the exact (pixel-identical) duplicates, which the exact check reports."""
    import imagehash

    hashes: dict[str, list] = defaultdict(list)  # split -> [(hash as uint64, index, label, digest)]
    for digest, split, index, label in scan["records"]:
        image = _load(scan["sources"][split], index, [])
        if image is None:
            continue
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1))
        bits = imagehash.dhash(pil).hash.flatten()
        hashes[split].append((int(np.packbits(bits).view(">u8")[0]), index, label, digest))
    names = list(hashes)
    pairs: Counter = Counter()
    examples = []
    total = 0
    for a_pos, a in enumerate(names):
        for b in names[a_pos + 1:]:
            left = np.array([h for h, *_ in hashes[a]], dtype=np.uint64)
            for h, index, label, digest in hashes[b]:
                distance = np.bitwise_count(left ^ np.uint64(h))
                for match in np.flatnonzero(distance <= NEAR_DUPLICATE_DISTANCE):
                    other = hashes[a][match]
                    if other[3] == digest:
                        continue  # pixel-identical: an exact duplicate
                    total += 1
                    pairs[f"{a}/{b}"] += 1
                    if len(examples) < MAX_LISTED_DUPLICATE_GROUPS:
                        examples.append({
                            "sources": [scan["sources"][a].source(other[1]), scan["sources"][b].source(index)],
                            "splits": [a, b], "distance": int(distance[match]),
                            "labels": [class_names[other[2]], class_names[label]],
                        })
    if total:
        warnings.append(f"{total} near-duplicate pair(s) across splits ({dict(pairs)}; perceptual hash, not "
                        "pixel-identical): possible leakage, or different images that look alike; see the examples")
    return {
        "checked": True,
        "method": f"perceptual dHash (imagehash, 64 bits), at most {NEAR_DUPLICATE_DISTANCE} bits apart, across "
                  "splits; exact duplicates left out",
        "pairs": total,
        "by_split_pair": dict(pairs),
        "examples": examples,
    }


def _sizes_text(geometry: dict, shown: int = 4) -> str:
    """The image sizes in words: ``all 36 images are 64x64``; ``4 sizes, each 9 images: 80x60, ...``;
    else ``5 sizes, most common 40x10 (2), 30x20 (2), 25x25 (1) and 2 more``: sizes tied in count are all
    listed (up to the ``common_sizes`` kept) rather than some of them cut at random.

    Example:
        >>> _sizes_text({"images_measured": 36, "distinct_sizes": 1, "common_sizes": {"64x64": 36}})
        'all 36 images are 64x64'
        >>> _sizes_text({"images_measured": 18, "distinct_sizes": 2, "common_sizes": {"80x60": 9, "64x64": 9}})
        '2 sizes, each 9 images: 80x60, 64x64'
    """
    sizes = list(geometry["common_sizes"].items())
    distinct, total = geometry["distinct_sizes"], geometry["images_measured"]
    if distinct == 1:
        return f"all {total} images are {sizes[0][0]}"
    counts = {count for _, count in sizes}
    if len(counts) == 1 and len(sizes) == distinct:
        return f"{distinct} sizes, each {sizes[0][1]} images: {', '.join(size for size, _ in sizes)}"
    # the first ``shown`` sizes, and any tied in count with the last of them
    cut = min(shown, len(sizes))
    while cut < len(sizes) and sizes[cut][1] == sizes[cut - 1][1]:
        cut += 1
    listed = ", ".join(f"{size} ({count})" for size, count in sizes[:cut])
    more = f" and {distinct - cut} more" if distinct > cut else ""
    return f"{distinct} sizes, most common {listed}{more}"


def _geometry_summary(scan) -> dict:
    widths = np.asarray(scan["widths"], dtype=float)
    heights = np.asarray(scan["heights"], dtype=float)
    if not len(widths):
        return {"images_measured": 0}
    aspect = widths / np.maximum(heights, 1)
    # the sizes by count, most common first, ties in the order first seen (as Counter.most_common): one
    # np.unique over the (width, height) pairs, not a string per image (70,000 images: 3 ms against 30)
    pairs = widths.astype(np.int64) * (1 << 32) + heights.astype(np.int64)
    unique, first, counts = np.unique(pairs, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    common = {f"{size >> 32}x{size & 0xFFFFFFFF}": count
              for size, count in zip(unique[order][:10].tolist(), counts[order][:10].tolist())}

    def stats(values):
        return {"min": float(values.min()), "max": float(values.max()), "mean": round(float(values.mean()), 3)}

    return {
        "images_measured": int(len(widths)),
        "width": stats(widths),
        "height": stats(heights),
        "aspect_ratio": stats(aspect),
        "distinct_sizes": len(unique),
        "common_sizes": common,
        "modes": dict(scan["modes"]),
        "channels": dict(scan["channels"]),
        "formats": dict(scan["formats"]),
    }


# ----------------------------------------------------------------------------- colours + samples


def dominant_colour(image) -> np.ndarray:
    """Main RGB colour of a uint8 (C, H, W) image: the mean of its most common quantised colour.

    Pixels are quantised to 8 levels per channel; the fullest cell (the mode) wins and
    its pixels are averaged, which picks the background or the big object rather than
    a muddy mean of everything. Grey images give a grey colour.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((3, 4, 4), np.uint8); img[0] = 250  # all red
        >>> dominant_colour(img).tolist()
        [250, 0, 0]
    """
    return dominant_colours(np.asarray(image)[None])[0]


def dominant_colours(images) -> np.ndarray:
    """:func:`dominant_colour` of each image of a uint8 (N, C, H, W) array, computed for the whole array at
    once: (N, 3) uint8, the same colours as one call per image (2,000 Fashion-MNIST images: a few
    milliseconds, against about 0.09 s one by one).

    Example:
        >>> import numpy as np
        >>> images = np.zeros((2, 3, 4, 4), np.uint8); images[0, 0] = 250; images[1, 2] = 40
        >>> dominant_colours(images).tolist()
        [[250, 0, 0], [0, 0, 40]]
    """
    images = np.asarray(images)
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    n = len(images)
    # At most ~64x64 pixels: the mode does not need every pixel.
    step = max(1, int(max(images.shape[2:]) // 64))
    pixels = np.ascontiguousarray(images[:, :3, ::step, ::step]).reshape(n, 3, -1)  # uint8 (N, 3, P)
    cells = (pixels // (256 // COLOUR_LEVELS)).astype(np.int64)
    cell_count = COLOUR_LEVELS ** 3
    # each image's cells numbered apart from the others' (image i: i * cell_count + cell), counted in one pass
    keys = (cells[:, 0] * COLOUR_LEVELS + cells[:, 1]) * COLOUR_LEVELS + cells[:, 2]  # (N, P)
    counts = np.bincount((keys + cell_count * np.arange(n)[:, None]).ravel(), minlength=n * cell_count)
    mode = counts.reshape(n, cell_count).argmax(axis=1)  # the first fullest cell, as np.bincount(keys).argmax()
    in_mode = keys == mode[:, None]
    # integer sums, then one division: the float mean of each image's mode pixels, exactly
    sums = (pixels * in_mode[:, None, :]).sum(axis=2, dtype=np.int64)
    return (sums / in_mode.sum(axis=1)[:, None]).round().astype(np.uint8).reshape(n, 3)


def _dominant_colours(splits, class_names, max_images, rng, bad_files) -> dict:
    index = [(name, i) for name, split in splits.items() for i in range(len(split))]
    if len(index) > max_images:
        chosen = sorted(rng.choice(len(index), size=max_images, replace=False).tolist())
        index = [index[i] for i in chosen]
    colours, labels = [], []
    for name in splits:  # in-memory splits: their sampled images in one array each
        split = splits[name]
        chosen = [i for split_name, i in index if split_name == name]
        if getattr(split, "images", None) is not None and chosen:
            colours.append(dominant_colours(np.asarray(split.images)[chosen]))
            labels.append(np.asarray(split.labels)[chosen])
            continue
        for i in chosen:
            image = _load(split, i, bad_files)
            if image is not None:
                colours.append(dominant_colour(image)[None])
                labels.append(np.asarray([int(split.labels[i])]))
    colours = np.concatenate(colours).astype(np.uint8) if colours else np.zeros((0, 3), np.uint8)
    labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    per_class = {}
    for c, cls in enumerate(class_names):
        mask = labels == c
        if mask.any():
            per_class[cls] = colours[mask].mean(axis=0).round().astype(int).tolist()
    summary = {
        "images_sampled": int(len(colours)),
        "method": f"mode of pixels quantised to {COLOUR_LEVELS} levels per channel, averaged within the mode",
        "mean_dominant_colour_per_class": per_class,
    }
    return {"colours": colours, "labels": labels, "summary": summary}


def _samples(splits, class_names, per_class, rng, bad_files) -> list[list]:
    """A few images of every class, from the training split when there is one."""
    split = splits.get("train") or next(iter(splits.values()), None)
    samples: list[list] = [[] for _ in class_names]
    if split is None:
        return samples
    labels = np.asarray(split.labels)
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)
        if len(members) > per_class:
            members = np.sort(rng.choice(members, size=per_class, replace=False))
        for i in members:
            image = _load(split, int(i), bad_files)
            if image is not None:
                samples[c].append(image)
    return samples


def _load(split, index, bad_files):
    try:
        image = split.load(index)
    except Exception as exc:  # noqa: BLE001 - an unreadable image is reported, not fatal
        bad_files.append({"path": str(split.source(index)), "reason": str(getattr(exc, "reason", exc))})
        return None
    return image.numpy() if hasattr(image, "numpy") else np.asarray(image)


def leakage_warnings(audit: dict, near: bool = True) -> list[str]:
    """What `train` prints after the audit: exact (pixel-identical) leakage across splits, and with
    ``near`` the near-duplicate pairs (train leaves those to audit.json and the report: small images
    such as 8x8 digits give many look-alike pairs).

    Example:
        >>> leakage_warnings({"duplicates": {"across_splits": {"groups": 2, "pairs": {"test/train": 2}}}})[0][:39]
        '2 image(s) are in more than one split ('
    """
    duplicates = audit.get("duplicates") or {}
    across = duplicates.get("across_splits") or {}
    notes = []
    if across.get("groups"):
        notes.append(f"{across['groups']} image(s) are in more than one split ({across.get('pairs')}): "
                     "pixel-identical train/test leakage inflates the test score; remove them from one split "
                     "(audit.json lists them)")
    near_check = duplicates.get("near") or {}
    if near and near_check.get("pairs"):
        notes.append(f"{near_check['pairs']} near-duplicate pair(s) across splits ({near_check.get('by_split_pair')}; perceptual "
                     "hash): possible leakage, or look-alike images; audit.json lists examples")
    return notes


def print_audit(audit: dict, console=None) -> None:
    """Print the audit's class balance, geometry, duplicates and warnings as rich tables.

    Example:
        >>> print_audit({"class_names": ["a"], "class_balance": {"table": [{"class": "a", "train": 3}],
        ...              "imbalance_ratio": {"train": 1.0}}, "warnings": []})  # doctest: +SKIP
    """
    from rich.table import Table

    from vislab.core.console import console as vislab_console

    console = console or vislab_console()
    if audit.get("masks"):
        _print_masks(audit, console)
    balance = audit.get("class_balance") or {}
    rows = balance.get("table") or []
    if not rows:
        for warning in audit.get("warnings", []):
            console.print(f"[yellow]warning:[/] {warning}")
        return
    splits = [key for key in (rows[0] if rows else {}) if key != "class"]
    table = Table(title=f"Class balance: {audit.get('dataset', '')}")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for row in rows:
        table.add_row(str(row["class"]), *(str(row[s]) for s in splits))
    ratios = balance.get("imbalance_ratio") or {}
    table.add_row("[bold]imbalance (max/min)[/]", *(_ratio_text(ratios.get(s)) for s in splits))
    console.print(table)
    geometry = audit.get("geometry") or {}
    if geometry.get("images_measured"):
        console.print(
            f"geometry: {_sizes_text(geometry)}; "
            f"modes {geometry['modes']}; formats {geometry['formats']}"
        )
    duplicates = audit.get("duplicates") or {}
    if duplicates:
        within = sum(v["extra_copies"] for v in duplicates.get("within_split", {}).values())
        across = duplicates.get("across_splits", {}).get("groups", 0)
        console.print(f"exact duplicates: {within} within splits, {across} across splits "
                      f"({duplicates.get('images_hashed', 0):,} images hashed)")
        near = duplicates.get("near") or {}
        if near.get("checked"):
            console.print(f"near-duplicates (perceptual hash, not pixel-identical): {near.get('pairs', 0)} pair(s) "
                          "across splits")
        elif near:
            console.print(f"near-duplicates: not checked ({near.get('reason')})")
    issues = audit.get("label_issues")
    if issues:
        console.print(f"label issues ({issues['model']}; cleanlab, ranked by {issues['rank_by']}): {issues['issues']} "
                      f"of {issues['images_checked']:,} images flagged; out-of-fold accuracy "
                      f"{issues['out_of_fold_accuracy']:.1%}")
        for row in issues.get("top", [])[:5]:
            console.print(f"  {row['file']}: {row['given']} → {row['suggested']} (score {row['score']:.3g})")
    for warning in audit.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")


def _print_masks(audit: dict, console) -> None:
    """A mask audit (per-pixel targets): each class's share of the labelled pixels per split."""
    from rich.table import Table

    masks = audit["masks"]
    splits = list(masks)
    table = Table(title=f"Pixels per class: {audit.get('dataset', '')}")
    table.add_column("class")
    for split in splits:
        table.add_column(f"{split} ({masks[split]['images']} images)", justify="right")
    for name in audit.get("class_names", []):
        table.add_row(str(name), *(f"{masks[s]['pixel_share'].get(name, 0.0):.2%}" for s in splits))
    table.add_row("[bold]images without foreground[/]", *(str(masks[s]["images_without_foreground"]) for s in splits))
    table.add_row("[bold]ignored pixels[/]", *(f"{masks[s]['ignored_pixels']:,}" for s in splits))
    console.print(table)


def _ratio_text(ratio) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def preview_augmentation(dataset, augment_cfg, path, count: int = 6, versions: int = 5, split: str = "train", seed: int = 0,
                         task=None, policy=None) -> Path:
    """Draw ``count`` images of ``split``, each beside ``versions`` augmented copies.

    Uses :class:`vislab.data.augment.Augment` exactly as training does, so the
    figure shows what the augmentation settings really do.

    Args:
        dataset: a :class:`vislab.data.sources.Dataset`.
        augment_cfg: a :class:`vislab.core.config.AugmentConfig`.
        path: PNG to write.
        count: how many images (seeded random picks, one class after another for single-label data).
        versions: augmented copies per image.
        task: the data's task; a per-pixel one draws each mask over its image, augmented with it
            (:func:`vislab.data.augment.augment_with_masks`, as training does; pale: pixels from outside
            the mask, which the loss ignores).
        policy: an :class:`vislab.data.policies.AugmentPolicy` (``--augment-policy``), or None; applied to
            the uint8 copies before the other augmentations, from the same generator, as training does.

    Example:
        >>> import torch, tempfile, os
        >>> from vislab.core.config import AugmentConfig
        >>> from vislab.data.sources import Dataset, Split
        >>> ds = Dataset("toy", ["a", "b"], {"train": Split(torch.tensor([0, 1]), images=torch.zeros(2, 1, 8, 8, dtype=torch.uint8))})
        >>> preview_augmentation(ds, AugmentConfig(rotation=20), os.path.join(tempfile.mkdtemp(), "aug.png"), count=2).exists()
        True
    """
    import torch

    from vislab.data.augment import Augment
    from vislab.viz.data import plot_augment_preview

    if split not in dataset.splits:
        raise ValueError(f"no {split!r} split in {dataset.name} (it has {', '.join(dataset.splits)}); pick one of those")
    data = dataset.splits[split]
    labels = np.asarray(data.labels)
    rng = np.random.default_rng(seed)
    per_pixel = bool(getattr(task, "per_pixel", False))
    if labels.ndim == 1:  # round-robin over classes so the preview shows several kinds of image
        by_class = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in range(len(dataset.class_names))]
        picks: list[int] = []
        while len(picks) < min(count, len(data)) and any(by_class):
            for members in by_class:
                if members and len(picks) < count:
                    picks.append(members.pop())
        names = [dataset.class_names[int(labels[i])] for i in picks]
        title = f"Augmentation preview ({', '.join(dict.fromkeys(names))})"
    else:  # several labels per image, or a mask per image: seeded random picks
        picks = sorted(rng.permutation(len(data))[:count].tolist())
        title = "Augmentation preview" + (": masks over their images (pale: from outside the mask, ignored)"
                                          if per_pixel else "")
    augment = Augment(augment_cfg)
    generator = torch.Generator().manual_seed(seed)
    originals, augmented = [], []
    for index in picks:
        image = data.load(index)
        copies = image.unsqueeze(0).repeat(versions, 1, 1, 1)
        if policy is not None:  # as training: on the uint8 images, before the other augmentations
            copies = policy(copies, generator)
        if per_pixel:
            from vislab.data.augment import augment_with_masks

            mask = torch.as_tensor(labels[index]).long()
            ignore = int(getattr(dataset, "ignore_index", 255))
            images, masks = augment_with_masks(augment, copies, mask.unsqueeze(0).repeat(versions, 1, 1), generator,
                                               ignore)
            colors = dataset.palette.array(len(dataset.class_names))
            originals.append(_mask_over(image, mask, colors, ignore))
            augmented.append([_mask_over(i, m, colors, ignore) for i, m in zip(images, masks)])
            continue
        originals.append(image)
        # one batch of copies: Augment draws independent parameters for every sample
        augmented.append(list(augment(copies, generator=generator)))
    return plot_augment_preview(originals, augmented, path, title=title)


def _mask_over(image, mask, colors, ignore_index: int) -> np.ndarray:
    """A uint8 (3, H, W) image with its class-ID mask blended over it in the palette's colours."""
    from vislab.viz.masks import colorize, overlay

    pixels = np.asarray(image).transpose(1, 2, 0)
    pixels = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[..., :3]
    blended = overlay(pixels, colorize(np.asarray(mask), colors, ignore_index), alpha=0.5, beta=0.5)
    return blended.transpose(2, 0, 1)
