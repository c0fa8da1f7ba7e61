"""Multi-label data: a CSV of file + labels -> a :class:`~vislab.data.sources.Dataset` of (N, K) 0/1 targets.

Two layouts, both auto-detected:

* a file column and a labels column whose cells hold several labels separated by spaces,
  commas, semicolons or pipes (Planet's ``train_v2.csv``: ``image_name,tags`` with
  ``haze primary``; fastai's PASCAL CSV), e.g. ``file,labels`` / ``a.png,cat dog``;
* a file column and one 0/1 column per class (``file,cat,dog`` / ``a.png,1,1``).

Class order is sorted (numbers as numbers) and stable, so model.json's class list does not
depend on the rows' order. An empty labels cell is an all-negative image: allowed, and the
audit counts them. Splits are made by iterative stratification (:mod:`vislab.data.stratify`).

Mistakes that would silently train a wrong model are errors naming the row and the fix:
a label typo that makes a new class (a label outside ``--labels``, or a class that only one
row carries), a row naming a missing file, a malformed cell (``cat,,dog``, ``['cat']``, a
``2`` in a 0/1 column).

Example:
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from vislab.core.config import DataConfig
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(12): Image.new("L", (8, 8), 20 * i).save(root / f"{i}.png")
    >>> rows = ["file,labels"] + [f"{i}.png,{['cat', 'dog', 'cat dog', ''][i % 4]}" for i in range(12)]
    >>> _ = (root / "labels.csv").write_text("\\n".join(rows))
    >>> ds = load_multilabel_dataset(DataConfig(source=str(root / "labels.csv"), val_split=0, test_split=0))
    >>> ds.class_names, ds.splits["train"].labels.sum(0).tolist()
    (['cat', 'dog'], [6.0, 6.0])
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np
import torch

from vislab.core.background import compute
from vislab.core.errors import DataError
from vislab.data.sources import (
    SPLIT_NAMES, Dataset, Split, _count, _natural_key, _read_csv, _resolve_file, drop_repeated_rows,
    missing_files_hint, validate_files,
)
from vislab.data.label_edits import apply_label_edits

# --label-sep names (and the characters themselves are accepted too)
LABEL_SEPARATORS = {"space": " ", "comma": ",", "semicolon": ";", "pipe": "|"}
FILE_COLUMNS = ("file", "filename", "file_name", "image", "image_name", "image_id", "path", "Path", "id", "Id")
LABEL_COLUMNS = ("labels", "label", "tags", "classes", "class", "target", "targets")
_BAD_TOKEN = re.compile(r"[\[\]{}()'\"]")  # a Python/JSON list written into a cell: "['cat', 'dog']"
# what --data must be for --task multilabel, in the errors that say it is not
CSV_FORMAT = ("a CSV file: an image file column and a labels column (file,labels / a.png,cat;dog: labels separated "
              "by spaces, commas, semicolons or pipes), or one 0/1 column per class (file,cat,dog / a.png,1,1); "
              "see docs/tasks/multilabel.md")


def separator(name: str | None) -> str | None:
    """``--label-sep`` value (space/comma/semicolon/pipe or the character) -> the character; None: auto."""
    if name in (None, "", "auto"):
        return None
    if name in LABEL_SEPARATORS:
        return LABEL_SEPARATORS[name]
    if name in LABEL_SEPARATORS.values():
        return name
    raise DataError(f"--label-sep {name!r} is not a separator; use one of {', '.join(LABEL_SEPARATORS)} "
                    "(or auto)")


def detect_separator(cells) -> str:
    """The separator the cells use: the one of , ; | that appears (labels may then hold spaces), else a space."""
    found = [sep for sep in (",", ";", "|") if any(sep in cell for cell in cells)]
    if len(found) > 1:
        example = next(cell for cell in cells if sum(sep in cell for sep in found) > 1 or found[1] in cell)
        raise DataError(f"the labels cells mix separators {found} (e.g. {example!r}); use one, or say which with "
                        f"--label-sep ({', '.join(LABEL_SEPARATORS)})")
    return found[0] if found else " "


def split_cell(cell: str, sep: str) -> list[str] | None:
    """The labels of one cell ([] for an empty cell), or None when the cell is malformed."""
    cell = cell.strip()
    if not cell:
        return []
    tokens = cell.split() if sep == " " else [t.strip() for t in cell.split(sep)]
    if any(not t or _BAD_TOKEN.search(t) for t in tokens):
        return None
    return tokens


def _columns(path: Path, columns: list[str], file_col, label_col, rows) -> tuple[str, str | None, list[str]]:
    """(file column, labels column or None, 0/1 class columns) of a multi-label CSV."""
    file_col = file_col or next((c for c in FILE_COLUMNS if c in columns), None)
    if file_col is None:
        raise DataError(f"{path}: no column of image file names found (looked for {', '.join(FILE_COLUMNS)}); "
                        f"its columns are {columns}. Name the column with --file-col COLUMN.")
    if file_col not in columns:
        raise DataError(f"{path}: --file-col {file_col!r} is not a column; its columns are {columns}.")
    if label_col is not None and label_col not in columns:
        raise DataError(f"{path}: --label-col {label_col!r} not found; columns are {columns}.")
    label_col = label_col or next((c for c in LABEL_COLUMNS if c in columns), None)
    if label_col is not None:
        return file_col, label_col, []
    others = [c for c in columns if c != file_col]
    if len(others) >= 2:
        return file_col, None, others  # one 0/1 column per class; the cells are checked row by row
    raise DataError(f"{path}: no labels column (looked for {', '.join(LABEL_COLUMNS)}) and not one 0/1 column "
                    f"per class; columns are {columns}. Set --label-col.")


def _read_targets(path: Path, cfg, known: list[str] | None, file_col=None, label_col=None, singletons: bool = True):
    """(files, class names, (N, K) float32 targets) of one CSV; ``known`` fixes the classes (a test CSV)."""
    columns, rows = _read_csv(path, example=("1.jpg", "cat dog"))
    file_col, label_col, class_cols = _columns(path, columns, file_col, label_col, rows)
    files = [(row.get(file_col) or "").strip() for row in rows]
    if label_col is None:  # one 0/1 column per class
        classes = sorted(class_cols, key=_natural_key)
        if known is not None and classes != list(known):
            raise DataError(f"{path}: class columns {classes} differ from the training classes {list(known)}")
        targets = np.zeros((len(rows), len(classes)), np.float32)
        for r, row in enumerate(rows):
            for c, name in enumerate(classes):
                value = (row.get(name) or "").strip()
                if value not in ("0", "1", "0.0", "1.0"):
                    raise DataError(f"{path}: row {r + 2}, column {name!r} holds {value!r}; one column per class "
                                    f"must hold 0 or 1. Fix the cell (or, if the labels are in one column, "
                                    f"name it with --label-col)")
                targets[r, c] = float(value)
        return files, classes, targets
    cells = [(row.get(label_col) or "") for row in rows]
    sep = separator(getattr(cfg, "label_sep", None)) or detect_separator(cells)
    parsed = []
    for r, cell in enumerate(cells):
        tokens = split_cell(cell, sep)
        if tokens is None:
            shown = {" ": "space"}.get(sep, repr(sep))
            raise DataError(f"{path}: row {r + 2} ({files[r]!r}): the labels cell {cell!r} is malformed; expected "
                            f"label names separated by {shown}, e.g. 'cat{sep}dog' (an empty cell is an image with "
                            f"no label). Fix the cell, or set --label-sep if the separator is another")
        parsed.append(tokens)
    wanted = known if known is not None else (sorted(set(cfg.labels), key=_natural_key) if cfg.labels else None)
    if wanted is not None:
        allowed = set(wanted)
        for r, tokens in enumerate(parsed):
            for token in tokens:
                if token not in allowed:
                    close = difflib.get_close_matches(token, list(wanted), n=1, cutoff=0.6)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    source = "training classes" if known is not None else "--labels"
                    raise DataError(f"{path}: row {r + 2} ({files[r]!r}) has label {token!r}, which is not one of the "
                                    f"{source} ({', '.join(wanted)}).{hint} Fix the row"
                                    + ("" if known is not None else ", or add the label to --labels"))
        classes = list(wanted)
    else:
        classes = sorted({t for tokens in parsed for t in tokens}, key=_natural_key)
        if singletons:
            _check_singletons(path, parsed, classes, files)
    index = {name: i for i, name in enumerate(classes)}
    targets = np.zeros((len(rows), len(classes)), np.float32)
    for r, tokens in enumerate(parsed):
        for token in tokens:
            targets[r, index[token]] = 1.0
    return files, classes, targets


def _check_singletons(path: Path, parsed, classes, files) -> None:
    """A class only one row carries is most often a typo ('dgo' for 'dog'): it cannot be learned,
    split or evaluated either. Naming the classes with --labels accepts it."""
    counts = {c: 0 for c in classes}
    for tokens in parsed:
        for token in set(tokens):
            counts[token] += 1
    for name in classes:
        if counts[name] == 1 and len(classes) > 1:
            row = next(r for r, tokens in enumerate(parsed) if name in tokens)
            others = [c for c in classes if c != name and counts[c] > 1]
            close = difflib.get_close_matches(name, others, n=1, cutoff=0.6)
            looks = (f"; it looks like a typo of {close[0]!r} ({counts[close[0]]} rows)" if close else
                     ", so it can be neither learned nor evaluated")
            raise DataError(f"{path}: label {name!r} appears in one row only (row {row + 2}, {files[row]!r}){looks}. "
                            f"Fix the row, or, if the class is real, list every class with --labels "
                            f"(e.g. --labels {' '.join(sorted(set(others + [name]), key=_natural_key)[:6])} ...)")


def _paths(path: Path, files: list[str], root: Path) -> list[str]:
    resolved, missing = [], []
    for r, name in enumerate(files):
        found = _resolve_file(root, name) if name else None
        if found is None:
            missing.append(f"row {r + 2}: {name!r}")
        else:
            resolved.append(str(found))
    if missing:
        raise DataError(f"{path}: {len(missing)} of {len(files)} rows name files that are missing under {root} "
                        f"(first: {', '.join(missing[:3])}){missing_files_hint(missing)}. Fix the paths, or set "
                        "--image-root to the folder holding them")
    return resolved


def _split(path: Path, files, targets, cfg, name: str, classes: list[str]) -> tuple[Split, list]:
    root = Path(cfg.image_root).expanduser() if cfg.image_root else path.parent
    paths = _paths(path, files, root)
    kept = drop_repeated_rows(path, [(file, resolved, tuple(np.flatnonzero(row).tolist()),
                                      " ".join(classes[i] for i in np.flatnonzero(row)) or "(no label)")
                                     for file, resolved, row in zip(files, paths, targets)])
    paths, targets = [paths[i] for i in kept], targets[np.asarray(kept, dtype=np.int64)]
    good, good_rows, bad = validate_files(paths, list(range(len(paths))), cfg.workers)
    labels = torch.from_numpy(targets[np.asarray(good_rows, dtype=np.int64)] if good_rows
                              else np.zeros((0, targets.shape[1]), np.float32))
    return Split(labels, paths=good, name=name), bad


class LabelSetDataset(Dataset):
    """A :class:`Dataset` of (N, K) 0/1 targets: a label counts the images carrying it, and the split
    table adds the images without any label and the images in all."""

    def counts(self) -> dict[str, list[int]]:
        return {name: [int(v) for v in (split.labels > 0).sum(0).tolist()] for name, split in self.splits.items()}

    def split_table(self) -> list[list[str]]:
        counts = self.counts()
        names = list(counts)
        rows = [[cls] + [str(counts[s][i]) for s in names] for i, cls in enumerate(self.class_names)]
        rows.append(["(no label)"] + [str(int(((self.splits[s].labels > 0).sum(1) == 0).sum())) for s in names])
        rows.append(["images"] + [str(len(self.splits[s])) for s in names])
        return [["label"] + names] + rows


def load_multilabel_dataset(cfg, seed: int = 0, scoring: bool = False) -> Dataset:
    """A multi-label :class:`Dataset` from ``cfg`` (a :class:`~vislab.core.config.DataConfig`): the CSV
    ``cfg.source``, its ``--test-csv``, validation/test held out by iterative stratification.
    ``scoring``: data only scored by a trained model (``vislab evaluate --data``), which may carry one
    label, or a label in one row.

    Raises:
        DataError: not a CSV, a label typo, a missing file, a malformed cell, fewer than two classes.
    """
    path = Path(str(cfg.source)).expanduser()
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise DataError(_not_a_csv(path, str(cfg.source)))
    if cfg.max_per_class:
        raise DataError("--max-per-class caps single-label classes; a multi-label image belongs to several. "
                        "Drop --max-per-class with --task multilabel")
    files, classes, targets = _read_targets(path, cfg, None, cfg.file_col, cfg.label_col, singletons=not scoring)
    if len(classes) < 2 and not scoring:
        raise DataError(f"{path}: only {len(classes)} label(s) ({', '.join(classes)}) found; multi-label training "
                        "needs at least two")
    train, bad = _split(path, files, targets, cfg, "train", classes)
    splits = {"train": train}
    if cfg.test_csv:
        test_path = Path(cfg.test_csv).expanduser()
        if not test_path.is_file():
            raise DataError(f"--test-csv {test_path}: no such file")
        test_files, _, test_targets = _read_targets(test_path, cfg, classes, cfg.test_file_col or cfg.file_col,
                                                    cfg.test_label_col or cfg.label_col)
        test_cfg = type(cfg)(**{**cfg.__dict__, "image_root": None}) if cfg.image_root is None else cfg
        splits["test"], test_bad = _split(test_path, test_files, test_targets, test_cfg, "test", classes)
        bad += test_bad
    # label_issues.csv names images as the CSVs give them: edit before the stratified val/test split
    edited = apply_label_edits(Dataset(path.stem, classes, splits), getattr(cfg, "exclude", None),
                               getattr(cfg, "relabel", None))
    splits, train = edited.splits, edited.splits["train"]
    if "test" not in splits:
        n_test = _count(cfg.test_split, len(train))
        if n_test:
            rest, held = compute("vislab.data.stratify:multilabel_split", train.labels.numpy(), n_test, seed)
            splits["test"], train = train.subset(held, "test"), train.subset(rest, "train")
    n_val = _count(cfg.val_split, len(train))
    if n_val:
        rest, held = compute("vislab.data.stratify:multilabel_split", train.labels.numpy(), n_val, seed + 1)
        splits["val"], train = train.subset(held, "val"), train.subset(rest, "train")
    splits["train"] = train
    if len(train) == 0:
        raise DataError(f"{path}: no usable training image ({len(bad)} bad files skipped)")
    own = {"test": f"--test-csv {cfg.test_csv} is the test split"} if cfg.test_csv else {}
    return LabelSetDataset(path.stem, classes, {k: splits[k] for k in SPLIT_NAMES if k in splits}, bad,
                           edited.label_edits, own)


def _not_a_csv(path: Path, source: str) -> str:
    """Why ``--data`` is not a multi-label CSV: a folder (naming the CSVs it holds), another file, or nothing."""
    if path.is_dir():
        csvs = sorted(p.name for p in path.glob("*.csv") if p.is_file())
        hint = ""
        if csvs:
            hint = (f". It holds {', '.join(csvs[:3])}{' ...' if len(csvs) > 3 else ''}: give --data "
                    f"{Path(source) / csvs[0]}")
        elif any(d.is_dir() for d in path.iterdir()):
            hint = ". A folder of class folders is single-label data: drop --task multilabel to train on it"
        return f"--data {source!r} is a folder; --task multilabel reads {CSV_FORMAT}{hint}"
    if path.exists():
        return f"--data {source!r} is not a .csv file; --task multilabel reads {CSV_FORMAT}"
    return f"--data {source!r}: no such CSV file; --task multilabel reads {CSV_FORMAT}"
