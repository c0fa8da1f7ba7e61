"""The cyclic garbage collector in vislab's own processes: the ``vislab`` command and its helpers.

CPython starts a collection every 700 new container objects, and every tenth one of those scans the
older objects, every hundredth all of them. A command imports torch and its helpers import
scikit-learn and matplotlib: 160,000-280,000 objects, nearly all alive until the process ends, scanned
again and again while they are being created. That was 0.2-0.4 s of a run's start-up in each process
(``import torch`` with vislab's training modules: 426 collections, 0.19-0.25 s), time the user waits for.

:func:`relax` makes the first threshold 50,000 new objects, as long-running Python services do
(freqtrade; mypy uses 200,000): cyclic garbage is still collected, in fewer and larger passes, and
what a figure or a training step leaves in cycles is freed within a few figures or steps. Only the
processes vislab starts call it (:func:`vislab.cli.run`, a helper interpreter): a program that
imports :mod:`vislab.api` keeps its own settings.

Example:
    >>> import gc
    >>> before = gc.get_threshold()
    >>> relax(); gc.get_threshold()[0]
    50000
    >>> gc.set_threshold(*before)
"""

from __future__ import annotations

import gc

FIRST_THRESHOLD = 50_000  # new container objects between collections of the youngest generation
OLDER_THRESHOLDS = (20, 20)  # how many younger collections before an older generation is scanned


def relax() -> None:
    """Collect cyclic garbage less often in this process (never more often than it does now)."""
    first, *older = gc.get_threshold()
    if first == 0:  # collection disabled by whoever runs us: leave it so
        return
    gc.set_threshold(max(first, FIRST_THRESHOLD), *(max(a, b) for a, b in zip(older, OLDER_THRESHOLDS)))
