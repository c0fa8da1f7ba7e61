"""Exceptions that mean "the user's input is wrong": the CLI prints them without a traceback.

Each message says what happened, what was expected and how to fix it.
"""

import errno


class UserError(Exception):
    """Base of every error caused by what the user gave (a path, a flag, a file)."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message says which key and what is valid."""


class DeviceError(ConfigError):
    """``--device cuda``/``mps`` where there is no such device: a usage error (the CLI exits with 2)."""


class DataError(UserError, ValueError):
    """A dataset that cannot be trained on; the message names the problem and the fix."""


class RunError(UserError, FileNotFoundError):
    """Not a usable run folder; the message says what is missing and how to get it."""


class PretrainedWeightsError(UserError, RuntimeError):
    """Pretrained weights that cannot be had (offline, unknown name); the message says how to get them."""


# an operating system's refusal, an OSError, is about a path or a port the user gave (or the disk): one line
USER_ERRORS = (UserError, OSError, ValueError)

_OS_FIXES = {
    errno.EACCES: "give a path you may write to (or read)",
    errno.EPERM: "give a path you may write to (or read)",
    errno.EROFS: "give a path on a writable disk",
    errno.ENOSPC: "free some disk space, or write to another disk",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: give another path",
    errno.EEXIST: "a file is in the way: give another path, or move the file",
    errno.EISDIR: "give a file, not a folder",
    errno.EADDRINUSE: "another program holds the port: choose another --port",
}


def user_message(exc: BaseException) -> str:
    """What the CLI prints for a user error: vislab's own message, or an OSError's path, reason and fix.

    Example:
        >>> user_message(NotADirectoryError(errno.ENOTDIR, "Not a directory", "notes.txt/run"))
        'notes.txt/run: not a directory; a part of the path is a file, not a folder: give another path'
        >>> user_message(ConfigError("--lr -1: must be > 0"))
        '--lr -1: must be > 0'
    """
    if isinstance(exc, UserError) or not isinstance(exc, OSError) or exc.errno is None:
        return str(exc)
    reason = exc.strerror or str(exc)
    reason = reason[:1].lower() + reason[1:]
    where = f"{exc.filename}: " if exc.filename is not None else ""
    fix = _OS_FIXES.get(exc.errno)
    return f"{where}{reason}" + (f"; {fix}" if fix else "")


def download_failure(exc: BaseException) -> str:
    """One line for a failed download, whatever the downloader: no connection says so; any other
    failure is its first line (torchvision lists every mirror it tried, over several lines).

    Example:
        >>> download_failure(RuntimeError("Error downloading x.gz:\\nTried https://a/, got:\\n"
        ...                               "<urlopen error [Errno -2] Name or service not known>\\n"))
        'no network connection: Name or service not known'
        >>> download_failure(RuntimeError("File not found or corrupted."))
        'RuntimeError: File not found or corrupted.'
    """
    import re

    text = str(exc)
    offline = re.search(r"<urlopen error (?:\[Errno -?\d+\] )?([^>]*)>", text)
    if offline:
        return f"no network connection: {offline.group(1).strip()}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
