"""Embedders turn texts into vectors: the base class, a Keras dual encoder, an exported SavedModel.

`retrieval.artifacts.load_embedder(spec)` picks one for what the CLIs accept as MODEL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.data.image_files import ImageReader
from deepseek_tf.errors import UserError
from deepseek_tf.models.images import image_reader
from deepseek_tf.models.loading import EXPORT_META, load_exported_saved_model, weights_fingerprint
from deepseek_tf.models.packed import pack_inputs, packed_encode, packed_signature, supports_packing


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels (decided once, when TensorFlow loads)."""
    # TensorFlow has no public call that says so; this module is what tf.sysconfig-style checks use
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


class Embedder:
    """Base: subclasses implement `_encode(texts, tower)` for one batch of raw strings."""

    name = "embedder"
    fingerprint = ""
    image_dim: int | None = None  # the length of the image vectors its document tower reads, if any
    image_reader: ImageReader | None = None  # image files -> those vectors, for a model with an image backbone
    image_backbone: str | None = None  # an export's model.image_backbone ("none" or None: it reads no image files)

    @property
    def engine(self) -> str:
        """What runs the model, in words (commands print it: which engine and precision)."""
        return f"TensorFlow, oneDNN {'on' if onednn_enabled() else 'off'}"

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        raise NotImplementedError

    def encode(
        self,
        texts: list[str],
        tower: str = "doc",
        batch_size: int = 64,
        progress: bool = False,
        images: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Encodes in length-sorted batches (padding stays small); rows keep the input order.
        `images` (documents of an embedder with `image_dim`): (N, image_dim) vectors, (N,) mask."""
        if tower == "doc":
            self.refuse_without_image_reader()
        if not texts:
            return np.zeros((0, 0), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        text_batches = [[texts[i] for i in idx] for idx in batches]
        if images is None:
            encoded = self._encode_all(text_batches, tower)
        else:
            encoded = (self._encode_fused(b, tuple(a[idx] for a in images)) for b, idx in zip(text_batches, batches))
        done = zip(batches, encoded)
        if progress:  # a bar on a terminal, plain lines in a log
            from deepseek_tf.console import progress as shown

            label = {"query": "queries", "doc": "docs"}.get(tower, tower)
            done = shown(done, f"encoding {label}", unit="batch", leave=False, total=len(batches))
        out: np.ndarray | None = None
        for idx, vecs in done:
            if out is None:
                out = np.zeros((len(texts), vecs.shape[-1]), np.float32)
            out[idx] = vecs
        return out

    def refuse_without_image_reader(self) -> None:
        """A model trained on image files whose export cannot read them (one made before exports
        carried the backbone) would read `image_embedding`, which such corpora lack: every document
        would get the placeholder in place of its image, and retrieval would quietly get worse."""
        if self.image_backbone not in (None, "none") and self.image_reader is None:
            raise UserError(
                f"{self.name}: this model reads documents' image files through its {self.image_backbone} "
                "backbone, which this export does not carry (no encode_image endpoint or PREFIX.image.tflite); "
                "export the trained model again"
            )

    def _encode_all(self, batches: list[list[str]], tower: str) -> Iterator[np.ndarray]:
        """Every batch's vectors, in order; an engine that runs several calls at once overrides it."""
        return (self._encode(batch, tower) for batch in batches)

    def encode_queries(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.encode(texts, "query", batch_size, progress)

    def encode_docs(
        self,
        texts: list[str],
        batch_size: int = 64,
        progress: bool = False,
        images: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Document vectors. An embedder with `image_dim` takes `images` ((N, image_dim) vectors, (N,)
        mask) and encodes each text with its image (`_encode_fused`); one without refuses them."""
        if images is not None and self.image_dim is None:
            raise UserError(f"{self.name}: this model's document tower reads text only, not image vectors")
        if images is None and self.image_dim is not None:
            raise UserError(
                f"{self.name}: this model's document tower reads image vectors too; this command gives it text only"
            )
        return self.encode(texts, "doc", batch_size, progress, images)

    def _encode_fused(self, texts: list[str], images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """One batch of documents with their image vectors and mask (an embedder with `image_dim`)."""
        raise NotImplementedError


class KerasEmbedder(Embedder):
    """A DualEncoder plus its tokenizer, one compiled graph per tower.

    With `packing` (the default) a batch of texts shares rows instead of padding each to the
    longest (`models.packed`): the same vectors for less work, e.g. a micro-batch of queries."""

    def __init__(
        self,
        model,
        tokenizer,
        query_max_length: int,
        doc_max_length: int,
        name: str,
        fingerprint: str = "",
        packing: bool = True,
    ):
        self.model, self.tokenizer, self.name, self.fingerprint = model, tokenizer, name, fingerprint
        fusion = getattr(model, "doc_fusion", None)
        self.image_dim = None if fusion is None else fusion.image_dim
        self.image_reader = image_reader(getattr(model, "image_encoder", None))
        self.max_length = {"query": query_max_length, "doc": doc_max_length}
        towers = {"query": model.query_encoder, "doc": model.doc_tower}
        text_spec = [tf.TensorSpec([None], tf.string)]
        # tokenizer.tower adds the tower's prefix (e5's "query: " / "passage: ")
        self._fns = {
            k: tf.function(
                lambda t, enc=enc, k=k: enc(tokenizer.tower(t, self.max_length[k], k), training=False),
                input_signature=text_spec,
            )
            for k, enc in towers.items()
        }
        self._tokenize = {
            k: tf.function(lambda t, k=k: tokenizer.tower(t, self.max_length[k], k), input_signature=text_spec)
            for k in towers
        }
        self._packed = {}
        if packing and all(supports_packing(enc) for enc in towers.values()):
            self._packed = {
                k: tf.function(lambda p, b, enc=enc: packed_encode(enc, p, b), input_signature=packed_signature())
                for k, enc in towers.items()
            }
            # a batch packing does not shrink runs padded from the ids already made, not tokenized again
            token_spec = {
                k: tf.TensorSpec([None, None], v.dtype)
                for k, v in self._tokenize["query"].get_concrete_function().structured_outputs.items()
            }
            self._padded = {
                k: tf.function(lambda x, enc=enc: enc(x, training=False), input_signature=[token_spec])
                for k, enc in towers.items()
            }

    @property
    def packing(self) -> bool:
        """Whether batches of several texts run packed (see the class docstring)."""
        return bool(self._packed)

    def tokenized(self, texts: list[str], tower: str) -> dict[str, np.ndarray]:
        """The tower's padded model inputs for `texts` (token_ids, padding_mask, segment_ids), (batch, width)."""
        return {k: v.numpy() for k, v in self._tokenize[tower](tf.constant(texts)).items()}

    @property
    def engine(self) -> str:
        packing = "packed batches" if self._packed else "padded batches"
        return f"Keras float32, {packing}, {super().engine}"

    def _encode_fused(self, texts: list[str], images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The model's `encode_doc` in two steps: the text tower as for text alone, then its image fusion."""
        return self.model.doc_fusion(self._encode(texts, "doc"), *images).numpy()  # (batch, dim)

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        if len(texts) > 1 and self._packed:
            tokens = self._tokenize[tower](tf.constant(texts))
            packed = pack_inputs({k: v.numpy() for k, v in tokens.items()})
            if packed is None:
                return self._padded[tower](tokens).numpy()
            return self._packed[tower](packed, tf.constant(len(texts), tf.int32)).numpy()
        return self._fns[tower](tf.constant(texts)).numpy()


class SavedModelEmbedder(Embedder):
    """An exported SavedModel with `encode_query` / `encode_doc` string signatures; a model with
    an image backbone has `encode_image(pixels)` too, which is its `image_reader`."""

    def __init__(self, path: Path):
        self.name, self.loaded = path.name, load_exported_saved_model(Path(path))
        self.fingerprint = weights_fingerprint(path)
        for sig in ("encode_query", "encode_doc"):
            if not hasattr(self.loaded, sig):
                raise UserError(f"{path}: SavedModel has no '{sig}' endpoint (not a deepseek_tf export?)")
        meta = json.loads((Path(path) / EXPORT_META).read_text(encoding="utf-8"))
        model_config = meta.get("model_config", {})
        if "image" in model_config.get("doc_inputs", ()):  # encode_doc(text, image_embedding, image_mask)
            self.image_dim = int(model_config["image_dim"])
        self.image_backbone = model_config.get("image_backbone")
        if hasattr(self.loaded, "encode_image") and self.image_dim is not None:
            encode = self.loaded.encode_image
            size = int(meta.get("image_size", model_config.get("image_size", 0)))
            self.image_reader = ImageReader(
                lambda pixels: encode(tf.constant(np.asarray(pixels, np.float32))).numpy(), size, self.image_dim
            )

    @property
    def engine(self) -> str:
        return f"SavedModel float32, {super().engine}"

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        fn = self.loaded.encode_query if tower == "query" else self.loaded.encode_doc
        return np.asarray(fn(tf.constant(texts)))

    def _encode_fused(self, texts: list[str], images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        vectors, mask = images
        return np.asarray(self.loaded.encode_doc(tf.constant(texts), tf.constant(vectors), tf.constant(mask)))
