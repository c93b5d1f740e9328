"""The one thread of a process that runs torch on CPU (every engine's forwards: the bot's model and /compare's)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


class _TorchThread(ThreadPoolExecutor):
    """The one thread of this process that runs torch: every CPU engine's forwards (the bot's model and
    /compare's) go through it; loading runs on a thread of its own, which ends. On CPU each thread that runs
    torch gets a team of OpenMP threads, and once two teams exist there are more OpenMP threads than cores:
    libgomp then stops spinning between parallel regions and sleeps, and a bert-base forward of one sentence
    took twice as long (int8 17 -> 36 ms on 2 cores, after a second engine had answered once). Shared, so
    ``shutdown`` leaves it running (an engine closing must not stop the others)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


_torch_thread: _TorchThread | None = None


def torch_thread() -> ThreadPoolExecutor:
    global _torch_thread
    if _torch_thread is None:
        _torch_thread = _TorchThread(max_workers=1, thread_name_prefix="mlm-model")
    return _torch_thread
