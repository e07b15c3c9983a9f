"""CUDA through NVIDIA's cuda-bindings: checked calls, grow-only device and pinned host buffers, device arrays."""
from __future__ import annotations

import ctypes
import math

import numpy as np
from cuda.bindings import runtime as cudart

from .errors import DehazeError

SUCCESS = cudart.cudaError_t.cudaSuccess


def check(result: tuple):
    """The value(s) a cuda-bindings call returns after its error code; DehazeError on an error."""
    err, *values = result
    if err != SUCCESS:
        name = cudart.cudaGetErrorName(err)[1].decode()
        text = cudart.cudaGetErrorString(err)[1].decode()
        raise DehazeError(f"CUDA error {name}: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class CudaUnusable(DehazeError):
    """A driver is installed but CUDA cannot use it (too old for this CUDA runtime, broken install)."""


def version_text(number: int) -> str:
    """CUDA's 1000 * major + 10 * minor -> 'major.minor'."""
    return f"{number // 1000}.{number % 1000 // 10}"


def device_count_error(err, driver_version: int, runtime_version: int) -> str | None:
    """Why cudaGetDeviceCount's error means a GPU is present but unusable; None when it means no GPU
    (no device, or no driver at all: the runtime then reports cudaErrorInsufficientDriver with driver 0)."""
    if err == SUCCESS or err == cudart.cudaError_t.cudaErrorNoDevice or driver_version == 0:
        return None
    name = cudart.cudaGetErrorName(err)[1].decode()
    fix = (f"the driver supports CUDA {version_text(driver_version)}, cuda-bindings links the CUDA "
           f"{version_text(runtime_version)} runtime")
    if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
        fix += (f"; install an NVIDIA driver for CUDA {runtime_version // 1000} (R580 or newer for CUDA 13), or use "
                f"the CUDA {driver_version // 1000} packages: pip install 'cuda-bindings=={driver_version // 1000}.*' "
                f"tensorrt-cu{driver_version // 1000}")
    return f"CUDA error {name}: the GPU cannot be used ({fix})"


def device_count() -> int:
    """NVIDIA GPUs usable here; 0 without a GPU or driver; CudaUnusable when a driver is there but unusable."""
    err, count = cudart.cudaGetDeviceCount()
    if err == SUCCESS:
        return count
    driver = cudart.cudaDriverGetVersion()[1] or 0
    runtime = cudart.cudaRuntimeGetVersion()[1] or 0
    why = device_count_error(err, driver, runtime)
    if why:
        raise CudaUnusable(why)
    return 0


def driver_version() -> str | None:
    """The CUDA version the installed driver supports ('13.0'); None without an NVIDIA driver."""
    number = cudart.cudaDriverGetVersion()[1] or 0
    return version_text(number) if number else None


def device_name(device: int) -> tuple[str, int]:
    """(marketing name, memory in bytes) of a GPU."""
    props = check(cudart.cudaGetDeviceProperties(device))
    return props.name.split(b"\0", 1)[0].decode(errors="replace"), int(props.totalGlobalMem)


def compute_capability(device: int) -> str:
    """'SM89' style name of the device's compute capability, as the manifest records targets."""
    attr = cudart.cudaDeviceAttr
    major = check(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device))
    minor = check(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device))
    return f"SM{major}{minor}"


class DeviceBuffer:
    """Device memory reallocated only when a larger size is asked for."""

    _alloc = staticmethod(cudart.cudaMalloc)
    _release = staticmethod(cudart.cudaFree)

    def __init__(self) -> None:
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> bool:
        """Make room for nbytes; True when the memory moved (captured CUDA graphs must be dropped)."""
        if nbytes <= self.nbytes:
            return False
        self.free()
        self.ptr = int(check(self._alloc(nbytes)))
        self.nbytes = nbytes
        return True

    def free(self) -> None:
        if self.ptr:
            check(self._release(self.ptr))
        self.ptr, self.nbytes = 0, 0


class PinnedBuffer(DeviceBuffer):
    """Page-locked host memory (fast, truly asynchronous copies), viewed as numpy arrays."""

    _alloc = staticmethod(cudart.cudaMallocHost)
    _release = staticmethod(cudart.cudaFreeHost)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        count = math.prod(shape)
        raw = (ctypes.c_uint8 * count).from_address(self.ptr)
        return np.frombuffer(raw, np.uint8, count).reshape(shape)


class DeviceArray:
    """uint8 frames in device memory owned by the runtime; CuPy, torch and Numba read it through
    `__cuda_array_interface__` without a copy, `to_host()` copies it to numpy."""

    def __init__(self, shape: tuple[int, ...], device: int) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.uint8)
        self.device = device
        self._buffer = DeviceBuffer()
        self._buffer.ensure(math.prod(self.shape))

    @property
    def ptr(self) -> int:
        return self._buffer.ptr

    @property
    def __cuda_array_interface__(self) -> dict:
        # stream None: the runtime synchronised its stream before handing the array over.
        return {"shape": self.shape, "typestr": "|u1", "data": (self.ptr, False), "strides": None,
                "version": 3, "stream": None}

    def to_host(self) -> np.ndarray:
        out = np.empty(self.shape, np.uint8)
        check(cudart.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        return out

    def __del__(self) -> None:
        try:
            self._buffer.free()
        except Exception:  # interpreter shutdown or a lost context: nothing left to free
            pass

