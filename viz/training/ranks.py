"""This process's place in a torch.distributed group, and Ctrl-C as a request between steps."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Ranks", "current_ranks", "stop_requests"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torch.distributed group (rank 0 of 1 when not distributed).

    The main process (rank 0) evaluates, checkpoints and publishes; every process trains on its
    slice of each batch, and DistributedDataParallel averages the gradients, so N processes
    with batch B compute the same update as one process with batch B.
    """

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: Any) -> Any:
        if self.world == 1:
            return model
        # deferred: torch is heavy
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def barrier(self) -> None:
        if self.world > 1:
            # deferred: torch is heavy
            import torch.distributed as dist

            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every process if `flag` is true on any (so all stop at the same step)."""
        if self.world == 1:
            return flag
        # deferred: torch is heavy
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: Any) -> float:
        if self.world == 1:
            return float(value.item())
        # deferred: torch is heavy
        import torch.distributed as dist

        total = value.clone().float()
        dist.all_reduce(total)
        return float(total.item()) / self.world


def current_ranks() -> Ranks:
    # deferred: torch is heavy
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


@contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C (SIGINT) into a request the loop honours between steps, so a checkpoint
    never holds half an optimizer step. A second Ctrl-C stops at once."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
