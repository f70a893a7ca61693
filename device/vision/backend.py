"""Pluggable inference backend (like Frigate's detector API): the checker asks for named signatures.

`TFLiteBackend` runs a .tflite file with LiteRT (`ai_edge_litert`, the maintained successor, numpy 2
ready) and falls back to `tflite_runtime` (needs numpy<2) where LiteRT has no wheel. Another backend (a
Coral Edge TPU, an NPU) implements the same `run(signature, **inputs)`.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from device.vision.errors import ModelError

log = logging.getLogger(__name__)

INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
PLAIN = "main"  # the signature name of a model without signature defs: run("main", input=array) -> {"output": ...}


class InferenceBackend(Protocol):
    name: str

    def run(self, signature: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run one named signature; returns its outputs by name."""
        ...


def _interpreter_class() -> tuple[str, Any]:
    missing = []
    for module_name in INTERPRETER_MODULES:
        try:
            return module_name.split(".")[0], importlib.import_module(module_name).Interpreter
        except ImportError as exc:
            missing.append(f"{module_name}: {exc}")
    raise ModelError("no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime with numpy<2); "
                     + "; ".join(missing))


def _trim_heap() -> None:
    """Hand freed heap back to the system. glibc keeps large freed blocks in its heap once it has raised its
    mmap threshold (it does after the first big free): without this a released detector still holds ~80 MB."""
    process = ctypes.CDLL(None)  # the C library the interpreter is linked with
    if hasattr(process, "malloc_trim"):  # glibc only (musl has no such call, and needs none)
        process.malloc_trim(0)


class TFLiteBackend:
    """One interpreter, used by one thread at a time (TFLite interpreters are not thread-safe)."""

    def __init__(self, model_path: Path, num_threads: int = 1) -> None:
        self.model_path = Path(model_path)
        runtime, interpreter_class = _interpreter_class()
        self.name = f"tflite:{runtime}"
        if not self.model_path.is_file():
            raise ModelError(f"model file not found: {self.model_path}")
        self._make: Callable[[], Any] = lambda: interpreter_class(model_path=str(self.model_path),
                                                                  num_threads=num_threads)
        try:
            self._interpreter = self._make()
            self._runners = {key: self._interpreter.get_signature_runner(key)
                             for key in self._interpreter.get_signature_list()}
            if not self._runners:  # a converted graph without signature defs: its one input and output
                self._runners = {PLAIN: self._run_plain}
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {self.model_path}: {exc}") from exc
        self._allocated = False
        self._lock = threading.Lock()
        log.info("loaded %s with %s, signatures %s", self.model_path.name, runtime, sorted(self._runners))

    def _run_plain(self, input: np.ndarray) -> dict[str, np.ndarray]:  # noqa: A002 (the tensor's role)
        if not self._allocated:  # on the first run: the text detector's buffers are ~120 MB, an idle agent
            self._interpreter.allocate_tensors()  # that never checks a photo need not carry them
            self._allocated = True
        detail = self._interpreter.get_input_details()[0]
        if tuple(input.shape) != tuple(detail["shape"]):
            raise ValueError(f"input has shape {input.shape}, the model takes {tuple(detail['shape'])}")
        self._interpreter.set_tensor(detail["index"], input.astype(detail["dtype"], copy=False))
        self._interpreter.invoke()
        return {"output": self._interpreter.get_tensor(self._interpreter.get_output_details()[0]["index"])}

    def release(self) -> None:
        """Give back a model's buffers after use (the text detector's are ~130 MB): a fresh interpreter, whose
        buffers are allocated again by the next run (a few tens of ms). Models with signatures keep theirs."""
        with self._lock:
            if self._allocated:
                self._interpreter = self._make()
                self._allocated = False
                _trim_heap()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of the first input (a model without signature defs: its one input)."""
        return tuple(int(v) for v in self._interpreter.get_input_details()[0]["shape"])

    @property
    def signatures(self) -> tuple[str, ...]:
        return tuple(sorted(self._runners))

    def run(self, signature: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        runner = self._runners.get(signature)
        if runner is None:
            raise ModelError(f"{self.model_path.name} has no signature {signature!r} (has {self.signatures})")
        with self._lock:
            try:
                return {k: np.array(v) for k, v in runner(**inputs).items()}
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{signature} failed: {exc}") from exc
