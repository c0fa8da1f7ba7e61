"""The rich console every command prints through: no highlighting, and soft-wrapped, so that a long path or
command in a message is never broken over two lines when the output is piped (rich wraps at 80 columns
without a terminal). Tables still fit the width.

Example:
    >>> console(stderr=True).soft_wrap
    True
"""

from __future__ import annotations


def console(stderr: bool = False):
    """A :class:`rich.console.Console` for vislab's messages (``stderr``: to standard error)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)
