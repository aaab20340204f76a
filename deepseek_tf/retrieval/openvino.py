"""OpenVINO runs the towers of a Keras dual encoder: the encode path of `index`, `evaluate`,
`mine` and `serve`.

The Keras towers are converted in process (`openvino.convert_model` on the tower's traced
graph, seconds per tower), compiled for the CPU, and checked against Keras on probe texts before
they are used; texts are still tokenized by the model's own tokenizer, so callers pass raw
strings. OpenVINO's CPU plugin picks its inference precision for the CPU: bfloat16 where the CPU
computes it natively (AVX-512 BF16, AMX), float32 elsewhere. On a 2-core AMD EPYC with
avx512_bf16 it encodes Cranfield documents with all-MiniLM-L6-v2 at 1.7x sentence-transformers'
PyTorch float32, at cosine >= 0.9999 to float32 (docs/results.md, Encode peers); it also does not
depend on whether TensorFlow's oneDNN kernels are on.

Why not TFLite: its dynamic-int8 kernels gained 1.06x over PyTorch float32 on the same CPU.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf

from deepseek_tf.errors import UserError
from deepseek_tf.models.packed import PACKED_KEYS, pack_inputs, packed_encode, supports_packing
from deepseek_tf.retrieval.embedders import Embedder, KerasEmbedder
from deepseek_tf.retrieval.engines import PRECISIONS, Settings, current_settings

MIN_COSINE = 0.99  # per probe text, OpenVINO vs Keras; bfloat16 MiniLM gives >= 0.9999
PROBES = [
    "what is the boundary layer thickness of a flat plate in supersonic flow",
    "summer dress",
    "轻便笔记本",
    "iphone 15 手机壳",
    "An experimental study of heat transfer to a cylinder at Mach 6. "
    "The pressure distribution and the local heat transfer rate were measured around the cylinder " * 3,
    "a",
]
PADDED_KEYS = ("token_ids", "padding_mask", "segment_ids")


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _named(model, names: tuple[str, ...]):
    """convert_model names inputs after the traced placeholders ("token_ids:0"); feeds use the keys."""
    for port, name in zip(model.inputs, names):
        port.get_tensor().set_names({name})
    return model


@contextlib.contextmanager
def _fusable_layer_norm():
    """Layer normalization traced as (x − mean) / sqrt(var + ε) · γ + β while a tower converts.

    Keras's TensorFlow backend computes it as tf.nn.batch_normalization's x·inv + (β − mean·inv),
    which OpenVINO does not recognise; in this form its CPU plugin runs each one as a single MVN
    kernel (MiniLM: 13 MVN kernels instead of 52 reductions and 39 element-wise ops). Same values
    to float rounding; any other layer normalization (RMS, several axes) traces as Keras has it.
    The class's public `call` is swapped for the trace: Keras has no hook to change how one
    layer type lowers to TensorFlow ops."""
    original = keras.layers.LayerNormalization.call

    def call(layer, inputs, *args, **kwargs):
        axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
        rank = len(inputs.shape)
        if layer.rms_scaling or len(axes) != 1 or axes[0] not in (-1, rank - 1):
            return original(layer, inputs, *args, **kwargs)
        mean = tf.reduce_mean(inputs, [-1], keepdims=True)  # (..., 1); a 1-D axes tensor, as MVN wants
        centred = inputs - mean
        normed = centred / tf.sqrt(tf.reduce_mean(centred * centred, [-1], keepdims=True) + layer.epsilon)
        if layer.gamma is not None:
            normed = normed * layer.gamma
        return normed + layer.beta if layer.beta is not None else normed

    keras.layers.LayerNormalization.call = call
    try:
        yield
    finally:
        keras.layers.LayerNormalization.call = original


def _padded_graph(encoder):
    import openvino as ov

    spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.bool)]
    spec.append(tf.TensorSpec([None, None], tf.int32))
    fn = tf.function(
        lambda token_ids, padding_mask, segment_ids: encoder(
            {"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": segment_ids}, training=False
        ),
        input_signature=spec,
    )
    with _fusable_layer_norm():
        return _named(ov.convert_model(fn.get_concrete_function()), PADDED_KEYS)


def _packed_graph(encoder):
    import openvino as ov

    spec = [tf.TensorSpec([None, None], tf.int32) for _ in PACKED_KEYS] + [tf.TensorSpec([], tf.int32)]
    fn = tf.function(
        lambda token_ids, segment_ids, positions, slot_text, batch: packed_encode(
            encoder,
            {"token_ids": token_ids, "segment_ids": segment_ids, "positions": positions, "slot_text": slot_text},
            batch,
        ),
        input_signature=spec,
    )
    with _fusable_layer_norm():
        return _named(ov.convert_model(fn.get_concrete_function()), (*PACKED_KEYS, "batch"))


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # (n, dim)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(axis=1).min())


class Compiled:
    """One compiled graph and a pool of infer requests (a request serves one call at a time)."""

    def __init__(self, model, settings: Settings, precision: str | None):
        import openvino as ov

        streams, per_call = settings.layout()
        threads = streams * per_call
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams}
        config["PERFORMANCE_HINT"] = "LATENCY" if streams == 1 else "THROUGHPUT"
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "bf16", "f32"
        self.threads, self.streams = threads, streams
        self._requests: queue.SimpleQueue = queue.SimpleQueue()

    def kernels(self) -> dict[str, str]:
        """Layer type -> the CPU kernels OpenVINO picked for it ("brgemm_avx512_amx", "jit_avx2", "ref"
        for its reference C++), from the compiled graph's runtime info."""
        picked: dict[str, set[str]] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and "primitiveType" in info:
                picked.setdefault(info["layerType"].astype(str), set()).add(info["primitiveType"].astype(str))
        return {layer: ",".join(sorted(kinds)) for layer, kinds in picked.items()}

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            return np.array(request.infer(feeds)[0], np.float32)  # (batch, dim), a copy
        finally:
            self._requests.put(request)


class OpenVINOEmbedder(Embedder):
    """A KerasEmbedder's towers run by OpenVINO; tokenizing stays with the Keras embedder's graphs.

    Batches of uneven short texts run packed (`models.packed`) like the Keras path does; the packed
    graph is converted the first time such a batch arrives."""

    def __init__(self, keras: KerasEmbedder, settings: Settings | None = None):
        self.keras, self.settings = keras, settings or current_settings()
        self.name, self.fingerprint = keras.name, keras.fingerprint
        model = keras.model
        self._encoders = {"query": model.query_encoder, "doc": model.doc_tower}
        shared = model.query_encoder is model.doc_tower
        self._lock = threading.Lock()
        self._packed: dict[str, Compiled] = {}
        precision = PRECISIONS[self.settings.precision]
        graphs = {"doc": _padded_graph(model.doc_tower)}
        graphs["query"] = graphs["doc"] if shared else _padded_graph(model.query_encoder)
        self._padded = self._compile_checked(graphs, precision)
        self._can_pack = all(supports_packing(e) for e in self._encoders.values()) and keras.packing

    def _compile_checked(self, graphs: dict, precision: str | None) -> dict[str, Compiled]:
        """Compiled towers whose probe vectors match Keras (cosine >= MIN_COSINE); the CPU's own
        precision falls back to float32 when it does not."""
        compiled = {}
        for tower, graph in graphs.items():
            runs = compiled.get("doc") if graphs.get("doc") is graph else None
            if runs is None:
                runs = Compiled(graph, self.settings, precision)
                worst = self._check(runs, tower)
                if worst < MIN_COSINE and runs.precision != "f32" and precision is None:
                    runs = Compiled(graph, self.settings, "f32")
                    worst = self._check(runs, tower)
                if worst < MIN_COSINE:
                    raise UserError(
                        f"OpenVINO's {tower} tower differs from Keras (min cosine {worst:.4f} < {MIN_COSINE} "
                        "on probe texts): use --engine keras"
                    )
            compiled[tower] = runs
        return compiled

    def _check(self, runs: Compiled, tower: str) -> float:
        want = self.keras.encode(PROBES, tower, batch_size=len(PROBES))
        got = np.concatenate([runs(self._tokens([t], tower)) for t in PROBES])
        return _min_cosine(got, want)

    def _tokens(self, texts: list[str], tower: str) -> dict[str, np.ndarray]:
        ids = self.keras.tokenized(texts, tower)
        return {k: ids[k] for k in PADDED_KEYS}

    @property
    def engine(self) -> str:
        runs = self._padded["query"]
        packing = "packed batches" if self._can_pack else "padded batches"
        per_call = runs.threads // runs.streams
        threads = f"{per_call} thread{'s' if per_call > 1 else ''}"
        calls = f"{runs.streams} calls at once, {threads} each" if runs.streams > 1 else threads
        return f"OpenVINO {runs.precision}, {calls}, {packing}"

    def _packed_tower(self, tower: str) -> Compiled:
        with self._lock:
            if tower not in self._packed:
                other = "doc" if tower == "query" else "query"
                if self._encoders[tower] is self._encoders[other] and other in self._packed:
                    self._packed[tower] = self._packed[other]
                else:
                    precision = self._padded[tower].precision
                    graph = _packed_graph(self._encoders[tower])
                    self._packed[tower] = Compiled(graph, self.settings, precision)
            return self._packed[tower]

    def _encode_all(self, batches: list[list[str]], tower: str) -> Iterator[np.ndarray]:
        """With several streams, that many batches run at once (OpenVINO releases the GIL while
        it computes); results come back in order."""
        streams = self._padded[tower].streams
        if streams == 1 or len(batches) == 1:
            yield from super()._encode_all(batches, tower)
            return
        with ThreadPoolExecutor(streams, thread_name_prefix="openvino") as pool:
            yield from pool.map(lambda batch: self._encode(batch, tower), batches)

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        tokens = self._tokens(texts, tower)
        packed = pack_inputs(tokens) if self._can_pack and len(texts) > 1 else None
        if packed is None:
            return self._padded[tower](tokens)
        return self._packed_tower(tower)({**packed, "batch": np.array(len(texts), np.int32)})


def openvino_embedder(keras: KerasEmbedder, engine: str, say=None) -> Embedder:
    """`keras` run by OpenVINO per `engine` ("auto", "openvino", "keras"); under "auto" anything
    that keeps OpenVINO from running the model is said once and Keras runs it."""
    if engine == "keras":
        return keras
    if not available():
        if engine == "openvino":
            raise UserError("--engine openvino: OpenVINO is not installed (pip install openvino)")
        return keras
    try:
        return OpenVINOEmbedder(keras)
    except Exception as e:  # conversion or compilation of a graph OpenVINO does not support
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if engine == "openvino":
            raise UserError(f"--engine openvino: {first}") from None
        if say is not None:
            say(f"warning: OpenVINO cannot run {keras.name} ({first}); encoding with Keras")
        return keras
