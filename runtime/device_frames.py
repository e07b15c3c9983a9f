"""Frames handed over in GPU memory (`__cuda_array_interface__`): where they lie and which stream
must finish before anyone reads them. Pure functions over the interface dict, so a CPU checks them."""
from __future__ import annotations

import math
from dataclasses import dataclass

from cuda.bindings import runtime as cudart

from .errors import DehazeError

# The interface (v3) numbers the default streams as CUDA's handles do: cudaStreamLegacy, cudaStreamPerThread.
LEGACY_DEFAULT_STREAM = 1
PER_THREAD_DEFAULT_STREAM = 2
# TensorRT: "the pointer must have at least 256-byte alignment" (IExecutionContext::setTensorAddress).
ALIGNMENT = 256


@dataclass(frozen=True)
class DeviceFrames:
    """A C-contiguous uint8 H x W x 3 or N x H x W x 3 array in device memory."""

    ptr: int
    shape: tuple[int, ...]
    wait_on: int | None  # the stream whose pending work must finish first; None: ready now

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape)

    @property
    def aligned(self) -> bool:
        """TensorRT may read the frames in place; a view such as frames[1:] mostly is not, and is staged."""
        return self.ptr % ALIGNMENT == 0


def producer_stream(cai: dict) -> int | None:
    """The stream to order after before reading the frames. v3's 'stream': None means nothing is pending,
    an integer names the stream (0 is forbidden: it could mean either default stream). Without the key
    (v2; torch exports v2) the producer most likely used the legacy default stream, which a non-blocking
    stream does not wait for by itself."""
    if "stream" not in cai:
        return LEGACY_DEFAULT_STREAM
    stream = cai["stream"]
    if stream is None:
        return None
    if isinstance(stream, bool) or not isinstance(stream, int) or stream == 0:
        raise DehazeError(f"device frames: __cuda_array_interface__ stream {stream!r} is invalid (v3: None, 1 for "
                          "the legacy default stream, 2 for the per-thread default stream, or a stream handle)")
    return stream


def device_frames(cai: dict) -> DeviceFrames:
    """The frames a `__cuda_array_interface__` dict describes; DehazeError for what the engine cannot read."""
    shape = tuple(int(s) for s in cai["shape"])
    if cai["typestr"] not in ("|u1", "<u1", ">u1"):
        raise DehazeError(f"device frames: expected uint8, got typestr {cai['typestr']!r}")
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != tuple(int(math.prod(shape[i + 1:])) for i in range(len(shape))):
        raise DehazeError("device frames: expected a C-contiguous array (call .contiguous() / cupy.ascontiguousarray)")
    if len(shape) not in (3, 4) or shape[-1] != 3:
        raise DehazeError(f"device frames: expected H x W x 3 or N x H x W x 3 BGR, got shape {shape}")
    return DeviceFrames(int(cai["data"][0]), shape, producer_stream(cai))


def placement_problem(memory_type, pointer_device: int, device: int) -> str | None:
    """Why the engine on GPU `device` cannot read frames whose pointer cudaPointerGetAttributes describes
    as (type, device); None when it can. Managed memory is reachable from every GPU."""
    kinds = cudart.cudaMemoryType
    if memory_type == kinds.cudaMemoryTypeManaged:
        return None
    if memory_type != kinds.cudaMemoryTypeDevice:
        return ("device frames: the array's pointer is host memory, not GPU memory; pass host frames as a numpy "
                "array")
    if pointer_device != device:
        return (f"device frames: the array is on GPU {pointer_device}, the engine runs on GPU {device}; move the "
                f"frames there (e.g. tensor.to('cuda:{device}')) or load the engine with device={pointer_device}")
    return None
