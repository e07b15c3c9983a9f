"""A serialized TensorRT / TensorRT-RTX engine on one GPU, after the patterns of TensorRT's Python samples.

CUDA through cuda-bindings: one non-blocking stream, pinned host buffers, asynchronous copies
and enqueue, buffers reused across calls and reallocated only when a batch needs more room.
Full TensorRT: each input shape's enqueue is captured once into a CUDA graph and replayed
(dropped, with a warning, if the engine cannot be captured). TensorRT-RTX does the same
itself (its whole-graph capture strategy) and compiles kernels just in time; they are kept
in `<engine>.runtime.cache` so the next start skips the compilation.
"""
from __future__ import annotations

import atexit
import functools
import os
import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
from cuda.bindings import runtime as cudart

from .backend import Timings
from .cuda import DeviceArray, DeviceBuffer, PinnedBuffer, check, compute_capability, device_count
from .device_frames import ALIGNMENT, device_frames, placement_problem
from .errors import DehazeError
from .manifest import EngineManifest, incompatibility
from .trt import import_tensorrt, rtx_unsupported

H2D = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
D2H = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
D2D = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice


def memory_advice(needed: int, free: int, total: int, shape: tuple[int, ...]) -> str:
    """What an engine short of GPU memory needed, what there was, and what to change."""
    mib = 1 << 20
    return (f"it needs {needed / mib:,.0f} MiB of activation memory for {'x'.join(map(str, shape))} batches and "
            f"{free / mib:,.0f} of {total / mib:,.0f} MiB are free on this GPU; free GPU memory (other processes), "
            "run smaller batches or frames (--batch, --max-side), or rebuild the engine with a smaller --max")


def _close_at_exit(backend: weakref.ref) -> None:
    if backend() is not None:
        backend().close()


class EngineBackend:  # keeps runtime.backend.Backend
    def __init__(self, plan: Path, manifest: EngineManifest, device: int = 0, cuda_graphs: bool = True) -> None:
        """cuda_graphs=False: plain enqueues only (TensorRT-RTX's own capture off too), e.g. to compare."""
        trt, flavour = import_tensorrt()
        why = incompatibility(manifest, flavour, trt.__version__, None)  # the version first: no GPU needed
        if not why and device_count() <= device:
            onnx = manifest.onnx.path if manifest.onnx else "the exported .onnx"
            raise DehazeError(f"{plan}: an engine needs an NVIDIA GPU (device {device}), none is usable here; "
                              f"run the ONNX model with ONNX Runtime instead: --model {onnx}")
        if not why:
            check(cudart.cudaSetDevice(device))
            gpu = compute_capability(device)
            # before the target check: its "rebuild it here" cannot work where TensorRT-RTX has no kernels
            why = (rtx_unsupported(trt, gpu) if flavour == "tensorrt_rtx" else None) or \
                incompatibility(manifest, flavour, trt.__version__, gpu)
        if why:
            raise DehazeError(f"{plan}: {why}")
        self.name = f"{flavour} {trt.__version__}"
        self.precision = manifest.precision
        self._trt, self._device, self._lock = trt, device, threading.Lock()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise DehazeError(f"{plan}: {flavour} could not deserialise the engine (see the log above); "
                              f"rebuild it with `kanet build`")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._in, self._out = inputs[0], outputs[0]
        if self._engine.get_tensor_dtype(self._in) != trt.DataType.UINT8:
            raise DehazeError(f"{plan}: a tensor-I/O engine (float NCHW, for analysis); the runtime needs a "
                              "frame-I/O engine: kanet export CKPT --out DIR (default --io frames)")
        low, _, high = self._engine.get_tensor_profile_shape(self._in, 0)
        self.min_shape = tuple(int(v) for v in tuple(low)[:3])  # N, H, W of N x H x W x 3
        self.max_shape = tuple(int(v) for v in tuple(high)[:3])

        self._cache_file = plan.with_suffix(".runtime.cache") if flavour == "tensorrt_rtx" else None
        self._activations = DeviceBuffer()  # sized per input shape, not for the profile's largest
        self._context = self._create_context(plan, cuda_graphs)
        self._stream = check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self._events = [check(cudart.cudaEventCreate()) for _ in range(4)]
        self._buffers = [PinnedBuffer(), PinnedBuffer(), DeviceBuffer(), DeviceBuffer()]  # host in/out, device in/out
        self._bound: tuple | None = None
        # Manually captured graphs (full TensorRT) per (shape, in, out); None once capture proved impossible.
        self._graphs: dict | None = {} if flavour == "tensorrt" and cuda_graphs else None
        self._enqueued: tuple | None = None  # the input shape of the context's last enqueue
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))  # saves the cache if close() never runs
        atexit.register(self._at_exit)

    def _create_context(self, plan: Path, cuda_graphs: bool):
        # User-managed activation memory: a 4 x 1088 x 1920 profile then costs its maximum only for such batches.
        strategy = self._trt.ExecutionContextAllocationStrategy.USER_MANAGED
        if self._cache_file is None:
            context = self._engine.create_execution_context(strategy)
        else:
            config = self._engine.create_runtime_config()
            config.set_execution_context_allocation_strategy(strategy)
            graphs = self._trt.CudaGraphStrategy
            config.cuda_graph_strategy = graphs.WHOLE_GRAPH_CAPTURE if cuda_graphs else graphs.DISABLED
            self._cache = config.create_runtime_cache()
            if self._cache_file.is_file() and not self._cache.deserialize(self._cache_file.read_bytes()):
                warnings.warn(f"{self._cache_file}: runtime cache from another GPU or version, recompiling kernels",
                              stacklevel=3)
            config.set_runtime_cache(self._cache)
            context = self._engine.create_execution_context(config)
        if context is None:
            free, total = check(cudart.cudaMemGetInfo())
            raise DehazeError(f"{plan}: {self.name} could not create an execution context; "
                              + memory_advice(int(self._engine.device_memory_size_v2), free, total, self.max_shape))
        return context

    def _bind(self, shape: tuple[int, ...], src: int, dst: int) -> None:
        if shape != self._bound:
            if not self._context.set_input_shape(self._in, shape):
                raise DehazeError(f"batch {shape} is outside the engine profile {self.min_shape} .. {self.max_shape}")
            self._bound = None  # until the activation memory for this shape is in place
            self._size_activations(shape)
            self._bound = shape
        for name, address in ((self._in, src), (self._out, dst)):
            if not self._context.set_tensor_address(name, address):
                raise DehazeError(f"{self.name}: TensorRT refused address {address:#x} for tensor {name!r}"
                                  + ("" if address % ALIGNMENT == 0 else f" (not {ALIGNMENT}-byte aligned)"))

    def _size_activations(self, shape: tuple[int, ...]) -> None:
        """Give the context the activation memory this input shape needs (grown, never shrunk)."""
        # at least some: a user-managed context needs memory set before it runs, whatever the shape needs
        needed = max(int(self._context.update_device_memory_size_for_shapes()), ALIGNMENT)
        if needed > self._activations.nbytes:
            self._drop_graphs()  # captured graphs point at the memory about to be replaced
            try:
                self._activations.ensure(needed)
            except DehazeError as exc:
                free, total = check(cudart.cudaMemGetInfo())
                raise DehazeError(f"{self.name}: {exc}; " + memory_advice(needed, free, total, shape[:3])) from None
        self._context.set_device_memory(self._activations.ptr, self._activations.nbytes)

    @property
    def activation_bytes(self) -> int:
        """Activation memory held now: what the largest batch shape run so far needed."""
        return self._activations.nbytes

    def _enqueue(self, key: tuple | None) -> None:
        """A shape's graph replays only right after an enqueue of that shape: whether a graph stays valid once
        the context ran another shape (A -> B -> A) is undocumented, and a plain enqueue brings its state back."""
        shape = self._bound
        if self._graphs and key in self._graphs and self._enqueued == shape:
            check(cudart.cudaGraphLaunch(self._graphs[key], self._stream))
        elif not self._context.execute_async_v3(int(self._stream)):
            raise DehazeError(f"{self.name}: enqueue failed (see the TensorRT log above)")
        self._enqueued = shape

    def _capture(self, key: tuple) -> None:
        """Record this shape's enqueue as a CUDA graph; after a plain run, as TensorRT requires."""
        stream, graph = self._stream, None
        try:
            check(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            try:
                enqueued = self._context.execute_async_v3(int(stream))
            finally:
                graph = check(cudart.cudaStreamEndCapture(stream))
            if not enqueued:
                raise DehazeError("enqueue refused under stream capture")
            self._graphs[key] = check(cudart.cudaGraphInstantiate(graph, 0))
        except DehazeError as exc:
            cudart.cudaGetLastError()  # clear the capture error so later calls start clean
            warnings.warn(f"{self.name}: CUDA graphs disabled, running plain enqueues ({exc})", stacklevel=3)
            self._drop_graphs()
            self._graphs = None
        finally:
            if graph:  # the captured graph, instantiated or not (its executable copy is what is kept)
                cudart.cudaGraphDestroy(graph)

    def _drop_graphs(self) -> None:
        for graph in (self._graphs or {}).values():
            cudart.cudaGraphExecDestroy(graph)
        if self._graphs:
            self._graphs.clear()

    def _first_run_of(self, key: tuple) -> None:
        if self._graphs is not None and key not in self._graphs:
            self._capture(key)

    def _save_cache(self) -> None:
        """Persist the kernels TensorRT-RTX compiled, so the next start reuses them. On close and at exit, not
        per shape: its lazy JIT compiles kernels after the first run, and saving under the lock stalls frames."""
        if self._cache_file is None:
            return
        tmp = self._cache_file.with_suffix(".cache.tmp")
        try:
            tmp.write_bytes(bytes(memoryview(self._cache.serialize())))
            os.replace(tmp, self._cache_file)
        except OSError as exc:
            warnings.warn(f"{self._cache_file}: runtime cache not saved ({exc})", stacklevel=3)
            self._cache_file = None

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, Timings]:
        """N x H x W x 3 uint8 through the engine; timings from CUDA events around each stage."""
        shape, nbytes = batch.shape, batch.nbytes
        with self._lock:
            self._check_open()
            check(cudart.cudaSetDevice(self._device))
            moved = [buffer.ensure(nbytes) for buffer in self._buffers]
            if any(moved):
                self._drop_graphs()
            host_in, host_out, dev_in, dev_out = self._buffers
            host_in.view(shape)[...] = batch
            self._bind(shape, dev_in.ptr, dev_out.ptr)
            key = (shape, dev_in.ptr, dev_out.ptr)
            stream, (e0, e1, e2, e3) = self._stream, self._events
            check(cudart.cudaEventRecord(e0, stream))
            check(cudart.cudaMemcpyAsync(dev_in.ptr, host_in.ptr, nbytes, H2D, stream))
            check(cudart.cudaEventRecord(e1, stream))
            self._enqueue(key)
            check(cudart.cudaEventRecord(e2, stream))
            check(cudart.cudaMemcpyAsync(host_out.ptr, dev_out.ptr, nbytes, D2H, stream))
            check(cudart.cudaEventRecord(e3, stream))
            check(cudart.cudaStreamSynchronize(stream))
            out = host_out.view(shape).copy()
            timings = Timings(h2d_ms=check(cudart.cudaEventElapsedTime(e0, e1)),
                              compute_ms=check(cudart.cudaEventElapsedTime(e1, e2)),
                              d2h_ms=check(cudart.cudaEventElapsedTime(e2, e3)),
                              total_ms=check(cudart.cudaEventElapsedTime(e0, e3)))
            self._first_run_of(key)
        return out, timings

    def run_device(self, frames) -> DeviceArray:
        """Frames already on this GPU (__cuda_array_interface__) in, a DeviceArray out; no host copy."""
        frames = device_frames(frames.__cuda_array_interface__)
        shape = frames.shape
        batch_shape = shape if len(shape) == 4 else (1, *shape)
        with self._lock:
            self._check_open()
            check(cudart.cudaSetDevice(self._device))  # before allocating: the output must lie on the engine's GPU
            where = check(cudart.cudaPointerGetAttributes(frames.ptr))
            why = placement_problem(where.type, where.device, self._device)
            if why:
                raise DehazeError(why)
            out = DeviceArray(shape, self._device)  # the caller's to keep: one per call
            if frames.wait_on is not None:  # the producer's pending work first, without blocking the host
                ready = self._events[0]
                check(cudart.cudaEventRecord(ready, frames.wait_on))
                check(cudart.cudaStreamWaitEvent(self._stream, ready, 0))
            src = frames.ptr
            if not frames.aligned:  # TensorRT needs 256-byte aligned tensors: copy into the aligned input buffer
                staging = self._buffers[2]
                if staging.ensure(frames.nbytes):
                    self._drop_graphs()
                check(cudart.cudaMemcpyAsync(staging.ptr, src, frames.nbytes, D2D, self._stream))
                src = staging.ptr
            self._bind(batch_shape, src, out.ptr)
            self._enqueue(None)  # caller-owned addresses: never a captured graph
            check(cudart.cudaStreamSynchronize(self._stream))
        return out

    @property
    def closed(self) -> bool:
        return self._context is None

    def _check_open(self) -> None:
        if self.closed:
            raise DehazeError(f"{self.name}: the engine was closed; load it again")

    def close(self) -> None:
        """Save TensorRT-RTX's kernels, then free graphs, context, engine, memory, events and stream; idempotent."""
        atexit.unregister(self._at_exit)
        with self._lock:
            if self.closed:
                return
            cudart.cudaSetDevice(self._device)
            self._save_cache()
            self._drop_graphs()
            # the context before the engine it came from and the memory it runs in
            self._context = self._cache = None
            self._engine = self._runtime = None
            for buffer in [*self._buffers, self._activations]:
                buffer.free()
            for event in self._events:
                cudart.cudaEventDestroy(event)
            self._events = []
            cudart.cudaStreamDestroy(self._stream)
