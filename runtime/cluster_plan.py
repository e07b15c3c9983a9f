"""How many cluster workers, on which nodes, with what share of each: one per GPU on GPU nodes, one per
CORES_PER_WORKER cores on CPU-only nodes, or `--workers N` spread over the nodes by what they hold.
Pure: no Ray here, so the arithmetic is tested without a cluster."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import DehazeError

CORES_PER_WORKER = 4  # a CPU worker's ONNX Runtime threads: fewer, larger workers waste less on model copies


@dataclass(frozen=True)
class Node:
    id: str
    address: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Slot:
    """One worker to start: the node it must run on and the Ray resources it asks for."""
    node: Node
    cpus: float
    gpus: float

    @property
    def threads(self) -> int:
        """ONNX Runtime CPU threads: the cores this worker was given, at least one."""
        return max(1, int(self.cpus))

    def describe(self) -> str:
        return f"{self.gpus:g} GPU" if self.gpus else f"{self.cpus:g} CPU"


def _share(capacity: float, count: int) -> float:
    """Ray takes fractions of a resource only below 1 (in steps of 1e-4); above, whole units."""
    share = capacity / count
    return float(math.floor(share)) if share >= 1 else math.floor(share * 1e4) / 1e4


def _spread(workers: int, capacity: list[float]) -> list[int]:
    """`workers` over nodes in proportion to capacity (largest remainder), so no node is left idle first."""
    total = sum(capacity)
    exact = [workers * c / total for c in capacity]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)[:workers - sum(counts)]:
        counts[i] += 1
    return counts


def plan_workers(nodes: list[Node], workers: int | None = None, use_gpus: bool = True,
                 cores_per_worker: int = CORES_PER_WORKER) -> list[Slot]:
    """The workers to start on `nodes`: GPU nodes only when there are any (and `use_gpus`), else CPU nodes."""
    gpu_nodes = [n for n in nodes if n.gpus >= 1] if use_gpus else []
    used = gpu_nodes or [n for n in nodes if n.cpus > 0]
    if not used:
        raise DehazeError("the Ray cluster has no node with a CPU or GPU to run workers on")
    capacity = [n.gpus if gpu_nodes else n.cpus for n in used]
    if workers is None:
        counts = [int(c) if gpu_nodes else max(1, int(c // cores_per_worker)) for c in capacity]
    else:
        counts = _spread(workers, capacity)
    slots = []
    for node, cap, count in zip(used, capacity, counts):
        for _ in range(count):
            if gpu_nodes:  # a GPU worker decodes and encodes on its CPU share
                slots.append(Slot(node, cpus=min(1.0, _share(node.cpus, count)), gpus=_share(cap, count)))
            else:
                slots.append(Slot(node, cpus=_share(cap, count), gpus=0.0))
    return slots
