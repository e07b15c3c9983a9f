"""`kanet doctor`: what this machine can run KA-Net with, and why not where it cannot.

Torch-free. The driver comes from NVML (it answers even where the CUDA runtime refuses an old driver),
GPUs from the CUDA runtime (its order is --device N's), TensorRT support per GPU from the same checks
the engine path makes, the back-end from the same decision `kanet run --device auto` takes.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str  # SM89 style, as manifests record targets
    memory_mib: int


@dataclass(frozen=True)
class GpuSupport:
    gpu: int
    supported: bool
    why: str  # how it was decided, or why not


@dataclass
class TensorRTFlavour:
    module: str                   # tensorrt (full) or tensorrt_rtx
    version: str | None           # None: not importable
    problem: str | None = None    # why it does not import
    gpus: list[GpuSupport] = field(default_factory=list)
    builds_ahead_for: list[str] = field(default_factory=list)  # TensorRT-RTX: targets it builds for without a GPU


@dataclass
class DoctorReport:
    driver: str | None            # e.g. 580.65.06; None: no NVIDIA driver
    driver_cuda: str | None       # the newest CUDA the driver supports, e.g. 13.0
    driver_problem: str | None
    nvml_gpus: int                # GPUs the driver sees (also where CUDA cannot use them)
    gpus: list[Gpu]               # GPUs the CUDA runtime can use, in --device order
    cuda_bindings: str | None     # cuda-bindings version
    cuda_runtime: str | None      # the CUDA runtime it links
    cuda_problem: str | None      # why CUDA cannot use the GPUs; None when it can (or there are none)
    tensorrt: list[TensorRTFlavour]
    onnxruntime: str | None
    onnxruntime_providers: list[str]
    backend: str                  # what `kanet run --device auto` runs an export folder with
    backend_reason: str
    verdict: str
    exit_code: int                # 0: the best path here works; 1: a GPU is present but unusable


def _version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver() -> tuple[str | None, str | None, str | None, int]:
    """(driver version, CUDA version it supports, why none, GPUs it sees) from NVML."""
    from cuda.bindings import nvml
    from cuda.pathfinder import DynamicLibNotFoundError

    from runtime.cuda import version_text

    try:
        nvml.init_v2()
    except DynamicLibNotFoundError:
        return None, None, "no NVIDIA driver found (libnvidia-ml is not installed)", 0
    except nvml.NvmlError as exc:  # a driver that does not answer (not loaded, version mismatch)
        return None, None, f"the NVIDIA driver does not answer (NVML: {exc})", 0
    try:
        return (nvml.system_get_driver_version(), version_text(nvml.system_get_cuda_driver_version()), None,
                nvml.device_get_count_v2())
    finally:
        nvml.shutdown()


def _cuda() -> tuple[list[Gpu], str | None, str | None]:
    """(GPUs the CUDA runtime can use, its version, why it cannot use the GPUs)."""
    from cuda.bindings import runtime as cudart

    from runtime.cuda import CudaUnusable, check, compute_capability, device_count, version_text

    runtime = version_text(check(cudart.cudaRuntimeGetVersion()))
    try:
        count = device_count()
    except CudaUnusable as exc:
        return [], runtime, str(exc)
    gpus = []
    for index in range(count):
        props = check(cudart.cudaGetDeviceProperties(index))
        name = props.name.split(b"\0")[0].decode() if isinstance(props.name, bytes) else str(props.name)
        gpus.append(Gpu(index, name, compute_capability(index), props.totalGlobalMem >> 20))
    return gpus, runtime, None


def _full_tensorrt_supports(trt, gpu: Gpu) -> GpuSupport:
    """Full TensorRT builds for the GPU it runs on: whether a builder can be created on this one."""
    from cuda.bindings import runtime as cudart

    from runtime.cuda import check

    check(cudart.cudaSetDevice(gpu.index))
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # TensorRT raises its own types when the GPU or its CUDA is unsupported
        return GpuSupport(gpu.index, False, f"no builder on this GPU ({str(exc).splitlines()[0]})")
    if builder is None:
        return GpuSupport(gpu.index, False, "no builder on this GPU (see the TensorRT log above)")
    return GpuSupport(gpu.index, True, "a builder was created on this GPU")


def _tensorrt(gpus: list[Gpu]) -> list[TensorRTFlavour]:
    from export.engine import RTX_TARGETS
    from runtime.trt import rtx_unsupported

    flavours = []
    for module in ("tensorrt", "tensorrt_rtx"):
        try:
            trt = importlib.import_module(module)
        except Exception as exc:  # ImportError, or a library it links missing (OSError)
            missing = isinstance(exc, ModuleNotFoundError) and exc.name == module
            flavours.append(TensorRTFlavour(module, None, "not installed" if missing else str(exc).splitlines()[0]))
            continue
        flavour = TensorRTFlavour(module, trt.__version__)
        for gpu in gpus:
            if module == "tensorrt_rtx":
                why = rtx_unsupported(trt, gpu.compute_capability)
                flavour.gpus.append(GpuSupport(gpu.index, why is None, why or f"{gpu.compute_capability} is a target"))
            else:
                flavour.gpus.append(_full_tensorrt_supports(trt, gpu))
        if module == "tensorrt_rtx":
            flavour.builds_ahead_for = list(RTX_TARGETS)
        flavours.append(flavour)
    return flavours


def _backend(gpus: list[Gpu]) -> tuple[str, str]:
    """What `kanet run --model EXPORT_DIR --device auto` runs, and why the better ones were passed over."""
    from runtime.dehazer import engine_unusable, onnx_runner
    from runtime.trt import import_tensorrt

    why_not = engine_unusable(0)
    if why_not is None:
        trt, flavour = import_tensorrt()
        gpu = gpus[0]
        return (f"{flavour} {trt.__version__} engine on GPU 0",
                f"GPU 0 ({gpu.name}, {gpu.compute_capability}) is usable and {flavour} supports it")
    _, where, passed = onnx_runner("auto")
    return where, f"no engine: {why_not}" + (f"; {passed}" if passed else "")


def diagnose() -> DoctorReport:
    driver, driver_cuda, driver_problem, nvml_gpus = _driver()
    gpus, runtime, cuda_problem = _cuda()
    try:
        import onnxruntime

        ort_version, providers = onnxruntime.__version__, list(onnxruntime.get_available_providers())
    except ImportError:
        ort_version, providers = None, []
    backend, reason = _backend(gpus)
    flavours = _tensorrt(gpus)
    present = nvml_gpus or len(gpus)
    engine = any(support.supported for flavour in flavours for support in flavour.gpus)
    if not present:
        verdict, code = (f"no NVIDIA GPU here: kanet runs ONNX models on {backend} and builds "
                         "TensorRT-RTX engines ahead of time for GPUs elsewhere"), 0
    elif cuda_problem:
        verdict, code = f"a GPU is present but unusable: {cuda_problem}", 1
    elif not engine:
        verdict = f"a GPU is present but no engine can run on it: {reason.removeprefix('no engine: ')}"
        code = 1
    else:
        verdict, code = f"the engine path works: {backend}", 0
    return DoctorReport(driver, driver_cuda, driver_problem, nvml_gpus, gpus, _version("cuda-bindings"), runtime,
                        cuda_problem, flavours, ort_version, providers, backend, reason, verdict, code)


def _flavour_text(flavour: TensorRTFlavour) -> str:
    if flavour.version is None:
        return flavour.problem or "not installed"
    parts = [flavour.version]
    parts += [f"GPU {s.gpu}: {'yes' if s.supported else 'no'} ({s.why})" for s in flavour.gpus]
    if flavour.builds_ahead_for:
        parts.append(f"builds ahead of time for {', '.join(flavour.builds_ahead_for)}")
    return "; ".join(parts)


def table(report: DoctorReport) -> str:
    """The report as aligned `what  finding` lines, the verdict last."""
    rows = [("NVIDIA driver", f"{report.driver} (CUDA {report.driver_cuda}), {report.nvml_gpus} GPU(s)"
             if report.driver else report.driver_problem)]
    rows += [(f"GPU {g.index}", f"{g.name}, {g.compute_capability}, {g.memory_mib:,} MiB") for g in report.gpus]
    if report.nvml_gpus and not report.gpus:
        rows.append(("GPUs", f"{report.nvml_gpus} seen by the driver, none usable by CUDA"))
    rows.append(("cuda-bindings", f"{report.cuda_bindings or 'not installed'}, CUDA {report.cuda_runtime} runtime: "
                 + (f"not usable: {report.cuda_problem}" if report.cuda_problem
                    else "usable" if report.gpus else "no GPU to use")))
    rows += [(f.module, _flavour_text(f)) for f in report.tensorrt]
    rows.append(("onnxruntime", f"{report.onnxruntime}: {', '.join(report.onnxruntime_providers)}"
                 if report.onnxruntime else "not installed"))
    rows.append(("kanet run", f"{report.backend} (--device auto; {report.backend_reason})"))
    width = max(len(name) for name, _ in rows)
    return "\n".join([*(f"{name:<{width}}  {text}" for name, text in rows), "", report.verdict])
