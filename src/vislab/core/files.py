"""The one place where a file that cannot be read becomes a message for the user.

Every reader of a file the user gives or a run folder holds (images, IDX, CSV, YAML,
JSON, safetensors, torch state dicts, ``last.pt``, ONNX) decodes inside :func:`reading`,
or calls one of the readers below, which do. A missing file, a folder in its place, a
zero-byte, truncated or random file, or a file of another format ends in one
:class:`BadFileError` that names the file, says what was wrong and what to do, and the
CLI prints it as one line. ``tests/test_bad_files.py`` feeds every reader these cases
and scans the package for decoders called outside this guard.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.json"
    >>> _ = path.write_text("{not json")
    >>> try:
    ...     read_json(path, "a vislab model description", "retrain, or restore the file")
    ... except BadFileError as exc:
    ...     print(exc.reason.split(" (")[0])
    cannot be read as a vislab model description
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import pickle
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

from vislab.core.errors import RunError, UserError


class BadFileError(UserError, ValueError):
    """A file that cannot be read: ``path``, ``reason`` (what was wrong) and ``fix`` (what to do)."""

    def __init__(self, path, reason: str, fix: str = ""):
        super().__init__(f"{path}: {reason}" + (f"; {fix}" if fix else ""))
        self.path = str(path)
        self.reason = reason
        self.fix = fix


class MissingFileError(BadFileError, FileNotFoundError):
    """The file is not there (a :class:`FileNotFoundError` too, for callers that ask for one)."""


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What the decoders raise on a bad file (each library has its own kinds)."""
    import yaml

    errors: list[type[BaseException]] = [
        OSError, EOFError, ValueError, RuntimeError, KeyError, IndexError, TypeError, SyntaxError,
        struct.error, zlib.error, csv.Error, pickle.UnpicklingError, yaml.YAMLError,
    ]
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    with contextlib.suppress(ImportError):
        from google.protobuf.message import Error as ProtobufError

        errors.append(ProtobufError)
    return tuple(errors)


def _reason(exc: BaseException) -> str:
    """A short reason from a decoder's exception: its first line, without the library's noise."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    if isinstance(exc, IsADirectoryError):
        return "a folder"
    mark = getattr(exc, "problem_mark", None)  # PyYAML's syntax errors: where, and what it found there
    if mark is not None and getattr(exc, "problem", None):
        context = f" {exc.context}" if getattr(exc, "context", None) else ""
        tabs = " (YAML indents with spaces, not tabs)" if "'\\t'" in exc.problem else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}{tabs}"
    if isinstance(exc, (EOFError, gzip.BadGzipFile, zlib.error)) or "truncated" in str(exc).lower():
        return f"truncated or damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # torch colours its messages
    if not text:
        return type(exc).__name__
    first = text[0]
    if len(first) > 160 and ". " in first:  # a library's paragraph: its first sentence says it
        first = first.split(". ")[0]
    return first[:200]


def check_file(path, kind: str, fix: str, allow_empty: bool = False) -> Path:
    """``path`` as a Path, or a :class:`BadFileError` if it is missing, a folder or (unless allowed) empty."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "no such file", fix)
    if path.is_dir():
        raise BadFileError(path, f"is a folder, where {kind} was expected", fix)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadFileError(path, f"cannot be read ({exc.strerror or exc})", fix) from None
    if size == 0 and not allow_empty:
        raise BadFileError(path, f"is empty (zero bytes), where {kind} was expected", fix)
    return path


# Files only vislab writes into a run folder: a folder holding none of them is not one
RUN_FILES = ("model.json", "config.yaml", "audit.json", "metrics.json", "history.csv")
# What the commands that write a folder other than a run's write into it, and what such a folder is
OUTPUT_FILES = ((("leaderboard.csv", "leaderboard.png"), "compare's own output"),
                (("lr_find.json", "lr_find.png"), "lr-find's output"))
# the default folders of explain, activations and filters for a model outside a run: runs/<command>-<model>
OUTPUT_PREFIXES = ("explain", "activations", "filters")


def vislab_output(path) -> str | None:
    """What vislab output the folder ``path`` is when it is not a run's (``"compare's own output"``: it holds
    ``vislab compare``'s leaderboard; ``"lr-find's output"``), else None: a run folder (one of :data:`RUN_FILES`),
    a folder vislab did not write, or no folder.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "leaderboard.csv").write_text("run\\n")
        >>> vislab_output(folder)
        "compare's own output"
        >>> _ = (folder / "model.json").write_text("{}")
        >>> vislab_output(folder) is None
        True
    """
    path = Path(path)
    if not path.is_dir() or any((path / name).is_file() for name in RUN_FILES):
        return None
    for names, what in OUTPUT_FILES:
        if any((path / name).is_file() for name in names):
            return what
    command = path.name.partition("-")[0]  # the folders explain, activations, filters write outside a run
    if command in OUTPUT_PREFIXES and any(p.suffix == ".png" for p in path.iterdir()):
        return f"{command}'s output"
    return None


def run_folder_error(path, trained: bool = False) -> RunError | None:
    """Why ``path`` is not a folder a run wrote (None when it is one): missing, a file (an ONNX graph
    named as such), another command's output (:func:`vislab_output`), or a folder holding none of
    :data:`RUN_FILES` (a data folder, a typo'd parent);
    ``trained``: a folder ``vislab audit`` wrote (audit.json alone) is not one either."""
    path = Path(path)
    if path.is_dir():
        wanted = [name for name in RUN_FILES if not (trained and name == "audit.json")]
        if any((path / name).is_file() for name in wanted):
            return None
        if trained and (path / "audit.json").is_file():
            return RunError(f"{path} is a folder `vislab audit` wrote (audit.json, no model): this command needs "
                            "a training run's folder, written by `vislab train --out DIR`")
        output = vislab_output(path)
        if output is not None:
            return RunError(f"{path} is {output}, not a vislab run folder; give the folder `vislab train --out DIR` "
                            "wrote")
        audit = "" if trained else " (or `vislab audit --out DIR`)"  # a command that needs a model: train's alone
        return RunError(f"{path} is not a vislab run folder: it holds none of model.json, config.yaml, "
                        f"metrics.json; give the folder `vislab train --out DIR`{audit} wrote")
    if path.suffix.lower() == ".onnx" and path.is_file():
        return RunError(f"{path}: an ONNX graph, which `vislab predict`, `segment` and `serve` read; this command "
                        "needs the run folder it was exported from")
    if path.is_file():
        return RunError(f"{path}: a file, not a run folder; give a folder written by `vislab train --out DIR`")
    return RunError(f"{path}: no such run folder{similar_folder(path)}; give a folder written by "
                    "`vislab train --out DIR`")


def similar_folder(path) -> str:
    """`` (did you mean runs/fashion-mnist-fast?)`` for a folder beside the missing ``path`` whose name is close
    to its name (a typo), else nothing.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "fashion-mnist-fast").mkdir()
        >>> similar_folder(root / "fashion-mnsit").endswith("fashion-mnist-fast?)")
        True
    """
    import difflib

    path = Path(path)
    try:
        names = [entry.name for entry in path.parent.iterdir() if entry.is_dir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {path.with_name(close[0])}?)" if close and path.name else ""


def evaluation_files(run_dir) -> dict[str, Path]:
    """The evaluations a run folder holds, by name: ``""`` for ``metrics.json`` (the run's own test split),
    ``NAME`` for ``metrics_NAME.json``. An evaluation's curve points (``<stem>_curves.json`` beside
    ``<stem>.json``, :func:`vislab.tasks.base.write_metrics`) are not an evaluation.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> for name in ("metrics", "metrics_curves", "metrics_val", "metrics_val_curves"):
        ...     _ = (run / f"{name}.json").write_text("{}")
        >>> sorted(evaluation_files(run))
        ['', 'val']
    """
    run_dir = Path(run_dir)
    found = {"": run_dir / "metrics.json"} if (run_dir / "metrics.json").is_file() else {}
    for path in sorted(run_dir.glob("metrics_*.json")):
        base = path.stem[:-len("_curves")] if path.stem.endswith("_curves") else None
        if base is not None and (run_dir / f"{base}.json").is_file():
            continue
        found[path.stem[len("metrics_"):]] = path
    return found


@contextlib.contextmanager
def reading(path, kind: str, fix: str, errors: tuple[type[BaseException], ...] = (), allow_empty: bool = False):
    """Decode ``path`` in the ``with`` block; any decoder's error becomes one :class:`BadFileError`.

    Args:
        path: the file.
        kind: what it should be, as a phrase ("a labels CSV", "a safetensors weights file").
        fix: what the user can do about it ("give the CSV with file,label rows").
        errors: more exception types to treat as a bad file (e.g. onnxruntime's).
        allow_empty: a zero-byte file is valid (an empty YAML config).

    Keep the block to the decoding: an error the code after it raises is not the file's.
    A :class:`~vislab.core.errors.UserError` raised in the block passes through unchanged.
    """
    path = check_file(path, kind, fix, allow_empty)
    try:
        yield path
    except UserError:
        raise
    except _decode_errors() + tuple(errors) as exc:
        raise BadFileError(path, f"cannot be read as {kind} ({_reason(exc)})", fix) from None


def read_text(path, kind: str, fix: str, allow_empty: bool = False) -> str:
    """The file as UTF-8 text (a byte-order mark dropped)."""
    with reading(path, kind, fix, allow_empty=allow_empty) as path:
        return path.read_text(encoding="utf-8-sig")


def read_json(path, kind: str, fix: str):
    """A JSON file's value."""
    with reading(path, kind, fix) as path:
        return json.loads(path.read_text(encoding="utf-8-sig"))


def read_yaml(path, kind: str, fix: str, allow_empty: bool = False):
    """A YAML file's value, read with ``yaml.safe_load`` (``None`` for an empty file, if allowed)."""
    import yaml

    with reading(path, kind, fix, allow_empty=allow_empty) as path:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig"))


def read_csv_rows(path, kind: str, fix: str) -> list[list[str]]:
    """A CSV file's rows as lists of cells (UTF-8, byte-order mark dropped; blank lines kept as [])."""
    with reading(path, kind, fix) as path:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.reader(handle))


def cache_dir() -> Path:
    """Where vislab keeps what it computed once and can compute again: downloaded data sets, decoded IDX
    files, the speed choices, cached features. ``$VISLAB_CACHE``, else ``~/.cache/vislab``; deleting it
    loses nothing but time."""
    return Path(os.environ.get("VISLAB_CACHE", Path.home() / ".cache" / "vislab"))


# A file modified this recently may change again within the file system's timestamp resolution (a few
# milliseconds on Linux, 2 s on FAT) and keep its size and time: they do not yet name its content.
SETTLED_SECONDS = 2.0


def stat_digest(paths, digest) -> bool:
    """Add each file's path, size and modification time to ``digest`` (a hashlib object), for a cache keyed by
    the files. False when one cannot be stat'ed or was modified in the last ``SETTLED_SECONDS``: nothing
    keyed by them may then be kept or trusted (as git re-reads a file modified as its index was written)."""
    import time

    settled = time.time_ns() - int(SETTLED_SECONDS * 1e9)
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            return False
        if stat.st_mtime_ns > settled:
            return False
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return True


def code_digest(sources, packages=()) -> str:
    """A digest of source files and of installed packages' versions: what a kept result was computed with,
    so that another version of the code or a library computes it afresh."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    for path in map(Path, sources):
        with reading(path, "a vislab module", "reinstall vislab"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for package in packages:
        try:
            digest.update(f"{package}={version(package)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=none\n".encode())
    return digest.hexdigest()


def file_target_problem(path) -> str | None:
    """Why no file can be written at ``path``, found without making anything (None when one can): a folder
    there, a file in the way of its folder, a folder no file can be made in (the nearest existing folder is
    tried with a file of its own, removed at once: permissions alone do not say it, e.g. for root on a
    read-only mount). Worded as every command words it (:func:`vislab.core.errors.user_message`); the caller
    puts its flag and the path in front."""
    import errno
    import tempfile

    from vislab.core.errors import user_message

    path = Path(path)
    if path.is_dir():
        return user_message(IsADirectoryError(errno.EISDIR, "Is a directory"))
    folder = next((folder for folder in (path.parent, *path.parent.parents) if folder.exists()), Path())
    if not folder.is_dir():
        return user_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder)))
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:  # the probe's own name says nothing: the reason and the fix
        return user_message(OSError(exc.errno, exc.strerror))
    return None


def write_bad_files(path, rows, keep_empty: bool = False) -> None:
    """The ``(path, reason)`` rows of the files a command could not read, as a CSV at ``path``. With no rows an
    older list there is removed (it would claim bad files this run lacks), unless ``keep_empty``: the header
    alone (a run folder's bad_files.csv, which its report reads).

    Example:
        >>> import tempfile
        >>> listed = Path(tempfile.mkdtemp()) / "bad_files.csv"
        >>> write_bad_files(listed, [("a.png", "zero-byte file")])
        >>> listed.read_text().splitlines()
        ['path,reason', 'a.png,zero-byte file']
        >>> write_bad_files(listed, [])
        >>> listed.exists()
        False
    """
    path = Path(path)
    rows = list(rows)
    if not rows and not keep_empty:
        path.unlink(missing_ok=True)
        return
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows(rows)


def keep_recent(entries, count: int) -> None:
    """Delete all but the ``count`` most recently modified of ``entries`` (cache files or folders; a reader
    touches what it uses, so they are the most recently used); one that cannot be stat'ed is left alone."""
    import shutil

    dated = []
    for entry in entries:
        with contextlib.suppress(OSError):
            dated.append((entry.stat().st_mtime, entry))
    dated.sort(key=lambda pair: pair[0])
    for _, old in dated[:max(0, len(dated) - count)]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


STALE_PARTIAL_SECONDS = 3600.0  # no cache entry takes this long to write
_PARTIAL = re.compile(r"^\..+\.\d+\.partial$")


@contextlib.contextmanager
def written_whole(target, durable: bool = False):
    """Write the file or folder ``target`` whole or not at all: the block writes the path it is given
    (:func:`partial_path`, in ``target``'s folder, made if missing), which is then renamed into place; on an
    error it is removed and the error raised. After a write, what killed writers left in the folder is
    removed (:func:`drop_stale_partials`). Every cache entry vislab keeps is written through it, and every
    file of a run folder (``core.weights.atomic_write``: weights, checkpoints, JSON and YAML).

    ``durable``: the written file reaches the disk (fsync) before it takes ``target``'s name, so that a
    power cut leaves the old file or the new one, and it gets the mode any new file gets (0666 less the
    umask) whatever its writer chose. A cache entry skips both: it can be computed again.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "kept" / "entry.json"
        >>> with written_whole(target) as partial:
        ...     _ = partial.write_text("{}")
        >>> target.read_text(), [p.name for p in target.parent.iterdir()]
        ('{}', ['entry.json'])
    """
    import shutil

    target = Path(target)
    partial = partial_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
        if durable and partial.is_file():
            with open(partial, "rb") as written:
                os.fsync(written.fileno())
            os.chmod(partial, 0o666 & ~_umask())  # safetensors writes 0600: the team could not read the weights
        os.replace(partial, target)
    except BaseException:
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        raise
    drop_stale_partials(target.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def partial_path(target) -> Path:
    """Where :func:`written_whole` writes ``target`` before renaming it into place: a hidden name of this
    process's, so that two runs writing at once never share one and a reader never finds half an entry. A
    writer killed midway leaves it behind: :func:`drop_stale_partials` removes it later.

    Example:
        >>> partial_path("/cache/checked/abc.json").name == f".abc.json.{os.getpid()}.partial"
        True
    """
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.partial")


def drop_stale_partials(folder) -> None:
    """Remove from ``folder`` the partial entries (:func:`partial_path`) last modified over an hour ago, left by
    writers that were killed; a younger one may be another run's, being written now."""
    import shutil
    import time

    cutoff = time.time() - STALE_PARTIAL_SECONDS
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            if not _PARTIAL.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.lstat().st_mtime < cutoff:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()


def decoded_once(path: Path, decode: Callable[[Path], Any]) -> Any:
    """``decode(path)`` (a uint8 numpy array), done once per version of the file: the array is kept in
    ``cache_dir()/decoded`` and read back on later calls. The cache file is named by the file's absolute
    path, size and modification time, so a replaced file is decoded anew; a cache file that cannot be read
    (cut short, another numpy) is decoded again, and one that cannot be written only costs the next call
    the decoding. Nothing but arrays is read back (``allow_pickle=False``).
    """
    import hashlib

    import numpy as np

    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return decode(path)  # the decoder names the problem
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    version = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    cached = cache_dir() / "decoded" / f"{path.name}-{where}-{version}.npy"
    try:
        array = np.load(cached, allow_pickle=False)
        if array.dtype == np.uint8:
            return array
    except (OSError, ValueError, EOFError):
        pass  # not there yet, cut short by a crash, or written by another numpy
    array = decode(path)
    with contextlib.suppress(OSError):
        with written_whole(cached) as partial, open(partial, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        for old in cached.parent.glob(f"{path.name}-{where}-*.npy"):  # the older versions of this file
            if old != cached:
                old.unlink(missing_ok=True)
    return array


def read_bytes(path, kind: str, fix: str) -> bytes:
    """The file's bytes; a ``.gz`` file is decompressed (a truncated archive is refused)."""
    with reading(path, kind, fix) as path:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()


def load_safetensors(path, kind: str, fix: str, device: str = "cpu") -> dict:
    """A safetensors file's tensors (nothing unpickled)."""
    from safetensors.torch import load_file

    with reading(path, kind, fix) as path:
        return dict(load_file(str(path), device=device))


def load_torch(path, kind: str, fix: str):
    """A torch file read with ``torch.load(weights_only=True)``: tensors and plain containers only."""
    import torch

    with reading(path, kind, fix) as path:
        return torch.load(str(path), map_location="cpu", weights_only=True)


def load_onnx(path, fix: str, load_external_data: bool = True):
    """An ONNX model's protobuf."""
    import onnx

    with reading(path, "an ONNX model", fix, errors=(onnx.checker.ValidationError,)) as path:
        return onnx.load(str(path), load_external_data=load_external_data)


def onnxruntime_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's exception kinds (plain ``Exception`` subclasses), for ``reading(errors=...)``."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:
        return ()
    return tuple(getattr(state, name) for name in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel",
                                                   "InvalidProtobuf", "RuntimeException", "InvalidGraph")
                 if hasattr(state, name))


__all__ = ["BadFileError", "MissingFileError", "check_file", "vislab_output", "reading", "read_text", "read_json",
           "read_yaml", "read_csv_rows", "read_bytes", "load_safetensors", "load_torch", "load_onnx",
           "onnxruntime_errors"]
