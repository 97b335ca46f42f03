"""The process group of a `torchrun` launch: which rank this is, how many there are, and a barrier.

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `python run.py` sets none of them and is rank 0 of 1,
with no process group at all. The group uses NCCL when CUDA is available and gloo otherwise (CPU runs, tests).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# Ranks wait at a barrier while the slowest rank finishes its share of a benchmark, which can take hours; a rank
# that dies makes torchrun stop the others, so a long timeout does not hide a hang.
BARRIER_TIMEOUT = timedelta(hours=12)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class Ranks:
    """This process's place in the launch.

    Args:
        rank (`int`): global rank, 0 .. world_size - 1.
        world_size (`int`): number of processes.
        local_rank (`int`): rank on this machine, which picks the GPU.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Waits for every rank; a no-op in a single process."""
        if self.world_size > 1:
            dist.barrier()


def init_ranks() -> Ranks:
    """Reads the torchrun environment and joins the process group when there is more than one process.

    Raises:
        ValueError: RANK/WORLD_SIZE/LOCAL_RANK are not integers, or RANK is outside [0, WORLD_SIZE).
    """
    ranks = Ranks(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size:
        raise ValueError(f"RANK={ranks.rank} and WORLD_SIZE={ranks.world_size} do not describe a valid launch")
    if ranks.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
    return ranks


def launch_token(ranks: Ranks) -> str:
    """A random token shared by every rank of this launch (rank 0's), which tells its processes from others'."""
    token = [uuid.uuid4().hex]
    if ranks.world_size > 1:
        dist.broadcast_object_list(token, src=0)
    return token[0]


def close_ranks() -> None:
    """Leaves the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_model_kwargs(kwargs: dict[str, Any], ranks: Ranks) -> dict[str, Any]:
    """Model kwargs for this rank: on CUDA, without an explicit `device_map`, the whole model goes on GPU LOCAL_RANK.

    An explicit `device_map` (e.g. `"auto"` to spread a big model over several GPUs) is left as given; with more
    than one rank per machine, give each rank its own GPUs through CUDA_VISIBLE_DEVICES (see docs/results.md).
    """
    if "device_map" in kwargs or not torch.cuda.is_available():
        return dict(kwargs)
    return {**kwargs, "device_map": {"": ranks.local_rank}}
