"""CUDA graphs for the encoder, over a grid of fixed (batch, length) buckets (``MODEL_CUDA_GRAPHS=1``).

An eager bert-base forward launches some 250 small kernels from Python; at batch 1 the GPU waits on the CPU
most of the time. A CUDA graph replays the whole encoder as one launch. Graphs need fixed shapes and fixed
memory, so each bucket owns static input buffers: a batch is copied into the smallest bucket that holds it,
padded with the pad token and a zero attention mask (padding rows attend to their first slot only, so no row
is all masked), the graph is replayed, and the real rows and columns of the static output are returned. The
MLM head, softmax and top-k stay eager: they run on the few mask rows only.

Padding a sentence with masked-out positions leaves its hidden states unchanged (up to the kernels' rounding):
``tests/engine/test_cuda_graphs.py`` checks the bucket padding against the unpadded forward on CPU, where the same
static buffers run eagerly (``capture=False``), and against the pipeline on CUDA when a GPU is present.

Buckets larger than ``max_tokens`` padded tokens are not captured (big batches are compute-bound: a graph
saves nothing there), and a batch that fits no bucket runs eagerly.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Sequence

import torch

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LENGTH_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
WARM_UP_RUNS = 2

EncoderFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Bucket:
    def __init__(self, batch: int, length: int, device: torch.device, pad_token_id: int) -> None:
        self.batch, self.length = batch, length
        self.ids = torch.full((batch, length), pad_token_id, dtype=torch.long, device=device)
        self.attention = torch.zeros((batch, length), dtype=torch.long, device=device)
        self.attention[:, 0] = 1
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None


class GraphedEncoder:
    """The encoder behind static-shape buckets; ``__call__`` returns hidden states for ``(ids, attention)``,
    or None when no bucket holds the batch (the caller then runs the encoder eagerly)."""

    def __init__(
        self,
        encoder: EncoderFn,
        *,
        device: torch.device,
        pad_token_id: int,
        max_length: int,
        max_batch: int,
        max_tokens: int,
        capture: bool = True,
        batch_buckets: Sequence[int] = BATCH_BUCKETS,
        length_buckets: Sequence[int] = LENGTH_BUCKETS,
    ) -> None:
        self.encoder = encoder
        self.device = device
        self.pad_token_id = pad_token_id
        self.capture = capture
        lengths = sorted({min(length, max_length) for length in length_buckets} | {max_length})
        self.lengths = [length for length in lengths if length <= max_length]
        batches = sorted({b for b in batch_buckets if b < max_batch} | {max_batch})
        self.batches = batches
        self.max_tokens = max_tokens
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self._pool = None

    @property
    def buckets(self) -> list[tuple[int, int]]:
        return sorted(self._buckets)

    def build(self) -> float:
        """Allocate every bucket and capture its graph (largest first, so the smaller ones reuse its memory
        pool). Returns the seconds it took. Call on the model thread, under ``torch.inference_mode``."""
        started = time.perf_counter()
        shapes = [(b, n) for b in self.batches for n in self.lengths if b * n <= self.max_tokens]
        if self.capture:
            self._pool = torch.cuda.graph_pool_handle()
        for batch, length in sorted(shapes, key=lambda s: s[0] * s[1], reverse=True):
            bucket = _Bucket(batch, length, self.device, self.pad_token_id)
            if self.capture:
                self._capture(bucket)
            self._buckets[(batch, length)] = bucket
        return time.perf_counter() - started

    def _capture(self, bucket: _Bucket) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(WARM_UP_RUNS):  # lets cuBLAS and SDPA pick and cache their kernels outside the capture
                self.encoder(bucket.ids, bucket.attention)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            bucket.output = self.encoder(bucket.ids, bucket.attention)
        bucket.graph = graph

    def bucket_for(self, batch: int, length: int) -> tuple[int, int] | None:
        """The smallest bucket that holds the batch, or None (any bigger one would be over the token budget too)."""
        b = bisect.bisect_left(self.batches, batch)
        n = bisect.bisect_left(self.lengths, length)
        if b == len(self.batches) or n == len(self.lengths):
            return None
        key = (self.batches[b], self.lengths[n])
        return key if key in self._buckets else None

    def __call__(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor | None:
        batch, length = ids.shape
        key = self.bucket_for(batch, length)
        if key is None:
            return None
        bucket = self._buckets[key]
        bucket.ids.fill_(self.pad_token_id)
        bucket.ids[:batch, :length].copy_(ids)
        bucket.attention.zero_()
        bucket.attention[:, 0] = 1
        bucket.attention[:batch, :length].copy_(attention)
        if bucket.graph is not None:
            bucket.graph.replay()
            output = bucket.output
        else:
            output = self.encoder(bucket.ids, bucket.attention)
        # A view of the static output: valid until the next call, which is on this same (model) thread after
        # the caller has gathered the mask rows from it.
        return output[:batch, :length]
