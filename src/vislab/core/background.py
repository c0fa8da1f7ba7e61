"""Helper interpreters for the work of a run that needs no model: its figures and scikit-learn's arithmetic.

A run's figures (matplotlib) and its scikit-learn calls import about 1.3 s of libraries and then draw
for seconds, while the model's own process imports torch (another 1.3 s) and trains. Inside
``with helpers():`` the calls go to one or two child interpreters (``python -m vislab.core.background``),
started when the block opens, so that their imports overlap the parent's; outside such a block every
call runs at once, in the calling process. Each call returns a :class:`concurrent.futures.Future`.

- :func:`submit` / :func:`compute`: a call the parent will wait for (the split, the metrics); it goes
  before every queued figure.
- :func:`draw`: a figure, queued; it returns the file's path at once.
- :func:`pause` / :func:`quiet`: the queued figures wait while torch has the cores (the epochs, the
  test forward passes, a speed probe): a helper drawing beside torch's threads stalls them for more
  than it draws.
- :func:`wait` (called by ``build_report`` and when the block closes): the parent runs the calls still
  queued itself, from the back, while the helpers take the front; then it raises the first error of a
  call nobody waited for, so a figure that fails stops the run just as it does when drawn in-process.
- :func:`when_drawn`: a call of the parent's own for once the figures queued so far are on disk (a
  cache keeping a copy of them); it runs at the end of the next :func:`wait` that raises nothing.
- :func:`discard`: the queued figures dropped, the running ones waited for (their folder is removed next).

A helper holds one call at a time; one that dies leaves its calls to the parent. What crosses to a
helper: a module-level function (or its ``"module:function"`` name, imported there) and plain
arguments (numpy arrays, lists, dicts, strings, paths; torch tensors are turned into numpy arrays
first, so a helper never imports torch). They cross by pickle over a pipe between two processes of
this program; nothing is read from a file. ``VISLAB_HELPERS=0`` keeps every call in the calling
process; so does a machine where no interpreter can be started.

Example:
    >>> from vislab.core.background import helpers, submit, wait
    >>> import operator
    >>> with helpers(preload=()):
    ...     total = submit(operator.add, 2, 3)
    ...     total.result()
    5
"""

from __future__ import annotations

import heapq
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

# What a run's helpers import while the parent imports torch: the evaluation's scikit-learn and the figures.
RUN_PRELOAD = ("sklearn.model_selection", "sklearn.metrics", "vislab.viz.evaluation", "vislab.viz.data",
               "vislab.viz.training", "vislab.viz.explain")
MAX_HELPERS = 2
_HEADER = struct.Struct("<Q")  # the payload's bytes

_lock = threading.Lock()
_pool: "_Pool | None" = None


class _RemoteTraceback(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def enabled() -> bool:
    """False when ``VISLAB_HELPERS=0`` (or ``false``/``no``/``off``): every call stays in-process."""
    return os.environ.get("VISLAB_HELPERS", "1").strip().lower() not in ("0", "false", "no", "off")


def helper_count(cpus: int | None = None) -> int:
    """How many helpers a run starts: one up to three cores, two from four. Each helper imports the same
    2 s of libraries: on two cores a second one costs the parent more than it draws."""
    cpus = cpus if cpus is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                          else os.cpu_count() or 1)
    return 1 if cpus < 4 else MAX_HELPERS


@contextmanager
def helpers(preload: Iterable[str] = RUN_PRELOAD, count: int | None = None) -> Iterator[None]:
    """Run the :func:`submit` calls of the block in helper interpreters; on leaving, wait for all of them.

    Nested blocks share the outer block's helpers (the outer one waits for them). An error raised in the
    block leaves the helpers' errors aside: the block's own error is the one the caller sees.
    """
    global _pool
    with _lock:
        outer = _pool is not None
        if not outer and enabled():
            try:
                _pool = _Pool(count or helper_count(), tuple(preload))
            except Exception:  # noqa: BLE001 - no interpreter to start here (a sandbox, an embedded one): in-process
                _pool = None
    if outer:
        yield
        return
    try:
        yield
    except BaseException:
        _close(cancel=True)
        raise
    _close(cancel=False)


def submit(fn: Callable | str, *args, **kwargs) -> Future:
    """``fn(*args, **kwargs)`` in a helper when a :func:`helpers` block is open, else at once here.

    ``fn`` may be named ``"package.module:function"``: its module is then imported where it runs, so a
    parent that hands scikit-learn's work to a helper never imports scikit-learn itself. A helper runs
    the submitted calls before the figures queued by :func:`draw`: the parent is waiting for them, and
    their errors are raised where it does (:func:`wait` raises the figures')."""
    return _submit(fn, args, kwargs, priority=0)


def compute(fn: Callable | str, *args, **kwargs):
    """:func:`submit` and wait: the value of ``fn(*args, **kwargs)``, computed in a helper when there is one."""
    return submit(fn, *args, **kwargs).result()


def _submit(fn, args, kwargs, priority: int) -> Future:
    pool = _pool
    if pool is not None:
        return pool.submit(fn, _plain(args), _plain(kwargs), priority)
    future: Future = Future()
    _run(fn, args, kwargs, future)
    return future


def _resolve(fn: Callable | str) -> Callable:
    if not isinstance(fn, str):
        return fn
    import importlib

    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def draw(fn: Callable | str, *args, **kwargs) -> Path:
    """Submit a figure: ``fn``'s last positional argument is the file it writes, returned at once.

    Outside a :func:`helpers` block the figure is drawn before this returns and its error raised here."""
    future = _submit(fn, args, kwargs, priority=1)
    if _pool is None:
        future.result()
    return Path(args[-1])


class Pause:
    """Queued figures wait while a pause holds (:func:`pause`); :meth:`end` lets them go (once)."""

    def __init__(self, pool: "_Pool | None", wait: bool = True):
        self.pool = pool
        if pool is not None:
            pool.hold(+1)
            if wait:
                pool.idle()

    def end(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.hold(-1)


def pause(wait: bool = True) -> Pause:
    """Hold the queued figures; with ``wait``, also wait until no helper is busy (its imports done, its
    call answered).

    For the work torch spreads over the cores: the epochs and the test forward passes (``wait=False``:
    a figure already being drawn finishes), and a speed probe (``wait=True``: it times this process
    alone). A helper drawing on one core stalls torch's threads for more than it draws.
    :meth:`Pause.end` (or :func:`wait`) lets the figures go. Waited-for calls still run."""
    return Pause(_pool, wait)


@contextmanager
def quiet(wait: bool = True) -> Iterator[None]:
    """:func:`pause` for the ``with`` block."""
    paused = pause(wait)
    try:
        yield
    finally:
        paused.end()


@contextmanager
def beside() -> Iterator[None]:
    """This process's torch work of the block runs beside the helpers' (the explanation panels while a
    helper computes the metrics and draws): torch's threads are one fewer per helper for the block, so
    that none of them waits for a core a helper holds. Without helpers nothing changes.

    Measured alternating on a 2-core Xeon (``vislab train --data digits --model mlp --epochs 2``): the
    run's time outside the epochs 3.96-4.39 s against 4.75-5.06 s with both threads kept."""
    pool = _pool
    if pool is None:
        yield
        return
    import torch  # the parent's own work: a helper never runs this

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before - len(pool.helpers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def elsewhere() -> bool:
    """Whether :func:`draw` and :func:`submit` hand their calls to helper interpreters now (a :func:`helpers`
    block with a live helper), rather than running them at once in the calling thread."""
    pool = _pool
    return pool is not None and any(helper.alive for helper in pool.helpers)


def mark() -> tuple:
    """Where the helpers stand now, for :func:`ran_since`."""
    pool = _pool
    if pool is None:
        return (None, 0, False)
    with pool.lock:
        return (pool, pool.started, any(h.current is not None for h in pool.helpers))


def ran_since(since: tuple) -> bool:
    """Whether a helper ran a call at any time since :func:`mark` gave ``since`` (it shared the cores)."""
    pool, started, busy = since
    if pool is None or pool is not _pool:
        return False
    with pool.lock:
        return busy or pool.started != started or any(h.current is not None for h in pool.helpers)


def when_drawn(fn: Callable, *args) -> None:
    """``fn(*args)`` here, once every figure queued so far is drawn: at once without helpers (a figure is
    drawn before :func:`draw` returns), else at the end of the next :func:`wait` that raises no figure's
    error. A block left by an error drops it, so it never sees a figure that was not drawn."""
    pool = _pool
    if pool is None:
        fn(*args)
        return
    with pool.lock:
        pool.finishers.append((fn, args))


def discard() -> None:
    """Drop the figures still queued and :func:`when_drawn`'s calls, and wait for the calls helpers are
    running: for work whose output is thrown away (a run folder removed after its set-up failed), so that
    no figure is written there afterwards. Without helpers every figure was drawn already."""
    pool = _pool
    if pool is not None:
        pool.discard()


def imported_packages() -> list[str]:
    """The top-level packages imported in this interpreter (``compute(imported_packages)`` asks a helper:
    a helper that imports torch has been handed a function from a module that needs it)."""
    return sorted({name.partition(".")[0] for name in list(sys.modules)})


def wait() -> None:
    """Wait for every call submitted so far; raise the first error (with the helper's traceback)."""
    pool = _pool
    if pool is not None:
        pool.wait()


def _close(cancel: bool) -> None:
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close(cancel=cancel)


def _plain(value):
    """Torch tensors to numpy arrays, through lists, tuples and dicts (a helper never imports torch)."""
    if type(value).__module__.startswith("torch") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (int, float, str)):  # a list of numbers or names: as it is
            return value
        items = [_plain(v) for v in value]
        return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _run(fn, args, kwargs, future: Future) -> None:
    try:
        future.set_result(_resolve(fn)(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
        future.set_exception(exc)


def _with_huge_pages(tunables: str) -> str:
    """glibc's tunables with ``glibc.malloc.hugetlb=1`` added (a value the user set stays): malloc asks for
    2 MiB pages where the kernel gives them on request (transparent huge pages in "madvise" mode; ignored
    elsewhere and by other C libraries). A figure fills tens of MB of fresh pixel buffers, and on a virtual
    machine their 4 KiB page faults cost more than the drawing: the first samples montage of a helper took
    1.2-1.3 s, 0.2 s with huge pages, as long as a second one. Only for helpers: the model's process ran
    slower with it (the kernel compacting memory for its allocations).

    Example:
        >>> _with_huge_pages(""), _with_huge_pages("glibc.malloc.hugetlb=0:glibc.cpu.x86_shstk=off")
        ('glibc.malloc.hugetlb=1', 'glibc.malloc.hugetlb=0:glibc.cpu.x86_shstk=off')
    """
    parts = [part for part in tunables.split(":") if part]
    if not any(part.startswith("glibc.malloc.hugetlb=") for part in parts):
        parts.append("glibc.malloc.hugetlb=1")
    return ":".join(parts)


# ----------------------------------------------------------------------------- the parent's side
class _Helper:
    """One child interpreter; it is given one call at a time, so that the calls still queued can be run by
    whoever is free first: the next idle helper, or the parent once it waits (:meth:`_Pool.wait`)."""

    def __init__(self, pool: "_Pool", preload: tuple[str, ...]):
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])  # this vislab, wherever it was imported from
        env["MPLBACKEND"] = "Agg"
        env["GLIBC_TUNABLES"] = _with_huge_pages(env.get("GLIBC_TUNABLES", ""))
        # a helper's numpy must not start a team of threads of its own next to torch's
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        self.pool = pool
        self.process = subprocess.Popen([sys.executable, "-m", "vislab.core.background", *preload],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.current: tuple | None = None  # the call it is running: (fn, args, kwargs, future)
        self.alive = True
        self.ready = False  # its imports done (its first frame says so)
        self.reader = threading.Thread(target=self._read, name="vislab-helper-reader", daemon=True)
        self.reader.start()

    def send(self, fn, args, kwargs, future: Future) -> bool:
        """Hand over one call (under the pool's lock); False when the helper is gone."""
        try:
            payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an argument that does not pickle: the parent runs the call
            return False
        try:
            self.process.stdin.write(_HEADER.pack(len(payload)) + payload)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.alive = False
            return False
        self.current = (fn, args, kwargs, future)
        return True

    def _read(self) -> None:
        while True:
            frame = _read_frame(self.process.stdout)
            if frame is None:
                break
            if not frame:  # "imported": the helper's preloads are done
                with self.pool.lock:
                    self.ready = True
                    self.pool.changed.notify_all()
                continue
            ok, value, text = pickle.loads(frame)
            with self.pool.lock:
                call, self.current = self.current, None
                self.pool.changed.notify_all()
            if call is not None:
                future = call[3]
                if ok:
                    future.set_result(value)
                else:
                    if text:
                        value.__cause__ = _RemoteTraceback(text)
                    future.set_exception(value)
            self.pool.dispatch()
        self.process.wait()
        with self.pool.lock:
            self.alive = False
            call, self.current = self.current, None
            self.pool.changed.notify_all()
        if call is not None and not call[3].done():  # it died under this call (killed, out of memory)
            self.pool.requeue(call)
        self.pool.dispatch()

    def close(self, cancel: bool) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if cancel:
            self.process.kill()
        self.reader.join()
        self.process.stdout.close()


class _Pool:
    def __init__(self, count: int, preload: tuple[str, ...]):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # a helper became ready, idle or gone
        self.holds = 0  # pauses in force: only waited-for calls are handed out
        self.started = 0  # calls handed to helpers so far
        self.queue: list = []  # heap of (priority, order, fn, args, kwargs, future)
        self.futures: list[Future] = []
        self.finishers: list[tuple] = []  # when_drawn's calls, for the end of the next clean wait()
        self.order = 0
        self.helpers = [_Helper(self, preload) for _ in range(count)]

    def submit(self, fn: Callable | str, args, kwargs, priority: int) -> Future:
        future: Future = Future()
        with self.lock:
            heapq.heappush(self.queue, (priority, self.order, fn, args, kwargs, future))
            self.order += 1
            if priority:  # a figure: wait() answers for it (a submitted call's caller waits for its own)
                self.futures.append(future)
        self.dispatch()
        return future

    def requeue(self, call: tuple) -> None:
        with self.lock:
            heapq.heappush(self.queue, (0, -1, *call))

    def dispatch(self) -> None:
        """Give each idle helper the next queued call; with no helper left, the parent runs them."""
        local = []
        with self.lock:
            for helper in self.helpers:
                while helper.alive and helper.current is None and self.queue and (
                        not self.holds or self.queue[0][0] == 0):
                    job = heapq.heappop(self.queue)
                    if helper.send(*job[2:]):
                        self.started += 1
                    else:
                        local.append(job)  # it does not pickle, or the helper is gone
            if not any(helper.alive for helper in self.helpers):
                local += [heapq.heappop(self.queue) for _ in range(len(self.queue))]
        for job in local:
            _run(*job[2:])

    def hold(self, change: int) -> None:
        with self.lock:
            self.holds = max(0, self.holds + change)
        self.dispatch()

    def idle(self) -> None:
        """Wait until every live helper has imported and holds no call."""
        with self.changed:
            self.changed.wait_for(lambda: all(not h.alive or (h.ready and h.current is None) for h in self.helpers))

    def discard(self) -> None:
        with self.changed:
            figures = [job for job in self.queue if job[0]]
            self.queue = [job for job in self.queue if not job[0]]
            heapq.heapify(self.queue)
            for job in figures:
                job[-1].cancel()
                self.futures.remove(job[-1])
            self.finishers.clear()
            self.changed.wait_for(lambda: all(not h.alive or h.current is None for h in self.helpers))

    def _take(self):
        """The last queued call: the helpers take from the front (the explanation panels and image grids,
        queued first: their large pixel buffers are cheap in a helper's huge pages), the parent from the
        back (the line plots: matplotlib alone, small buffers)."""
        with self.lock:
            if not self.queue:
                return None
            job = max(self.queue)
            self.queue.remove(job)
            heapq.heapify(self.queue)
            return job

    def wait(self) -> None:
        # the parent is idle now: it runs the calls no helper has taken yet, beside the helpers
        with self.lock:
            self.holds = 0
        self.dispatch()
        while (job := self._take()) is not None:
            _run(*job[2:])
        with self.lock:
            futures, self.futures = self.futures, []
            finishers, self.finishers = self.finishers, []
        first = None
        for future in futures:
            error = future.exception()
            if error is not None and first is None:
                first = error
        if first is not None:
            raise first
        for fn, args in finishers:
            fn(*args)

    def close(self, cancel: bool) -> None:
        try:
            if not cancel:
                self.wait()
        finally:
            for helper in self.helpers:
                helper.close(cancel)


def _read_frame(stream) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


# ----------------------------------------------------------------------------- the helper's side
def _serve(preload: list[str]) -> None:
    import importlib

    from vislab.core import collector

    collector.relax()  # its imports and figures: 0.2 s of the collector's scans at Python's thresholds
    # Ctrl-C reaches the whole process group: the parent stops the run, the helper just ends with its pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print() must not break the answers
    preload, imported = list(preload), False
    while True:
        if preload and not _call_waiting():  # idle: import what the next calls will need
            try:
                importlib.import_module(preload.pop(0))
            except ImportError:
                pass  # the call that needs it raises, in the parent
            continue
        if not preload and not imported:
            answers.write(_HEADER.pack(0))  # an empty frame: "imported"
            answers.flush()
            imported = True
        frame = _read_frame(sys.stdin.buffer)
        if frame is None:  # the parent is done: skip the interpreter's slow clean-up of its modules
            answers.flush()
            os._exit(0)
        try:
            fn, args, kwargs = pickle.loads(frame)
            answer = (True, _resolve(fn)(*args, **kwargs), "")
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            answer = (False, exc, traceback.format_exc())
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an answer that does not pickle goes back as text
            data = pickle.dumps((False, RuntimeError(repr(answer[1])), answer[2]))
        answers.write(_HEADER.pack(len(data)) + data)
        answers.flush()

def _call_waiting() -> bool:
    """Whether the parent has sent a call (it waits for the split before the figures' imports are done)."""
    try:
        import select

        return bool(select.select([sys.stdin.buffer], [], [], 0)[0])
    except (OSError, ValueError):  # no select() on pipes (Windows): import first
        return False


if __name__ == "__main__":
    try:
        _serve(sys.argv[1:])
    except (BrokenPipeError, KeyboardInterrupt, OSError):
        os._exit(0)  # the parent is gone: nothing to answer, nothing to print
