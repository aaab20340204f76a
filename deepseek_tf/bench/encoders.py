"""The encode section of `make bench`: throughput of every encoder over the same texts.

Our Keras model (graph, optionally XLA), SavedModel and TFLite (float32, dynamic int8) against
sentence-transformers' `encode` (PyTorch float32), at one batch size, max length and thread
count; each row also carries its cosine agreement with the peer's vectors.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepseek_tf.bench.machine import log, matmul_rate
from deepseek_tf.bench.peers import PRESET, sentence_transformer
from deepseek_tf.bench.report import encode_row, token_weighted_length
from deepseek_tf.bench.variants import tflite_systems


def xla_embedder(model, tokenizer, max_length: int, batch_size: int, bucket: int = 32):
    """Our Keras doc tower with the transformer under XLA (`jit_compile=True`).

    The tokenizer (tensorflow-text) has no XLA kernels, so it runs in a plain graph; ids are
    padded to `batch_size` rows and a multiple of `bucket` columns (pads are masked out), so
    XLA compiles max_length / bucket shapes instead of one per batch shape. `warm_up()`
    compiles them all before timing.
    """
    import tensorflow as tf

    from deepseek_tf.retrieval.embedders import Embedder

    tower = model.doc_tower
    tokenize = tf.function(lambda t: tokenizer(t, max_length), input_signature=[tf.TensorSpec([None], tf.string)])
    encode = tf.function(lambda ids: tower(ids, training=False), jit_compile=True)
    widths = sorted({min(w, max_length) for w in range(bucket, max_length + bucket, bucket)})

    class XlaEmbedder(Embedder):
        name = "keras-xla"

        def _encode(self, texts: list[str], tower_name: str) -> np.ndarray:
            ids = tokenize(tf.constant(texts))
            rows, width = len(texts), int(ids["token_ids"].shape[1])
            target = next(w for w in widths if w >= width)
            ids = {k: tf.pad(v, [[0, batch_size - rows], [0, target - width]]) for k, v in ids.items()}
            return encode(ids).numpy()[:rows]  # (rows, dim)

        def warm_up(self) -> None:
            for w in widths:
                encode(
                    {
                        "token_ids": tf.ones([batch_size, w], tf.int32),
                        "padding_mask": tf.ones([batch_size, w], tf.bool),
                        "segment_ids": tf.zeros([batch_size, w], tf.int32),
                    }
                )

    return XlaEmbedder()


def encoders(args: argparse.Namespace, workdir: Path) -> tuple[list[tuple[str, str, Callable]], list[dict], object]:
    """(system, kind, fn(texts) -> (N, D)) for every encoder, rows for those that could not be
    built (with the reason), and our Keras embedder. Exports (SavedModel, TFLite) happen here,
    outside the timing."""
    from deepseek_tf.export.saved_model import export_saved_model
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.embedders import SavedModelEmbedder

    bs, L = args.batch_size, args.max_length
    keras_emb = load_embedder(PRESET, engine="keras")  # the Keras rows; the default engine is in encode_peers
    st = sentence_transformer(L)
    systems = [
        (
            "sentence-transformers (PyTorch fp32)",
            "peer",
            lambda t: st.encode(t, batch_size=bs, convert_to_numpy=True, show_progress_bar=False),
        ),
        ("deepseek_tf Keras (graph)", "keras", lambda t: keras_emb.encode(t, "doc", bs)),
    ]
    if args.xla:
        xla = xla_embedder(keras_emb.model, keras_emb.tokenizer, L, bs)
        log("  compiling the XLA shapes ...")
        xla.warm_up()
        systems.append(("deepseek_tf Keras + XLA", "keras_xla", lambda t: xla.encode(t, "doc", bs)))
    saved = workdir / "saved_model"
    log("  exporting the SavedModel ...")
    export_saved_model(PRESET, saved)
    sm = SavedModelEmbedder(saved)
    systems.append(("deepseek_tf SavedModel", "saved_model", lambda t: sm.encode(t, "doc", bs)))

    def tflite(quantize: str, system: str) -> Callable:
        from deepseek_tf.export.tflite import convert
        from deepseek_tf.retrieval.tflite import TFLiteEmbedder

        log(f"  converting TFLite ({quantize}) ...")
        path = workdir / f"doc-{quantize}.tflite"
        path.write_bytes(convert(saved, "encode_doc", quantize))  # the doc tower only: it is what we time
        emb = TFLiteEmbedder(path, num_threads=args.threads)
        return lambda t: emb.encode(t, "doc", bs)

    converted, failed = tflite_systems(tflite)
    return systems + converted, failed, keras_emb


def bench_encoders(
    texts: list[str], args: argparse.Namespace, workdir: Path, matmul: dict
) -> tuple[list[dict], dict, np.ndarray, object]:
    """Encode throughput of every system over all `texts`: (rows, stats, our Keras doc vectors,
    our Keras embedder).

    The texts are cut into `args.rounds` strided slices (same length mix in each) and every
    round runs every system on its slice in turn, so a burst of load from other processes
    hits all systems alike instead of whichever ran at that moment. The matmul rate is measured
    again each round and `matmul` keeps the best seen (a conservative share). Each system first
    encodes the widest batch once, untimed (graph tracing, buffer allocation).
    """
    import tensorflow as tf

    bs, L = args.batch_size, args.max_length
    systems, failed, keras_emb = encoders(args, workdir)
    lengths = np.sum(np.asarray(keras_emb.tokenizer(tf.constant(texts), L)["padding_mask"]), axis=1)  # (N,)
    n_tokens = int(lengths.sum())  # non-pad tokens, [CLS]/[SEP] included: what every system computes on
    warm = sorted(texts, key=len)[-bs:]
    for _, _, fn in systems:
        fn(warm)
    rounds = max(1, min(args.rounds, len(texts) // bs))
    seconds = {kind: [] for _, kind, _ in systems}
    vecs = {kind: np.zeros((len(texts), 0), np.float32) for _, kind, _ in systems}
    for r in range(rounds):
        again = matmul_rate(matmul["n"], repeats=2, rounds=1)
        matmul.setdefault("round_tf_flops", []).append(again["tf_flops"])
        for key in ("tf_flops", "torch_flops"):
            if key in again:
                matmul[key] = max(matmul.get(key, 0.0), again[key])
        idx = np.arange(r, len(texts), rounds)
        part = [texts[i] for i in idx]
        for system, kind, fn in systems if r % 2 == 0 else systems[::-1]:  # no system always goes first
            log(f"  encode round {r + 1}/{rounds}: {system} ...")
            start = time.perf_counter()
            out = np.asarray(fn(part), np.float32)  # (len(part), dim)
            seconds[kind].append(time.perf_counter() - start)
            if vecs[kind].shape[1] == 0:
                vecs[kind] = np.zeros((len(texts), out.shape[1]), np.float32)
            vecs[kind][idx] = out
    rows = []
    for system, kind, _ in systems:
        row = encode_row(system, kind, len(texts), n_tokens, sum(seconds[kind]), vecs[kind], vecs["peer"])
        row["round_seconds"] = seconds[kind]
        rows.append(row)
    stats = {
        "texts": len(texts),
        "tokens": n_tokens,
        "mean_tokens": n_tokens / len(texts),
        "token_weighted_length": token_weighted_length(lengths),
        "max_length": L,
        "batch_size": bs,
        "rounds": rounds,
    }
    return rows + failed, stats, vecs["keras"], keras_emb
