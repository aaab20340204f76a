"""Running exported `.tflite` files on raw strings: dual-encoder towers and cross-encoder scorers.

The files hold tensorflow-text kernels (FastBertNormalize, FastWordpieceTokenizeWithOffsets,
RaggedTensorToTensor) as custom ops, resolved at run time by
`tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS`. That registrar is compiled against
TensorFlow's own TFLite runtime, so files run in
`tensorflow.lite.python.interpreter.InterpreterWithCustomOps`; ai-edge-litert ships a separate
runtime whose interpreter cannot take these kernels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from deepseek_tf.data.image_files import ImageReader
from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.embedders import Embedder
from deepseek_tf.retrieval.engines import default_threads

TOWERS = ("query", "doc")
IMAGE_TOWER = "image"  # a model with an image backbone: pixels -> image vectors, beside the towers


def tower_paths(output: str | Path, image: bool = False) -> dict[str, Path]:
    """`export/minilm` or `export/minilm.tflite` -> {"query": export/minilm.query.tflite, ...};
    with `image`, "image": export/minilm.image.tflite as well."""
    output = Path(output)
    prefix = output.with_suffix("") if output.suffix == ".tflite" else output
    return {t: prefix.with_name(f"{prefix.name}.{t}.tflite") for t in (*TOWERS, *[IMAGE_TOWER] * image)}


def meta_path(tflite_path: str | Path) -> Path:
    return Path(tflite_path).with_suffix(".json")


@contextlib.contextmanager
def native_stderr_silenced():
    """TFLite's C++ side prints INFO lines on fd 2 (XNNPACK delegate created, quantizer flags),
    which would break the CLI's one-line errors; failures still arrive as Python exceptions."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _interpreter(model_content: bytes, num_threads: int | None = None, source: str | Path = "TFLite model"):
    """TF's TFLite interpreter with the tensorflow-text kernels registered.

    num_threads None -> `default_threads()`. TFLite's own default is one thread: reranking a
    top-100 with a MiniLM cross-encoder took 8.4 s with it and 4.6 s with both cores of a
    2-core AMD EPYC (docs/results.md), where the Keras model took 8.4 s.
    """
    import tensorflow_text as tft
    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps

    num_threads = default_threads() if num_threads is None else num_threads
    if num_threads < 1:
        raise UserError(f"TFLite threads must be >= 1, got {num_threads}")
    try:
        with warnings.catch_warnings(), native_stderr_silenced():  # "deprecated": see module docstring
            warnings.simplefilter("ignore")
            return InterpreterWithCustomOps(
                model_content=model_content,
                num_threads=num_threads,
                custom_op_registerers=tft.tflite_registrar.SELECT_TFTEXT_OPS,
            )
    except (ValueError, RuntimeError) as e:  # the flatbuffer verifier's "Model provided has model identifier ..."
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{source}: not a valid TFLite file (corrupt or truncated? {first})") from None


# A fused document tower's inputs beside the text: encode_doc(text, image_embedding, image_mask).
IMAGE_INPUTS = ("image_embedding", "image_mask")


class TFLiteRunner:
    """One interpreter with a string[N] input; re-allocates only when the batch size changes.

    A document tower that fuses images has three inputs, text string[N], image_embedding
    float32[N, image_dim] and image_mask float32[N]; it runs through its signature runner and
    `image_dim` says the vectors' length (None for a text-only tower)."""

    def __init__(self, model_content: bytes, num_threads: int | None = None, source: str | Path = "TFLite model"):
        self.interpreter = _interpreter(model_content, num_threads, source)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self.image_dim, self.signature = None, None
        if len(inputs) == 3 and len(outputs) == 1:
            self._image_signature(inputs)
            return
        if len(inputs) != 1 or inputs[0]["dtype"] not in (np.bytes_, np.object_) or len(outputs) != 1:
            raise UserError("not a deepseek_tf TFLite tower (expected one string input, one output)")
        if list(inputs[0]["shape_signature"]) != [-1]:
            raise UserError(f"TFLite input has shape {list(inputs[0]['shape_signature'])}, expected [-1] (any batch)")
        self.input, self.output = inputs[0]["index"], outputs[0]["index"]
        self.batch = -1

    def _image_signature(self, inputs: list[dict]) -> None:
        signatures = self.interpreter.get_signature_list()
        want = sorted(("text", *IMAGE_INPUTS))
        name = next((k for k, v in signatures.items() if sorted(v["inputs"]) == want), None)
        if name is None:
            raise UserError("not a deepseek_tf TFLite tower (expected inputs text, image_embedding, image_mask)")
        self.signature = self.interpreter.get_signature_runner(name)  # resizes its inputs per call
        shape = self.signature.get_input_details()["image_embedding"]["shape_signature"]
        self.image_dim = int(shape[-1])

    def __call__(self, texts: list[str], images: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        if (images is None) != (self.signature is None):
            raise UserError(
                "this TFLite document tower reads image vectors too"
                if images is None
                else "this TFLite tower reads text only, not image vectors"
            )
        encoded = np.array([t.encode("utf-8") for t in texts], dtype=object)
        if self.signature is not None:
            vectors, mask = (np.asarray(a, np.float32) for a in images)
            with native_stderr_silenced():  # the signature runner re-allocates when N changes
                out = self.signature(text=encoded, image_embedding=vectors, image_mask=mask)
            return np.array(next(iter(out.values())), np.float32)  # (N, D), a copy
        if len(texts) != self.batch:  # the batch dimension is dynamic (shape_signature [-1])
            with native_stderr_silenced():  # delegates are (re)applied here
                self.interpreter.resize_tensor_input(self.input, [len(texts)])
                self.interpreter.allocate_tensors()
            self.batch = len(texts)
        self.interpreter.set_tensor(self.input, encoded)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output), np.float32)  # (N, D), a copy


class TFLiteImageRunner:
    """An image backbone's file: pixels float32[N, size, size, 3] (RGB in [0, 255]) -> (N, dim)
    float32; re-allocates only when the batch size changes. Builtin ops only (no tokenizer)."""

    def __init__(self, model_content: bytes, num_threads: int | None = None, source: str | Path = "TFLite model"):
        self.interpreter = _interpreter(model_content, num_threads, source)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        shape = [int(d) for d in inputs[0]["shape_signature"]] if len(inputs) == 1 else []
        if len(shape) != 4 or shape[0] != -1 or shape[3] != 3 or shape[1] != shape[2] or len(outputs) != 1:
            raise UserError(f"{source}: not a deepseek_tf TFLite image tower (expected pixels [-1, size, size, 3])")
        self.size, self.dim = shape[1], int(outputs[0]["shape_signature"][-1])
        self.input, self.output = inputs[0]["index"], outputs[0]["index"]
        self.batch = -1

    def __call__(self, pixels) -> np.ndarray:
        pixels = np.asarray(pixels, np.float32)
        if len(pixels) != self.batch:
            with native_stderr_silenced():  # delegates are (re)applied here
                self.interpreter.resize_tensor_input(self.input, [len(pixels), self.size, self.size, 3])
                self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        self.interpreter.set_tensor(self.input, pixels)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output), np.float32)  # (N, dim), a copy

    def reader(self) -> ImageReader:
        return ImageReader(self, self.size, self.dim)


QUANT_NAMES = {"none": "float32", "float16": "float16", "dynamic": "dynamic int8", "int8": "int8"}


class TFLiteEmbedder(Embedder):
    """Runs exported `.tflite` towers on raw strings.

    `path` is either tower's file; the metadata JSON beside it names the other tower's
    file, so `PREFIX.query.tflite` alone loads the pair. A file without metadata serves
    both towers. A model with an image backbone has a third file, `PREFIX.image.tflite`, named
    there too: it is the embedder's `image_reader`.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"TFLite file not found: {path}")
        self.name = path.name
        self.meta = read_meta(path)
        files = {t: path.with_name(n) for t, n in self.meta.get("tower_files", {}).items()}
        files = {t: files.get(t, path) for t in TOWERS} | {t: f for t, f in files.items() if t == IMAGE_TOWER}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise UserError(f"{path}: its metadata names {missing[0]}, which is missing")
        blobs = {t: f.read_bytes() for t, f in files.items()}
        self.fingerprint = _blob_hash(b"".join(blobs.values()))  # query, doc (, image): text-only hashes as before
        self.runners = {"query": TFLiteRunner(blobs["query"], num_threads, files["query"])}
        self.runners["doc"] = (
            self.runners["query"]
            if files["doc"] == files["query"]
            else TFLiteRunner(blobs["doc"], num_threads, files["doc"])
        )
        self.image_dim = self.runners["doc"].image_dim
        self.image_backbone = self.meta.get("model_config", {}).get("image_backbone")
        if IMAGE_TOWER in blobs:
            self.image_reader = TFLiteImageRunner(blobs[IMAGE_TOWER], num_threads, files[IMAGE_TOWER]).reader()

    @property
    def engine(self) -> str:
        return f"TFLite {QUANT_NAMES.get(self.meta.get('quantization', 'none'), 'float32')}"

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        return self.runners[tower](texts)

    def _encode_fused(self, texts: list[str], images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return self.runners["doc"](texts, images)


def read_meta(path: Path) -> dict:
    """The export's metadata beside a .tflite file ({} when there is none)."""
    meta = meta_path(path)
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{meta}: corrupt TFLite metadata ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{meta}: corrupt TFLite metadata (not a JSON object)")
    return data


def _blob_hash(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


class TFLiteScorer:
    """A cross-encoder `.tflite` file: `scorer(queries, docs) -> (N,)` on raw strings.

    Callable on string tensors or lists, so it drops into `rerank.Reranker` as a score_fn.
    """

    def __init__(self, source: str | Path | bytes, num_threads: int | None = None):
        if not isinstance(source, bytes):
            if not Path(source).is_file():
                raise UserError(f"TFLite file not found: {source}")
            name, source = source, Path(source).read_bytes()
        else:
            name = "TFLite model"
        self.interpreter = _interpreter(source, num_threads, name)
        signatures = self.interpreter.get_signature_list()
        if "score" not in signatures or sorted(signatures["score"]["inputs"]) != ["doc", "query"]:
            raise UserError("not a cross-encoder TFLite file (no score(query, doc) signature)")
        self.runner = self.interpreter.get_signature_runner("score")  # resizes inputs per call

    def __call__(self, queries, docs) -> np.ndarray:
        as_bytes = lambda xs: np.array(
            [
                x if isinstance(x, bytes) else str(x).encode("utf-8")
                for x in (xs.numpy() if hasattr(xs, "numpy") else xs)
            ],
            dtype=object,
        )
        with native_stderr_silenced():  # the signature runner re-allocates when N changes
            out = self.runner(query=as_bytes(queries), doc=as_bytes(docs))
        return np.array(next(iter(out.values())), np.float32).reshape(-1)  # (N,)
