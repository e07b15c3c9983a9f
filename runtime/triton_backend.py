"""A model on a Triton Inference Server as a back-end: `grpc://HOST:PORT/MODEL` or `http://HOST:PORT/MODEL`.

Frames go to the server through tritonclient (imported when such a model is loaded); the model's config,
read from the server, gives the tensor names and the batch limit, so `Dehazer` splits batches to fit.
A server that stops answering mid-run is retried with growing pauses, then the run fails with one line.
"""
from __future__ import annotations

import http.client
import importlib
import threading
import time
import urllib.parse
from dataclasses import dataclass

import numpy as np

from .artifacts import MIN_FRAME_SIZE
from .backend import HostBackend
from .errors import DehazeError

SCHEMES = {"grpc": 8001, "http": 8000}  # Triton's default ports
RETRIES = 4                              # pauses of 0.5, 1, 2 and 4 s: a restarting server has time to come back
RETRY_DELAY_S = 0.5
REQUEST_TIMEOUT_S = 300.0                # a large frame on a CPU model takes seconds; a hung server is not waited
                                         # on forever


class ServerError(DehazeError):
    """The server failed or went away once frames were flowing: the run failed, the input was fine."""

    exit_status = 1


@dataclass(frozen=True)
class ServerModel:
    """A model on a Triton server, as `--model` names it."""
    protocol: str  # "grpc" or "http"
    address: str   # host:port
    model: str

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address}/{self.model}"


def is_server_model(text) -> bool:
    return isinstance(text, str) and "://" in text and text.split("://", 1)[0] in SCHEMES


def parse_server_model(text: str) -> ServerModel:
    """'grpc://host:8001/kanet_onnx_cpu' -> ServerModel; DehazeError naming the form expected otherwise."""
    form = f"{text}: expected grpc://HOST[:PORT]/MODEL or http://HOST[:PORT]/MODEL (a model on a Triton server)"
    parts = urllib.parse.urlsplit(text)
    model = parts.path.strip("/")
    try:
        port = SCHEMES[parts.scheme] if parts.port is None else parts.port
    except ValueError:
        raise DehazeError(f"{form}; the port is not a number from 0 to 65535") from None
    if not parts.hostname or not model or "/" in model or parts.query or parts.fragment:
        raise DehazeError(form)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ServerModel(parts.scheme, f"{host}:{port}", model)


def _reason(exc: Exception) -> str:
    text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return (text or type(exc).__name__).splitlines()[0]


def _connection_lost(exc: Exception) -> bool:
    """Whether the request failed because the server is not there (worth retrying), not because it refused the
    request or did not answer in REQUEST_TIMEOUT_S (a hung server: resending would wait as long again)."""
    if isinstance(exc, TimeoutError):
        return False
    # HTTP: socket errors, or the connection closing under a response (http.client's exception, via geventhttpclient)
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return True
    return callable(getattr(exc, "status", None)) and exc.status() == "StatusCode.UNAVAILABLE"


def _frame_tensor(config: dict, section: str, batched: bool) -> tuple[str, list[int]]:
    """The one input or output tensor of the config: its name and dims with the batch dimension (-1: variable)."""
    tensors = config.get(section, [])
    if len(tensors) != 1:
        raise ValueError(f"has {len(tensors)} {section}s, not one")
    tensor = tensors[0]
    dims = ([-1] if batched else []) + [int(d) for d in tensor.get("dims", [])]
    if tensor.get("data_type") != "TYPE_UINT8" or len(dims) != 4 or dims[-1] not in (3, -1):
        raise ValueError(f"{section} {tensor.get('name')} is {tensor.get('data_type')} {dims}, "
                         "not uint8 N x H x W x 3 frames")
    return tensor["name"], dims


class TritonBackend(HostBackend):
    def __init__(self, spec: ServerModel) -> None:
        try:
            self._api = importlib.import_module(f"tritonclient.{spec.protocol}")
        except ImportError:
            raise DehazeError(f"{spec}: a Triton server model needs tritonclient: "
                              f"pip install 'tritonclient[{spec.protocol}]'") from None
        self._spec = spec
        self.name = f"triton:{spec}"
        self._clients: list = []
        self._local = threading.local()  # tritonclient.http's gevent client works only in the thread that made it
        self._as_json = {"as_json": True} if spec.protocol == "grpc" else {}  # HTTP answers in JSON anyway
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        spec = self._spec
        self._connect()
        config = self._config()
        batched = int(config.get("max_batch_size", 0)) > 0
        try:
            self._in, in_dims = _frame_tensor(config, "input", batched)
            self._out, _ = _frame_tensor(config, "output", batched)
        except ValueError as exc:
            raise DehazeError(f"{spec}: the model {exc}; kanet sends uint8 N x H x W x 3 BGR frames "
                              "(kanet triton writes such models)") from None
        # max_batch_size 0: the model does not batch, and its first dim is the whole batch
        n, height, width, _ = in_dims
        self.min_shape = (max(n, 1), max(height, MIN_FRAME_SIZE), max(width, MIN_FRAME_SIZE))
        max_n = int(config["max_batch_size"]) if batched else (n if n > 0 else None)
        self.max_shape = (max_n, height if height > 0 else None, width if width > 0 else None)
        # kanet triton records what the served file computes in; other repositories may not say
        self.precision = config.get("parameters", {}).get("precision", {}).get("string_value", "unknown")

    def _client(self):
        """This thread's client: Dehazer.load runs in one thread, the pipeline's inference in another."""
        client = getattr(self._local, "client", None)
        if client is None:
            # HTTP's network timeout is per request; gRPC's is given with each request (REQUEST_TIMEOUT_S)
            extra = {"network_timeout": REQUEST_TIMEOUT_S} if self._spec.protocol == "http" else {}
            client = self._local.client = self._api.InferenceServerClient(self._spec.address, **extra)
            self._clients.append(client)
        return client

    def _connect(self) -> None:
        spec, client = self._spec, self._client()
        try:
            ready = client.is_model_ready(spec.model)
        except Exception as exc:  # tritonclient raises its own exception, socket errors and gevent's alike
            raise DehazeError(f"{spec}: no Triton server answers at {spec.address} ({_reason(exc)}); "
                              "start it, or check host, port and protocol (gRPC: 8001, HTTP: 8000)") from None
        if not ready:
            index = client.get_model_repository_index(**self._as_json)
            models = index.get("models", []) if isinstance(index, dict) else index
            listed = ", ".join(f"{m['name']} ({m.get('state') or 'not loaded'})" for m in models) or "none"
            raise DehazeError(f"{spec}: the server has no model {spec.model!r} ready; its repository holds: {listed}")

    def _config(self) -> dict:
        config = self._client().get_model_config(self._spec.model, **self._as_json)
        return config.get("config", config)  # gRPC wraps the config in its response message

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        frames = self._api.InferInput(self._in, list(batch.shape), "UINT8")
        frames.set_data_from_numpy(batch)
        wanted = [self._api.InferRequestedOutput(self._out)]
        timeout = {"client_timeout": REQUEST_TIMEOUT_S} if self._spec.protocol == "grpc" else {}
        attempt = 0
        while True:
            try:
                return self._client().infer(self._spec.model, [frames], outputs=wanted, **timeout).as_numpy(self._out)
            except Exception as exc:
                if not _connection_lost(exc):
                    raise ServerError(f"{self._spec}: the server failed the request for {batch.shape[0]} "
                                      f"{batch.shape[1]}x{batch.shape[2]} frames: {_reason(exc)}") from None
                if attempt == RETRIES:
                    raise ServerError(f"{self._spec}: the server stopped answering ({_reason(exc)}), still after "
                                      f"{RETRIES} retries over {RETRY_DELAY_S * (2 ** RETRIES - 1):g} s") from None
            time.sleep(RETRY_DELAY_S * 2 ** attempt)
            attempt += 1

    def close(self) -> None:
        while self._clients:
            self._clients.pop().close()
