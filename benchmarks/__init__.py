"""`kanet bench`: latency, throughput, memory and FLOPs of every backend, side by side.

| module | job |
| --- | --- |
| `names.py` | backend names (torch-free, for the CLI) |
| `system.py` | what ran the benchmark: device, driver, library versions, git commit |
| `flops.py` | FLOPs per frame at a resolution, counted once on meta tensors |
| `memory.py` | peak device memory and host RSS around one call |
| `backends.py` | PyTorch eager / autocast / torch.compile and the runtime's ONNX Runtime / TensorRT, one interface |
| `harness.py` | the interleaved timing loop and its statistics |
| `video.py` | end-to-end `kanet run` on a generated clip |
| `targets.py` | the issue's targets, evaluated (met, or missed by how much), never asserted |
| `profiling.py` | per-op-type time (ONNX Runtime profiler, torch.profiler) for a missed target |
| `suite.py` | one run: models, exports, backends, shapes, video, targets -> a results document |
| `report.py` | JSON, Markdown, PNG plot, and `--compare` ratios |
"""
