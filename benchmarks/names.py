"""Backend names (the CLI's --backends values, the keys --compare matches on) and the results tag; torch-free."""
TORCH_EAGER, TORCH_AUTOCAST, TORCH_COMPILE = "torch-eager", "torch-autocast", "torch-compile"
ORT, ORT_FP16, TENSORRT = "onnxruntime", "onnxruntime-fp16", "tensorrt"
OPENVINO, OPENVINO_BF16 = "openvino", "openvino-bf16"
ALL = (TORCH_EAGER, TORCH_AUTOCAST, TORCH_COMPILE, ORT, ORT_FP16, OPENVINO, OPENVINO_BF16, TENSORRT)  # run order
RESULTS_FORMAT = "kanet-bench"  # the "format" of every results.json
