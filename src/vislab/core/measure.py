"""Speed choices made by timing the real work, not by reading CPU flags.

Whether bf16 autocast pays depends on the CPU: on one 2-core AMD EPYC a bf16 matmul ran
2.9x faster than fp32, on a 2-core Intel Xeon with the AVX512-BF16 flag it ran 0.57x as
fast (PyTorch issues #86270 and #118499 report the same). So under
``--precision auto`` the training loop, the predictor and feature extraction time the
actual model's step at the actual batch size in each candidate configuration and keep
the fastest:

- the candidates are fp32 and bf16 (fp16 too on GPUs), each with channels_last and
  with contiguous memory where the model has convolutions (:func:`candidates`);
- reduced precision must beat the best fp32 configuration by :data:`MARGIN` (10 %), or
  fp32 stays: a small gain is not worth the rounding (:func:`choose`);
- the intra-op thread count is timed the same way where the data loader needs a core
  (the physical core count against one fewer, :func:`thread_candidates`).

The candidates are timed in alternating rounds and each keeps its fastest step
(:data:`ROUNDS`): another program taking the cores for a moment slows whichever step
runs then, and the minimum of interleaved steps is what the kernels can do. While the
probe runs, :class:`OtherLoad` reads how much of the machine other programs used; a
choice measured while they held more than :data:`BUSY_SHARE` of it says so, and is
measured again on the next run instead of being reused (:func:`cached_measure`).

A probe costs a few steps per candidate, once: its result is cached per (CPU model or
GPU name, the kernels' instruction set, torch version, model, input shape, batch size,
task, step kind, threads) in ``$VISLAB_CACHE/choices.json`` (default
``~/.cache/vislab/choices.json``; :class:`ChoiceCache`). The instruction set is what the
kernels really use (:func:`kernel_isa`: ATen's capability and oneDNN's ISA limit), not
the CPU's flags: ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` turns an
AVX512-BF16 CPU into an AVX2 one, where bf16 runs 5x slower than fp32 instead of tying.
The training loop checks the choice against its first epoch's real steps and measures
again when they disagree (:func:`disagrees`). ``--precision fp32|bf16`` forces a choice
and measures nothing.

Example:
    >>> fp32, bf16 = Candidate("fp32", True), Candidate("bf16", True)
    >>> choice = choose({fp32: 0.010, bf16: 0.016})   # bf16 measured slower: fp32 stays
    >>> choice.precision, choice.describe(cpu="Intel Xeon")
    ('fp32', 'precision fp32, channels_last (bf16 measured 0.62x on Intel Xeon)')
    >>> choose({fp32: 0.010, bf16: 0.0095}).precision   # 1.05x is inside the margin
    'fp32'
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vislab.core.background import quiet
from vislab.core.files import cache_dir, written_whole

#: reduced precision must be at least this much faster (speed-up >= 1 + MARGIN) to replace fp32
MARGIN = 0.10
#: probe budget per candidate: at least MIN_STEPS timed steps, more while under MIN_SECONDS
WARMUP_STEPS = 2
MIN_STEPS = 3
MAX_STEPS = 8
MIN_SECONDS = 0.25
#: a training probe must pay for itself: a run of fewer steps than this many times the probe's least
#: (WARMUP_STEPS + MIN_STEPS per candidate) trains in fp32 unmeasured (a cached choice is still used).
#: ResNet-18 at 224 px on 200 images: 4 steps of 12 s each, where the probe took over 5 minutes
PAYS_OFF = 10
#: the candidates are timed in this many alternating rounds; each keeps its fastest step
ROUNDS = 3
#: later rounds time this many steps per candidate (after one untimed step)
ROUND_STEPS = 2
#: other programs using more than this share of the machine during a probe make it "busy":
#: its choice is used, said to be unsure, and measured again next time instead of reused
BUSY_SHARE = 0.25
#: a real training step this many times slower than the probe's step of the same configuration
#: means the probe did not see what training sees (a busy machine, another data path): measure again
DISAGREE_FACTOR = 1.5
#: a candidate with a step (after the kernel-building first call) this many times the best so far
#: is not timed further (fp16 on a CPU, emulated bf16); one more such step in the next round drops
#: its precision. One slow step alone does not: a burst of another program's work made bf16 look
#: 9x slower than fp32 once, on a CPU where it trains 1.5x faster
GIVE_UP_FACTOR = 2.0
#: images an inference probe (the Predictor's, feature extraction's) times: a slice of the first batch.
#: The ranking of the candidates is the same, and a probe of a whole 256-image batch cost minutes
#: (EfficientNet-Lite1 at 240 px, bf16 emulated at 110 s a step on a CPU without it, to evaluate
#: 500 images that take 20 s)
PROBE_IMAGES = 16
#: 2: the key names the kernels' ISA, not the CPU flags; 3: a precision is dropped after two slow steps, not one
CACHE_VERSION = 3
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Candidate:
    """One configuration to time: a precision (fp32, bf16, fp16) and a memory format."""

    precision: str
    channels_last: bool

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: plain fp32)."""
        return _DTYPES[self.precision]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def label(self) -> str:
        return f"{self.precision}/{'channels_last' if self.channels_last else 'contiguous'}"

    @classmethod
    def from_label(cls, label: str) -> "Candidate":
        precision, layout = label.split("/")
        return cls(precision, layout == "channels_last")


@dataclass
class Choice:
    """What a probe (or a flag, or a checkpoint) decided, and what was measured.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``fp16``.
        channels_last: the memory format of the model and its inputs.
        threads: the intra-op thread count to set (None: leave PyTorch's).
        seconds: seconds per step of every timed candidate, by label (``bf16/channels_last``).
        source: ``measured``, ``cache`` (measured earlier, same key), ``forced`` (a flag),
            ``resumed`` (a checkpoint's), ``flags`` (an old run's flag-based choice) or ``short``
            (a run too short for a probe to pay: :func:`probe_pays`).
        device: the CPU model or GPU name the timings come from.
        kind: ``train`` (forward, backward, optimizer) or ``infer`` (forward only).
    """

    precision: str = "fp32"
    channels_last: bool = True
    threads: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    thread_seconds: dict[str, float] = field(default_factory=dict)
    source: str = "forced"
    device: str = ""
    kind: str = "train"
    #: the share of the machine other programs used while this was measured (None: not measured)
    others: float | None = None

    @property
    def busy(self) -> bool:
        """Measured while other programs held more than :data:`BUSY_SHARE` of the machine."""
        return self.others is not None and self.others > BUSY_SHARE

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.precision, self.channels_last)

    @property
    def dtype(self) -> torch.dtype | None:
        return self.candidate.dtype

    @property
    def memory_format(self) -> torch.memory_format:
        return self.candidate.memory_format

    @property
    def label(self) -> str:
        return self.candidate.label

    def _best(self) -> dict[str, float]:
        """Each timed precision's fastest step, either layout (``inf``: none of its steps ran)."""
        best: dict[str, float] = {}
        for label, seconds in self.seconds.items():
            precision = label.split("/")[0]
            best[precision] = min(seconds, best.get(precision, float("inf")))
        return best

    def speedups(self) -> dict[str, float]:
        """Each timed precision's best speed against fp32's best (1.6 = 1.6x as fast as fp32)."""
        best = self._best()
        if "fp32" not in best:
            return {}
        return {p: best["fp32"] / s for p, s in best.items() if p != "fp32" and 0 < s < float("inf")}

    def failed(self) -> list[str]:
        """The precisions none of whose steps ran (an operation without a kernel for that dtype)."""
        return sorted(p for p, s in self._best().items() if s == float("inf"))

    def describe(self, cpu: str | None = None) -> str:
        """One line for the console, config.yaml and model.json, e.g.
        ``precision fp32, channels_last (bf16 measured 0.62x on Intel Xeon)``."""
        text = f"precision {self.precision}, {'channels_last' if self.channels_last else 'contiguous'}"
        where = cpu or self.device or "this device"
        measured = [f"{p} measured {s:.2f}x" for p, s in sorted(self.speedups().items())]
        measured += [f"{p} failed to run" for p in self.failed()]
        notes = []
        if measured:
            notes.append(", ".join(measured) + f" on {where}" + (" (cached)" if self.source == "cache" else ""))
        elif self.source == "forced":
            notes.append("forced by --precision")
        elif self.source == "resumed":
            notes.append("the checkpoint's")
        elif self.source == "flags":
            notes.append("chosen from the device's flags")
        elif self.source == "short":
            notes.append("not measured: a run this short would spend longer timing the precisions than training")
        elif self.source == "features":
            notes.append("the head trains on cached features; their extraction makes its own choice")
        if self.busy:
            notes.append(f"measured while other programs used {self.others:.0%} of the CPU: not reused, "
                         "measured again next run")
        if self.threads is not None:
            timed = ""
            if len(self.thread_seconds) > 1:
                timed = " (" + ", ".join(f"{n}: {s * 1000:.1f} ms a step" for n, s in
                                          sorted(self.thread_seconds.items(), key=lambda item: int(item[0]))) + ")"
            notes.append(f"threads {self.threads}{timed}")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def to_dict(self) -> dict:
        return {"precision": self.precision, "channels_last": self.channels_last, "threads": self.threads,
                "seconds_per_step": {k: round(v, 6) for k, v in self.seconds.items()},
                "thread_seconds_per_step": {str(k): round(v, 6) for k, v in self.thread_seconds.items()},
                "speedups": {k: round(v, 3) for k, v in self.speedups().items()},
                "source": self.source, "device": self.device, "kind": self.kind,
                "others_load": None if self.others is None else round(self.others, 3), "summary": self.describe()}

    @classmethod
    def from_dict(cls, data: dict) -> "Choice":
        precision = data.get("precision", "fp32")
        if precision not in _DTYPES:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(_DTYPES)}")
        return cls(precision=precision, channels_last=bool(data.get("channels_last", True)),
                   threads=data.get("threads"),
                   seconds={k: float(v) for k, v in (data.get("seconds_per_step") or {}).items()},
                   thread_seconds={int(k): float(v) for k, v in (data.get("thread_seconds_per_step") or {}).items()},
                   source=data.get("source", "forced"), device=data.get("device", ""), kind=data.get("kind", "train"),
                   others=data.get("others_load"))


# --------------------------------------------------------------------------- the decision
def choose(seconds: dict[Candidate, float], margin: float = MARGIN, kind: str = "train",
           device: str = "") -> Choice:
    """The fastest candidate, except that reduced precision must win by ``margin`` over fp32.

    Args:
        seconds: seconds per step for each timed candidate (``inf`` for one abandoned).
        margin: the speed-up over the best fp32 candidate a bf16/fp16 one needs (0.1: 1.1x).

    Example:
        >>> t = {Candidate("fp32", False): 0.02, Candidate("fp32", True): 0.012,
        ...      Candidate("bf16", True): 0.006}
        >>> choose(t).label
        'bf16/channels_last'
    """
    if not seconds:
        raise ValueError("choose() needs at least one timed candidate")
    fp32 = {c: s for c, s in seconds.items() if c.precision == "fp32"}
    reduced = {c: s for c, s in seconds.items() if c.precision != "fp32"}
    best = min(fp32, key=fp32.get) if fp32 else None
    if reduced:
        fastest = min(reduced, key=reduced.get)
        if best is None or (reduced[fastest] > 0 and fp32[best] / reduced[fastest] >= 1 + margin):
            best = fastest
    return Choice(best.precision, best.channels_last, seconds={c.label: s for c, s in seconds.items()},
                  source="measured", device=device, kind=kind)


def candidates(device: torch.device, has_conv: bool) -> list[Candidate]:
    """fp32 and bf16 (and fp16 on a GPU), each in both memory formats where the model convolves.

    fp16 is never a CPU candidate: without native fp16 kernels it runs many times slower
    than fp32 there (:func:`fp16_on_cpu_reason`).
    """
    precisions = ["fp32", "bf16"]
    if device.type == "cuda":
        precisions.append("fp16")
    elif device.type not in ("cpu",):
        precisions = ["fp32"]  # MPS and others: no probe of reduced precision
    layouts = (True, False) if has_conv else (False,)
    return [Candidate(p, layout) for p in precisions for layout in layouts]


def has_convolutions(model: torch.nn.Module) -> bool:
    """Whether memory format can matter: any 2-D convolution (channels_last is for those)."""
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) and m.weight.dim() == 4 for m in model.modules())


def fp16_on_cpu_reason() -> str:
    return ("fp16 on a CPU has no native kernels for most operations: PyTorch emulates it and a training "
            "step runs several times slower than fp32 (3.4x for the seed convnet on a 2-core AMD EPYC, about "
            "100x on a 2-core Intel Xeon; benchmarks/bench_precision_choice.py measures it); "
            "use --precision auto (measured), fp32 or bf16 on a CPU, fp16 on a GPU")


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step: Callable[[], object], device: torch.device = torch.device("cpu"),
              warmup: int = WARMUP_STEPS, min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS,
              min_seconds: float = MIN_SECONDS, give_up_after: float | None = None, **_) -> float:
    """The fastest of ``step()``'s timed calls after ``warmup`` untimed ones. The minimum, not the
    median: another program can only add time to a step. A call after the first that takes over
    ``give_up_after`` ends the timing and its time is returned: a candidate that slow has lost
    already. The first call never decides that: it builds or loads kernels (oneDNN's, CUDA's
    lazily loaded modules, cuDNN's heuristics), a one-time cost that on a GPU is many times a
    small model's step."""
    for index in range(warmup):
        start = time.perf_counter()
        step()
        _sync(device)
        elapsed = time.perf_counter() - start
        if index > 0 and give_up_after is not None and elapsed > give_up_after:
            return elapsed
    times: list[float] = []
    spent = 0.0
    while len(times) < max_steps and (len(times) < min_steps or spent < min_seconds):
        start = time.perf_counter()
        step()
        _sync(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if give_up_after is not None and elapsed > give_up_after:
            break
    return min(times)


class OtherLoad:
    """The share of the machine's CPU time that other programs used while the block ran.

    Read from ``/proc/stat`` (all CPUs: busy and steal time) less this process's own time
    (``/proc/self/stat``), over the block's wall time and every CPU; ``share`` stays None
    where those files are missing or the block was too short to tell (under 20 clock ticks).

    Example:
        >>> with OtherLoad() as load:
        ...     pass
        >>> load.share is None or 0.0 <= load.share <= 1.0
        True
    """

    def __init__(self):
        self.share: float | None = None
        self._start = None

    @staticmethod
    def _read() -> tuple[int, int, int] | None:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
            mine = int(own[11]) + int(own[12])  # utime, stime: fields 14 and 15 of proc(5)
        except (OSError, ValueError, IndexError):
            return None
        total = sum(values)  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        return total - idle, total, mine

    def __enter__(self) -> "OtherLoad":
        self._start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        end = self._read()
        if self._start is None or end is None:
            return
        busy, total, mine = (b - a for a, b in zip(self._start, end))
        if total >= 20:
            self.share = min(1.0, max(0.0, (busy - mine) / total))


def measure(make_step: Callable[[Candidate], Callable[[], object]], options: Iterable[Candidate],
            device: torch.device, kind: str = "train", margin: float = MARGIN,
            timer: Callable[..., float] | None = None, rounds: int = ROUNDS) -> Choice:
    """Time ``make_step(candidate)()`` for each candidate in alternating rounds and :func:`choose`.

    ``make_step`` is called at the start of each candidate's turn and returns the step to time
    (it builds or re-selects what the candidate needs: a model copy in its memory format, an
    optimiser). The first round warms each candidate up and times it (:func:`time_step`); a
    precision with a step :data:`GIVE_UP_FACTOR` slower than the best so far is suspect: its
    other layout is skipped, and the next round times one more step of it, in its turn. Slow
    again, the precision is dropped; otherwise the slow step was another program's burst, and
    the precision is timed like the others (its skipped layout too). The later rounds time the
    candidates still within 1.25x of their precision's best again, in turn, and each keeps its
    fastest step: a burst of another program's work slows one turn, not the choice. A candidate
    that raises (an operation without a bf16 kernel) is recorded as infinitely slow. The global
    RNG is restored afterwards, so a probe before training leaves dropout's stream as it was;
    the share of the CPU other programs took meanwhile is recorded (:class:`OtherLoad`).
    """
    timer = timer or time_step  # looked up here: tests inject timings by replacing time_step
    options = list(options)
    seconds: dict[Candidate, float] = {}
    suspect: set[str] = set()  # precisions one step GIVE_UP_FACTOR slower: timed once more before dropped
    lost: set[str] = set()  # precisions slow twice, in two rounds: not timed again
    devices = [device.index or 0] if device.type == "cuda" else []
    # a run's helper interpreters hold their figures meanwhile (vislab.core.background.quiet): a probe
    # times this process, not this process beside a helper drawing
    with quiet(), OtherLoad() as load, torch.random.fork_rng(devices=devices):
        for round_index in range(max(1, rounds)):
            if round_index == 0:
                turn = options
            else:
                best_of = {}
                for c, s in seconds.items():
                    best_of[c.precision] = min(s, best_of.get(c.precision, float("inf")))
                turn = [c for c in options if c.precision not in lost and (
                        # a layout skipped while its precision was suspect, now cleared
                        c not in seconds and c.precision not in suspect
                        or c in seconds and seconds[c] != float("inf") and seconds[c] <= 1.25 * best_of[c.precision])]
                if len(turn) < 2:
                    break  # one candidate left: nothing to compare again
            for candidate in turn:
                confirming = candidate.precision in suspect
                if candidate.precision in lost or (confirming and round_index == 0):
                    continue  # round 0: one slow layout stands for its precision until confirmed
                best = min((s for c, s in seconds.items() if c.precision not in suspect), default=None)
                timed_against_best = (round_index == 0 or confirming) and best not in (None, float("inf"))
                give_up = best * GIVE_UP_FACTOR if timed_against_best else None
                if round_index == 0:
                    steps = {}
                elif confirming:  # its kernels are built: one step says whether it is still that slow
                    steps = {"warmup": 0, "min_steps": 1, "max_steps": 1, "min_seconds": 0.0}
                else:
                    steps = {"warmup": 1, "min_steps": ROUND_STEPS, "max_steps": ROUND_STEPS, "min_seconds": 0.0}
                try:
                    elapsed = timer(make_step(candidate), device, give_up_after=give_up, label=candidate.label,
                                    **steps)
                except (RuntimeError, NotImplementedError):
                    elapsed = float("inf")
                seconds[candidate] = min(elapsed, seconds.get(candidate, float("inf")))
                if elapsed == float("inf"):  # failed to run: never timed again, nor (after the first) its other layout
                    if give_up is not None:
                        lost.add(candidate.precision)
                    continue
                if give_up is not None and elapsed > give_up:
                    (lost if confirming else suspect).add(candidate.precision)
                elif confirming:
                    suspect.discard(candidate.precision)  # the slow step was a burst of other work
    finite = {c: s for c, s in seconds.items() if s != float("inf")}
    choice = choose(finite or {Candidate("fp32", False): 0.0}, margin, kind, device_name(device))
    choice.seconds = {c.label: s for c, s in seconds.items()}
    choice.others = load.share
    return choice


def probe_pays(work: int, options: Iterable[Candidate], per_step: int = 1) -> bool:
    """Whether a job of ``work`` units is long enough to time ``options`` first: it has at least
    :data:`PAYS_OFF` times the probe's least work (:data:`WARMUP_STEPS` + :data:`MIN_STEPS` steps of
    ``per_step`` units per candidate; the later rounds add more). Training counts optimizer steps; an
    inference job counts images, its probe's steps ``per_step`` images each. A shorter job runs in fp32:
    the probe of a large model for a few images took longer than the job.

    Example:
        >>> probe_pays(150, [Candidate("fp32", False), Candidate("bf16", False)])
        True
        >>> probe_pays(150, candidates(torch.device("cpu"), has_conv=True))
        False
        >>> probe_pays(2, candidates(torch.device("cpu"), has_conv=True), per_step=2)
        False
    """
    return work >= PAYS_OFF * len(list(options)) * (WARMUP_STEPS + MIN_STEPS) * per_step


def unmeasured(key: str, device: torch.device, channels_last: bool, kind: str) -> Choice:
    """The choice of a job too short for a probe to pay (:func:`probe_pays`): a choice measured earlier for
    ``key`` (free to use), else fp32 in ``channels_last``'s memory format, kept nowhere."""
    return cached_measure(key, lambda: Choice("fp32", channels_last, source="short", device=device_name(device),
                                              kind=kind), keep=False)


def measure_forward(model: torch.nn.Module, x: torch.Tensor, device: torch.device,
                    forward: Callable[[torch.Tensor, torch.dtype | None], object], task: str,
                    options: Iterable[Candidate] | None = None, images: int | None = None,
                    **key_fields) -> Choice:
    """The inference probe: the fastest forward pass of ``model`` for batches shaped like ``x``
    (cached), timed on its first :data:`PROBE_IMAGES` images. The predictor (predict, segment,
    serve, explain, evaluate) and feature extraction use it; training times its own step with
    :func:`measure`.

    Args:
        forward: ``forward(x, dtype)`` runs the model on ``x`` under autocast to ``dtype`` (None:
            fp32); the probe sets the model's and the input's memory format for each candidate.
        task: the cache key's task field (``classification``, ``features``, ...).
        options: the candidates (default: :func:`candidates` for this device and model).
        images: how many images the job will answer (None: not known, e.g. a server); a job too
            short for the probe to pay (:func:`probe_pays`) runs in fp32, or in an earlier choice.
        key_fields: more of what the timing depends on (test-time flips, the architecture).
    """
    x = x[:PROBE_IMAGES]
    key = cache_key(device, model_signature(model), tuple(x.shape), len(x), task, "infer", **key_fields)

    def make_step(candidate: Candidate):
        with torch.inference_mode(False):  # weights re-made in inference mode could not train later
            model.to(memory_format=candidate.memory_format)
        moved = x.contiguous(memory_format=candidate.memory_format)
        return lambda: forward(moved, candidate.dtype)

    chosen = list(options) if options is not None else candidates(device, has_convolutions(model))
    if images is not None and not probe_pays(images, chosen, per_step=len(x)):
        return unmeasured(key, device, channels_last=True, kind="infer")
    return cached_measure(key, lambda: measure(make_step, chosen, device, kind="infer"))


def disagrees(choice: Choice, real_seconds: float, factor: float = DISAGREE_FACTOR) -> bool:
    """Whether a real step of ``choice``'s configuration took ``factor`` times what its probe
    measured: then the probe saw another machine than training does (other programs took the
    cores while one of them ran, or the cache holds another machine's answer), and the choice is
    measured again. Forced, resumed and unmeasured choices never disagree."""
    probe = choice.seconds.get(choice.label)
    if choice.source not in ("measured", "cache") or not probe or probe == float("inf"):
        return False
    return real_seconds > factor * probe


# --------------------------------------------------------------------------- threads
def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads not counted)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cores, physical, core = set(), None, None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                physical = line.split(":", 1)[1].strip()
            elif line.startswith("core id"):
                core = line.split(":", 1)[1].strip()
            elif not line.strip() and core is not None:
                cores.add((physical, core))
                core = None
        if core is not None:
            cores.add((physical, core))
        if cores:
            return max(1, min(usable, len(cores)))
    except OSError:
        pass
    return max(1, usable)


def thread_candidates(loader_needs_core: bool) -> list[int]:
    """The physical core count, and one fewer when a data-loader worker needs a core."""
    cores = physical_cores()
    return [cores, cores - 1] if loader_needs_core and cores > 1 else [cores]


def threads_pinned() -> bool:
    """Whether the user set the thread count (OMP_NUM_THREADS / MKL_NUM_THREADS): then it is kept."""
    return any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))


def measure_threads(step: Callable[[], object], options: list[int], device: torch.device,
                    timer: Callable[..., float] | None = None, rounds: int = ROUNDS) -> tuple[int, dict[int, float]]:
    """The fastest thread count for ``step``, timed in alternating rounds (each count keeps its
    fastest step; fewer threads must win by MARGIN to be kept: the loader's core is what the
    smaller count is for). Restores PyTorch's setting."""
    timer = timer or time_step
    before = torch.get_num_threads()
    timings: dict[int, float] = {}
    try:
        with quiet(), torch.random.fork_rng(devices=[]):
            for round_index in range(max(1, rounds) if len(options) > 1 else 1):
                for count in options:
                    torch.set_num_threads(count)
                    steps = {} if round_index == 0 else {"warmup": 1, "min_steps": ROUND_STEPS,
                                                         "max_steps": ROUND_STEPS, "min_seconds": 0.0}
                    timings[count] = min(timer(step, device, **steps), timings.get(count, float("inf")))
    finally:
        torch.set_num_threads(before)
    best = options[0]
    for count in options[1:]:
        if timings[count] * (1 + MARGIN) <= timings[best]:
            best = count
    return best, timings


# --------------------------------------------------------------------------- the cache
def device_name(device: torch.device) -> str:
    """The CPU model (``lscpu``'s "Model name") or the GPU's name."""
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            return "cuda"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or device.type


#: CPU flags that change which precision wins; in the cache key because a model name alone does not
#: tell VMs apart ("AMD EPYC" names both a Zen 3 without AVX-512 and a Zen 4 with AVX512-BF16)
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "avx_vnni")


def cpu_features() -> list[str]:
    """The CPU flags among :data:`_ISA_FLAGS` that this CPU has."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in _ISA_FLAGS if f in flags]
    except OSError:
        pass
    return [platform.machine()]


def kernel_isa() -> dict[str, str]:
    """The instruction sets the CPU kernels use, which limits can lower below what the CPU has.

    ``aten``: ATen's vectorised kernels (``torch.backends.cpu.get_cpu_capability()``, lowered by
    ``ATEN_CPU_CAPABILITY``); ``onednn``: oneDNN's limit (``ONEDNN_MAX_CPU_ISA`` or its old name
    ``DNNL_MAX_CPU_ISA``; ``ALL`` when unset, meaning the best the CPU has).

    Example:
        >>> sorted(kernel_isa())
        ['aten', 'onednn']
    """
    try:
        aten = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        aten = platform.machine()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    return {"aten": str(aten), "onednn": onednn.strip().upper()}


def describe_isa() -> str:
    """One short text for a benchmark line or a log: ``AVX512 kernels, oneDNN ALL (avx512_bf16 ...)``."""
    isa = kernel_isa()
    return f"ATen {isa['aten']}, oneDNN {isa['onednn']} (CPU flags: {' '.join(cpu_features())})"


def cache_path() -> Path:
    """``$VISLAB_CACHE/choices.json`` (default ``~/.cache/vislab/choices.json``)."""
    return cache_dir() / "choices.json"


def cache_key(device: torch.device, model: str, input_shape, batch_size: int, task: str, kind: str,
              threads: int | None = None, **more) -> str:
    """The cache key: what the timing depends on. ``model`` names the architecture and its
    options (a hash of the model's repr serves: it lists every layer's shape). On a CPU it
    names the kernels' instruction sets (:func:`kernel_isa`) besides the CPU's flags: under
    ``ONEDNN_MAX_CPU_ISA`` the flags stay the same while the kernels change."""
    cpu = device.type == "cpu"
    fields = {"v": CACHE_VERSION, "device": device_name(device), "isa": cpu_features() if cpu else None,
              "kernels": kernel_isa() if cpu else None, "torch": torch.__version__, "model": model,
              "input": list(input_shape), "batch": int(batch_size), "task": task, "kind": kind,
              "threads": threads if threads is not None else torch.get_num_threads(), **more}
    return json.dumps(fields, sort_keys=True, default=str)


def model_signature(model: torch.nn.Module) -> str:
    """A short, stable name for an architecture: the module tree with every layer's shapes."""
    return type(model).__name__ + ":" + hashlib.sha256(repr(model).encode()).hexdigest()[:16]


class ChoiceCache:
    """Measured choices in one JSON file; an unreadable file is treated as empty (and rewritten).

    Example:
        >>> import tempfile
        >>> cache = ChoiceCache(Path(tempfile.mkdtemp()) / "choices.json")
        >>> cache.put("k", Choice("bf16", True, source="measured"))
        >>> cache.get("k").precision, cache.get("k").source
        ('bf16', 'cache')
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else cache_path()

    def _read(self) -> dict:
        from vislab.core.files import BadFileError, read_json

        try:
            data = read_json(self.path, "the speed-choice cache (JSON)", "delete it; it is measured again")
        except BadFileError:  # a missing or damaged cache only means measuring again
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Choice | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            choice = Choice.from_dict(entry)
        except (TypeError, ValueError):
            return None
        choice.source = "cache"
        return choice

    def put(self, key: str, choice: Choice) -> None:
        data = self._read()
        data[key] = {**choice.to_dict(), "source": "measured", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
        try:
            with written_whole(self.path) as tmp:  # two runs writing at once never leave half a file
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only home: the choice is still used, only measured again next time


def cached_measure(key: str, run: Callable[[], Choice], cache: ChoiceCache | None = None,
                   fresh: bool = False, keep: bool = True) -> Choice:
    """The cached choice for ``key``, or ``run()``'s (then cached, unless ``keep`` is False: a choice that
    measured nothing, :func:`unmeasured`).

    A choice measured on a quiet machine is reused, so the same seed gives the same run on
    this machine. One measured while other programs held more than :data:`BUSY_SHARE` of the
    CPU is stored with that load and its console line says so, but it is measured again next
    time rather than reused: a choice made under load is often the wrong one for a quiet
    machine. ``fresh`` measures again whatever the cache holds (the training loop does when a
    real epoch disagrees with the probe) and replaces the entry.
    """
    cache = cache or ChoiceCache()
    found = None if fresh else cache.get(key)
    if found is not None and not found.busy:
        return found
    choice = run()
    if keep:
        cache.put(key, choice)
    return choice
