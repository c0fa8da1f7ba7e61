"""label_issues.csv: what ``vislab audit --label-issues`` writes, and what ``train --exclude`` /
``--relabel`` read back.

One row per image whose given label is probably wrong, most likely first::

    file,given,suggested,score,split
    /data/shoes/bag/0412.png,Bag,Sandal,0.0031,train

``file`` names the image as the data loader does: its resolved path, or ``SPLIT#INDEX`` for a
built-in in-memory set (the index within the source's own split, before vislab holds out
val/test). A multi-label row lists its labels joined by ``|`` (``cat|dog``; empty: no label).

``--exclude FILE`` drops the listed images; ``--relabel FILE`` gives them their suggested
labels. Both apply to the data as the source gives it, before the seeded val/test split, so
the split is made from the edited data; config.yaml records the file.

Example:
    >>> import tempfile, pathlib, torch
    >>> from vislab.data.sources import Dataset, Split
    >>> csv = pathlib.Path(tempfile.mkdtemp()) / "label_issues.csv"
    >>> write_label_issues(csv, [{"file": "train#1", "given": "a", "suggested": "b", "score": 0.01, "split": "train"}])
    PosixPath('...label_issues.csv')
    >>> ds = Dataset("toy", ["a", "b"], {"train": Split(torch.tensor([0, 0, 1]), images=torch.zeros(3, 1, 4, 4, dtype=torch.uint8))})
    >>> apply_label_edits(ds, relabel=str(csv)).splits["train"].labels.tolist()
    [0, 1, 1]
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from vislab.core.errors import DataError

COLUMNS = ("file", "given", "suggested", "score", "split")
MULTI_LABEL_JOIN = "|"


def image_key(split, index: int) -> str:
    """How label_issues.csv names image ``index`` of ``split``: its resolved path, or ``SPLIT#INDEX``."""
    if split.paths is not None:
        return str(Path(split.paths[index]).resolve())
    return split.source(index)


def label_text(label, class_names) -> str:
    """A class index -> its name; a (K,) 0/1 row -> the names of its labels joined by ``|``."""
    label = np.asarray(label)
    if label.ndim == 0:
        return str(class_names[int(label)])
    return MULTI_LABEL_JOIN.join(str(class_names[c]) for c in np.flatnonzero(label > 0))


def write_label_issues(path, rows) -> Path:
    """Write ``rows`` (dicts with :data:`COLUMNS`) to ``path``; the header is always written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "score": f"{float(row['score']):.6g}"})
    return path


def read_label_issues(path, flag: str) -> dict[str, str]:
    """``file`` -> ``suggested`` from a label_issues.csv, or a DataError naming ``flag`` and the fix."""
    from vislab.core.files import read_csv_rows

    fix = "pass the label_issues.csv that `vislab audit --label-issues` wrote"
    rows = read_csv_rows(Path(path).expanduser(), f"{flag} file", fix)
    header = [cell.strip() for cell in rows[0]] if rows else []
    missing = [c for c in ("file", "suggested") if c not in header]
    if missing:
        raise DataError(f"{flag} {path}: no {' or '.join(missing)} column (it has {header}); {fix} (columns "
                        f"{','.join(COLUMNS)})")
    at_file, at_suggested = header.index("file"), header.index("suggested")
    edits = {}
    for row in rows[1:]:
        name = row[at_file].strip() if len(row) > at_file else ""
        if name:
            edits[name] = row[at_suggested].strip() if len(row) > at_suggested else ""
    return edits


def apply_label_edits(dataset, exclude: str | None = None, relabel: str | None = None):
    """``--exclude FILE``: drop the images FILE lists; ``--relabel FILE``: give them their suggested labels.

    Matches every split of ``dataset`` (as the source gives it) by :func:`image_key`, before anything
    renumbers the images. A file none of whose rows name an image of the data is an error (a
    label_issues.csv of other data), as is a suggested label that is not one of the data's classes.
    """
    edits = {flag: read_label_issues(path, flag) for flag, path in (("--exclude", exclude), ("--relabel", relabel))
             if path}
    if not edits:
        return dataset
    index = {name: i for i, name in enumerate(dataset.class_names)}
    matched = dict.fromkeys(edits, 0)
    for split_name, split in list(dataset.splits.items()):
        keys = [image_key(split, i) for i in range(len(split))]
        if "--relabel" in edits:
            hits = [i for i, key in enumerate(keys) if key in edits["--relabel"]]
            matched["--relabel"] += len(hits)
            if hits:
                labels = split.labels.clone()
                for i in hits:
                    labels[i] = _parse_label(edits["--relabel"][keys[i]], index, labels.ndim == 2, relabel, keys[i])
                split.labels = labels
        if "--exclude" in edits:
            hits = [i for i, key in enumerate(keys) if key in edits["--exclude"]]
            matched["--exclude"] += len(hits)
            if hits:
                dataset.splits[split_name] = split.subset(np.setdiff1d(np.arange(len(split)), hits), split.name)
    for flag, rows in edits.items():
        if rows and not matched[flag]:
            path = exclude if flag == "--exclude" else relabel
            raise DataError(f"{flag} {path}: none of its {len(rows)} file(s) (e.g. {next(iter(rows))!r}) is in --data "
                            f"{dataset.name!r}; pass the label_issues.csv that `vislab audit --label-issues` wrote "
                            "for this data")
    dataset.label_edits = {flag.lstrip("-"): matched[flag] for flag in edits}  # images changed, for the console
    return dataset


def _parse_label(text: str, index: dict, multi_label: bool, path, key: str):
    names = [t.strip() for t in text.split(MULTI_LABEL_JOIN)] if multi_label else [text]
    names = [n for n in names if n] if multi_label else names
    unknown = [n for n in names if n not in index]
    if unknown:
        raise DataError(f"--relabel {path}: {key}: suggested label {unknown[0]!r} is not a class of the data "
                        f"({', '.join(index)}); fix the row or delete it")
    if not multi_label:
        return index[names[0]]
    row = torch.zeros(len(index))
    row[[index[n] for n in names]] = 1
    return row
