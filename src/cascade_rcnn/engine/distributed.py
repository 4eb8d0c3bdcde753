"""torch.distributed set-up for ``torchrun``: NCCL on GPUs, gloo on CPU."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device: str) -> Context:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    # Rank 0 evaluates and writes checkpoints while the others wait: allow it an hour.
    dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    return Context(rank, world_size, chosen)


def stop(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather_lists(items: list, context: Context) -> list:
    """Concatenation of every rank's ``items`` (on every rank)."""
    if not context.distributed:
        return items
    gathered: list[list] = [[] for _ in range(context.world_size)]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def all_true(flag: bool, context: Context) -> bool:
    """True only if ``flag`` is true on every rank (used to stop all ranks together)."""
    if not context.distributed:
        return flag
    tensor = torch.tensor([0 if flag else 1], device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return int(tensor.item()) == 0


def sum_ints(values: list[int], context: Context) -> list[int]:
    """Element-wise sum over all ranks of a short list of counts (every rank gets the sums)."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.int64,
                          device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(context: Context) -> None:
    """Wait until every rank gets here."""
    if context.distributed:
        dist.barrier()


Result = TypeVar("Result")


def on_main(function: Callable[[], Result], context: Context) -> Result | None:
    """Run ``function`` on rank 0 only; if it fails, every rank raises instead of waiting forever
    in the next collective. Returns its result on rank 0, None elsewhere."""
    result, error = None, None
    if context.is_main:
        try:
            result = function()
        except Exception as caught:  # re-raised below, after telling the other ranks
            error = caught
    if not all_true(error is None, context):
        raise error if error is not None else RuntimeError("rank 0 failed; see its error")
    return result
