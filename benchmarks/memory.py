"""Peak memory around one inference call: device memory on a GPU, resident host memory on CPU."""
from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_rss_kib() -> int | None:
    match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text()) if _STATUS.is_file() else None
    return int(match.group(1)) if match else None


def _release_free_heap() -> bool:
    """Hand freed heap pages back to the OS (glibc malloc_trim), so RSS is live data only."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return False
    return True


def host_rss(call: Callable[[], object]) -> dict:
    """Process RSS before the call and its peak during it.

    Freed heap is first returned to the OS: otherwise memory kept by earlier calls (of
    any backend) would hide this call's working set. Linux resets the peak (VmHWM) when
    "5" is written to /proc/self/clear_refs, so the peak belongs to this call alone;
    elsewhere only the RSS after the call is known.
    """
    trimmed = _release_free_heap()
    before = psutil.Process().memory_info().rss
    try:
        _CLEAR_REFS.write_text("5")
        resettable = _peak_rss_kib() is not None
    except OSError:
        resettable = False
    call()
    peak = _peak_rss_kib() * 1024 if resettable else psutil.Process().memory_info().rss
    return {"host_rss_mib": round(peak / MIB, 1), "host_rss_delta_mib": round((peak - before) / MIB, 1),
            "host_method": ("VmHWM after clear_refs" if resettable else "RSS after the call (peak not resettable here)")
            + ("" if trimmed else "; freed heap not trimmed (not glibc): delta is a lower bound")}


def torch_cuda(call: Callable[[], object], device: torch.device) -> dict:
    """Peak bytes held by PyTorch tensors during the call (weights included)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return {"device_peak_mib": round(torch.cuda.max_memory_allocated(device) / MIB, 1),
            "device_reserved_mib": round(torch.cuda.max_memory_reserved(device) / MIB, 1),
            "device_method": "torch.cuda.max_memory_allocated"}


def non_torch_device_bytes(device: torch.device) -> int:
    """Device memory in use that PyTorch's allocator does not hold (cudaMemGetInfo minus torch's pool)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


def runtime_device(call: Callable[[], object], device: torch.device, baseline: int) -> dict:
    """Device memory the runtime holds after the call, over `baseline` taken before it was loaded.

    TensorRT and ONNX Runtime keep their activation memory allocated after a run, so
    the level after the call is the peak of the call (device-wide: assumes no other process).
    """
    call()
    used = non_torch_device_bytes(device) - baseline
    return {"device_peak_mib": round(used / MIB, 1), "device_method": "cudaMemGetInfo delta since load"}
