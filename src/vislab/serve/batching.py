"""Dynamic batching: images of concurrent requests go through one forward.

The first image to arrive waits at most ``max_wait`` seconds for others; a batch holds at
most ``max_batch`` images. While a forward runs (in the single inference thread), new
images queue up and form the next batch, so under load batches fill without waiting.
Images of different sizes in one batch are grouped by size, one forward per group, the
way ``vislab predict`` groups a folder: the answers are the ones predict gives.
The queue is bounded (``max_queue`` images): beyond it, :class:`QueueFull`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import torch


class QueueFull(Exception):
    pass


class Batcher:
    def __init__(self, max_batch: int = 32, max_wait: float = 0.005, max_queue: int = 256, on_batch=None):
        self.max_batch, self.max_wait, self.max_queue = max(1, int(max_batch)), max(0.0, max_wait), max_queue
        self.on_batch = on_batch or (lambda size: None)
        # one thread runs every forward (and Grad-CAM): the model is never used by two threads at once
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vislab-infer")
        self.predictor = None
        self.pending = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The task's outputs for each uint8 (C, H, W) image, computed in shared batches."""
        if self.pending + len(images) > self.max_queue:
            raise QueueFull(f"{self.pending} images are waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures):
            self._queue.put_nowait((image, future))
        self.pending += len(images)
        return list(await asyncio.gather(*futures))

    async def call(self, fn, *args):
        """Run ``fn(*args)`` in the inference thread (between forwards)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:  # whatever is queued already joins at once
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            self.pending -= len(batch)
            live = [(image, future) for image, future in batch if not future.done()]  # timed-out ones are cancelled
            if not live:
                continue
            try:
                outputs = await self.call(self._forward, [image for image, _ in live])
            except Exception as exc:  # reported to each request of the batch; the loop keeps serving
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.on_batch(len(live))
            for (_, future), output in zip(live, outputs):
                if not future.done():
                    future.set_result(output)

    def _forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.predictor.outputs_each(images)  # grouped by size, as `vislab predict` groups a folder
