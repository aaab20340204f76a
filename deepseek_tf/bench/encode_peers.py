"""`make bench`'s encode-peers section: all-MiniLM-L6-v2 through every CPU runtime sentence-transformers
offers, beside ours, on the same texts, batches and threads.

Rows: sentence-transformers on PyTorch float32 (the reference), ONNX Runtime float32 and dynamic int8
(per-channel weights off and on), OpenVINO at its default precision and at forced f32, OpenVINO static
int8 calibrated on corpus texts, and our `load_embedder` (Keras engine and the default engine). Speed
alone would flatter the int8 and bf16 paths, so each row also says what it costs: cosine of its vectors
to the float32 PyTorch ones, and nDCG@10 on Cranfield test and QBQTC dev. Everything runs offline;
exports go to a copy of the checkpoint in a temp dir, never into site-packages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepseek_tf.bench.peers import PRESET, peer_checkpoint_copy, sentence_transformer
from deepseek_tf.bench.report import cpu_model, ratio

CPU_FLAGS = ("avx2", "avx512_vnni", "avx512_bf16", "amx_tile")
CALIBRATION_LENGTH = 384  # sentence-transformers pads its calibration texts to 384 tokens; so do we
DEV_FRACTION = 0.2  # QBQTC dev: as `deepseek-tf evaluate --split train --dev-fraction 0.2`
QUICK = {"docs": 32, "calibration": 16, "ndcg_docs": 100, "ndcg_queries": 10}  # a smoke run in a minute or two
OFF_ON = ("off", "on")
Encode = Callable[[list[str]], np.ndarray]  # one batch of texts -> (len(batch), dim)


@dataclass
class System:
    """One row: how it encodes a batch of documents and of queries (None: as documents).

    `whole`: the encoders take every text at once and cut the same length-sorted batches themselves
    (ours: an engine may run several batches at once, which one call per batch would forbid)."""

    name: str
    engine: str
    encode_docs: Encode
    encode_queries: Encode | None = None
    note: str = ""
    whole: bool = False


# ------------------------------------------------------------------------ pure parts
def length_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Fixed batches of indices in length order (characters, Python's stable sort: `Embedder.encode`'s
    own cut), so every system gets the same lists, ours too when it is handed every text at once."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def cosine_stats(vecs: np.ndarray, reference: np.ndarray) -> dict:
    """Mean and min over rows of cos(vecs_i, reference_i)."""
    a, b = np.asarray(vecs, np.float64), np.asarray(reference, np.float64)  # (N, D) each
    cos = np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)  # (N,)
    return {"mean": float(np.mean(cos)), "min": float(np.min(cos))}


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of avx2, avx512_vnni, avx512_bf16, amx_tile /proc/cpuinfo lists (the int8 and bf16 paths hinge on them)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = next((line.partition(":")[2].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [f for f in CPU_FLAGS if f in flags]


def quantization_arch(flags: list[str]) -> str:
    """optimum's `AutoQuantizationConfig` preset for this CPU: VNNI's int8 dot products when present."""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def encode_batches(
    encode: Encode, texts: list[str], batches: list[list[int]], whole: bool = False
) -> tuple[np.ndarray, float]:
    """(vectors in input order (N, dim), seconds) for `batches` of `texts`, one `encode` call each;
    `whole`: one call with every text, which cuts the same `batches` itself."""
    out: np.ndarray | None = None
    start = time.perf_counter()
    if whole:
        return np.asarray(encode(texts), np.float32), time.perf_counter() - start
    for idx in batches:
        vecs = np.asarray(encode([texts[i] for i in idx]), np.float32)  # (len(idx), dim)
        if out is None:
            out = np.zeros((len(texts), vecs.shape[-1]), np.float32)
        out[idx] = vecs
    return out, time.perf_counter() - start


def failed_row(system: str, engine: str, reason: str) -> dict:
    return {"system": system, "engine": engine, "measured": False, "note": f"not measured: {reason}"}


def why(e: BaseException) -> str:
    """An exception's first line, for a row that says why it is missing."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


# ------------------------------------------------------------------------ systems
def st_system(name: str, engine: str, st, note: str = "") -> System:
    """A SentenceTransformer as a row: one `encode` call per prepared batch (its own length sort is then moot)."""
    fn = lambda t: st.encode(t, batch_size=len(t), convert_to_numpy=True, show_progress_bar=False)
    return System(name, engine, fn, note=note)


def onnx_systems(copy: Path, threads: int, max_length: int, arch: str) -> list[System | dict]:
    """ONNX Runtime float32 (sentence-transformers' export) and dynamic int8 as
    `export_dynamic_quantized_onnx_model` writes it, with per-channel weights off and on."""
    names = [f"sentence-transformers ONNX Runtime {x}" for x in ("fp32", *(f"int8 (per-channel {y})" for y in OFF_ON))]
    try:
        import onnxruntime as ort
    except ImportError as e:
        return [failed_row(name, "ONNX Runtime", why(e)) for name in names]

    def kwargs(file_name: str) -> dict:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1  # exactly --threads, none idle
        return {"provider": "CPUExecutionProvider", "session_options": so, "file_name": file_name}

    version = ort.__version__
    try:
        exported = sentence_transformer(max_length, copy, "onnx", kwargs("model.onnx"))  # exports on load
        exported.save_pretrained(str(copy))  # -> copy/onnx/model.onnx
        st = sentence_transformer(max_length, copy, "onnx", kwargs("onnx/model.onnx"))
    except Exception as e:  # an export error is a row, not a crash (the int8 rows quantize this export)
        return [failed_row(name, f"ONNX Runtime {version}", f"the fp32 export failed: {why(e)}") for name in names]
    rows: list[System | dict] = [st_system(names[0], f"ONNX Runtime {version} fp32, CPU EP", st)]
    for name, per_channel in zip(names[1:], (False, True)):
        engine = f"ONNX Runtime {version} dynamic int8 (optimum {arch}, per-channel {OFF_ON[per_channel]})"
        try:
            from optimum.onnxruntime.configuration import AutoQuantizationConfig
            from sentence_transformers import export_dynamic_quantized_onnx_model

            config = getattr(AutoQuantizationConfig, arch)(is_static=False, per_channel=per_channel)
            suffix = f"qint8_{arch}{'_per_channel' if per_channel else ''}"
            export_dynamic_quantized_onnx_model(exported, config, str(copy), file_suffix=suffix)
            quantized = sentence_transformer(max_length, copy, "onnx", kwargs(f"onnx/model_{suffix}.onnx"))
        except Exception as e:
            rows.append(failed_row(name, engine, why(e)))
        else:
            rows.append(st_system(name, engine, quantized))
    return rows


def ov_precision(st) -> str:
    """The precision OpenVINO's CPU plugin compiled the model at ('bf16', 'f32', ...)."""
    return st[0].auto_model.request.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def openvino_systems(copy: Path, threads: int, max_length: int, calibration: list[str]) -> list[System | dict]:
    """OpenVINO at its default precision and forced f32, and static int8 as
    `export_static_quantized_openvino_model` makes it, but calibrated on local corpus texts (it would
    download GLUE/SST-2 from the Hub)."""
    names = [f"sentence-transformers OpenVINO {x}" for x in ("(default precision)", "f32", "static int8")]
    try:
        import openvino as ov
    except ImportError as e:
        return [failed_row(name, "OpenVINO", why(e)) for name in names]

    def kwargs(file_name: str, hint: str | None = None) -> dict:
        config = {"INFERENCE_NUM_THREADS": threads, **({"INFERENCE_PRECISION_HINT": hint} if hint else {})}
        return {"file_name": f"openvino/{file_name}", "ov_config": config}

    version = ov.get_version().split("-")[0]
    try:
        exported = sentence_transformer(max_length, copy, "openvino", {"ov_config": {"INFERENCE_NUM_THREADS": threads}})
        exported.save_pretrained(str(copy))  # -> copy/openvino/openvino_model.{xml,bin}
    except Exception as e:
        return [failed_row(name, f"OpenVINO {version}", f"the export failed: {why(e)}") for name in names]
    rows: list[System | dict] = []
    for name, hint in zip(names[:2], (None, "f32")):
        try:
            st = sentence_transformer(max_length, copy, "openvino", kwargs("openvino_model.xml", hint))
            engine = f"OpenVINO {version} {ov_precision(st)} ({'forced' if hint else 'default on this CPU'})"
        except Exception as e:
            rows.append(failed_row(name, f"OpenVINO {version}", why(e)))
        else:
            rows.append(st_system(name, engine, st))
    try:  # nncf and optimum-intel's quantizer only here: the rows above run without them
        import nncf
        from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
        from sentence_transformers.backend.utils import save_or_push_to_hub_model

        tokens = exported.tokenizer(calibration, padding="max_length", max_length=CALIBRATION_LENGTH, truncation=True)
        samples = [{k: np.asarray([v[i]], np.int64) for k, v in tokens.items()} for i in range(len(calibration))]
        ov_config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(samples)))
        quantizer = OVQuantizer.from_pretrained(exported[0].auto_model)
        save_or_push_to_hub_model(  # what export_static_quantized_openvino_model runs, with our data
            export_function=lambda save_dir: quantizer.quantize(
                nncf.Dataset(samples), save_directory=save_dir, ov_config=ov_config
            ),
            export_function_name="export_static_quantized_openvino_model",
            config=ov_config.quantization_config,
            model_name_or_path=str(copy),
            file_suffix="qint8_quantized",
            backend="openvino",
            model=exported,
        )
        st = sentence_transformer(max_length, copy, "openvino", kwargs("openvino_model_qint8_quantized.xml"))
        engine = f"OpenVINO {version} static int8 (NNCF, {len(samples)} corpus texts), other ops {ov_precision(st)}"
    except Exception as e:
        rows.append(failed_row(names[2], f"OpenVINO {version} static int8", why(e)))
    else:
        rows.append(st_system(names[2], engine, st))
    return rows


def our_system(name: str, engine: str, threads: int, batch_size: int) -> System:
    """`load_embedder(PRESET, engine=...)`; OpenVINO in its default layout (one call per core, one
    thread each) over --threads cores."""
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.engines import configure

    configure(streams=threads, threads=1)
    emb, note = load_embedder(PRESET, engine=engine), ""
    tower = lambda which: lambda t: emb.encode(t, which, batch_size)  # length_batches' batches, cut by encode
    return System(name, emb.engine, tower("doc"), tower("query"), note, whole=True)


def build_systems(
    workdir: Path, threads: int, max_length: int, batch_size: int, calibration: list[str], log
) -> tuple[list[System | dict], object]:
    """Every row in table order: a System ready to time (exports and calibration happen here, untimed)
    or, for one that could not be built, a row saying why; and the reference SentenceTransformer
    (the first System: the section needs it, so its errors are not caught)."""
    ref = sentence_transformer(max_length)  # UserError with the fix when sentence-transformers is missing
    import torch

    torch.set_num_threads(threads)
    entries: list[System | dict] = [
        st_system("sentence-transformers PyTorch fp32 (reference)", f"PyTorch {torch.__version__} fp32", ref)
    ]
    copy = peer_checkpoint_copy(workdir)
    log("  encode peers: ONNX Runtime export and dynamic int8 ...")
    entries += onnx_systems(copy, threads, max_length, quantization_arch(cpu_flags()))
    log(f"  encode peers: OpenVINO export and static int8 ({len(calibration)} calibration texts) ...")
    entries += openvino_systems(copy, threads, max_length, calibration)
    for name, engine in (("deepseek_tf, --engine keras", "keras"), ("deepseek_tf, default engine", "auto")):
        try:
            entries.append(our_system(name, engine, threads, batch_size))
        except Exception as e:
            entries.append(failed_row(name, engine or "default", why(e)))
    return entries, ref


# ------------------------------------------------------------------------ measurements
def ndcg_sets(dataset: Path, qbqtc: Path | None, quick: bool) -> tuple[dict, dict]:
    """({"cranfield_test": BeirDataset, "qbqtc_dev": BeirDataset or None}, how QBQTC dev was split): the
    queries `deepseek-tf evaluate --split train --dev-fraction 0.2` scores (data.dev_seed's default).
    Quick: 10 queries and 100 documents (their judged ones first) of each."""
    from deepseek_tf.config import DataConfig
    from deepseek_tf.data import load_beir, split_dev
    from deepseek_tf.data.splits import limit_corpus, sample_queries

    split = {"split": "train", "dev_fraction": DEV_FRACTION, "dev_seed": DataConfig.dev_seed}
    sets = {"cranfield_test": load_beir(dataset, "test", unknown_ids="drop"), "qbqtc_dev": None}
    if qbqtc is not None:
        ds = load_beir(qbqtc, split["split"], unknown_ids="drop")
        sets["qbqtc_dev"] = split_dev(ds, split["dev_fraction"], split["dev_seed"])[1]
    if quick:
        sets = {
            k: ds and limit_corpus(sample_queries(ds, QUICK["ndcg_queries"], 0), QUICK["ndcg_docs"], 0)
            for k, ds in sets.items()
        }
    return sets, split


def ndcg_at_10(system: System, ds, batch_size: int) -> float:
    """nDCG@10 (trec_eval, through `trec_metrics`) of exact dot-product search over normalized vectors."""
    from deepseek_tf.evaluate.metrics import trec_metrics
    from deepseek_tf.retrieval.knn import exact_search

    doc_ids = list(ds.corpus)
    docs = [ds.doc_text(d) for d in doc_ids]
    qids = [q for q in ds.qrels if q in ds.queries]
    queries = [ds.queries[q] for q in qids]
    encode_queries, whole = system.encode_queries or system.encode_docs, system.whole
    d, _ = encode_batches(system.encode_docs, docs, length_batches(docs, batch_size), whole)  # (n_docs, dim)
    q, _ = encode_batches(encode_queries, queries, length_batches(queries, batch_size), whole)  # (n_queries, dim)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    scores, idx = exact_search(q, d, 100)  # (n_queries, 100) each
    run = {qid: {doc_ids[j]: float(s) for s, j in zip(scores[r], idx[r])} for r, qid in enumerate(qids)}
    return trec_metrics(ds.qrels, run)[0]["ndcg@10"]


def corpus_texts(dataset: Path) -> list[str]:
    """The corpus texts (title + text) in doc-id order, as the encode section reads them."""
    from deepseek_tf.data import load_beir

    ds = load_beir(dataset, "test", unknown_ids="drop")
    return [ds.doc_text(d) for d in sorted(ds.corpus, key=str)]


def time_systems(
    systems: list[System], texts: list[str], batches: list[list[int]], rounds: int, log
) -> tuple[dict[str, list[float]], dict[str, np.ndarray], dict[str, str]]:
    """(seconds of each timed pass, vectors (N, dim), why it broke) per system name: one untimed
    warm-up pass, then `rounds` passes, systems taking turns (odd rounds in reverse order, so none
    always goes first and a burst of load from other processes hits them alike)."""
    seconds: dict[str, list[float]] = {s.name: [] for s in systems}
    vecs: dict[str, np.ndarray] = {}
    broken: dict[str, str] = {}
    for r in range(-1, rounds):  # -1: the warm-up pass
        for s in systems[::-1] if r >= 0 and r % 2 == 1 else systems:  # warm-up and even rounds: forward
            if s.name in broken:
                continue
            log(f"  encode peers {'warm-up' if r < 0 else f'round {r + 1}/{rounds}'}: {s.name} ...")
            try:
                vecs[s.name], took = encode_batches(s.encode_docs, texts, batches, s.whole)
            except Exception as e:  # a runtime that fails on real batches is a row saying so
                broken[s.name] = why(e)
                continue
            if r >= 0:
                seconds[s.name].append(took)
    return seconds, vecs, broken


def bench_encode_peers(
    dataset: Path,
    qbqtc: Path | None,
    threads: int,
    batch_size: int,
    max_length: int,
    docs: int,
    calibration: int,
    quick: bool,
    workdir: Path,
    log,
    rounds: int = 2,
) -> dict:
    """The section's results: docs/s from the best of `rounds` timed passes over the first `docs`
    corpus texts (`time_systems`), × the PyTorch reference, cosine to its vectors, and nDCG@10."""
    start = time.perf_counter()
    if quick:
        docs, calibration = QUICK["docs"], QUICK["calibration"]
    texts = corpus_texts(dataset)
    timed, calib = texts[:docs], texts[docs : docs + calibration]  # calibration texts are never timed
    batches = length_batches(timed, batch_size)
    entries, reference_st = build_systems(workdir, threads, max_length, batch_size, calib, log)
    ids = reference_st.tokenizer(timed, truncation=True, max_length=max_length)["input_ids"]
    systems = [e for e in entries if isinstance(e, System)]
    seconds, vecs, broken = time_systems(systems, timed, batches, rounds, log)
    sets, split = ndcg_sets(dataset, qbqtc, quick)
    reference = systems[0].name
    ref_rate = len(timed) / min(seconds[reference]) if seconds[reference] else None
    rows = []
    for s in entries:
        if not isinstance(s, System) or s.name in broken:
            rows.append(s if not isinstance(s, System) else failed_row(s.name, s.engine, broken[s.name]))
            continue
        rate = len(timed) / min(seconds[s.name])
        row = {
            "system": s.name,
            "engine": s.engine,
            "measured": True,
            "docs_per_s": rate,
            "round_seconds": seconds[s.name],
            "vs_st_torch": ratio(rate, ref_rate),
            "cosine_to_fp32": cosine_stats(vecs[s.name], vecs[reference]) if reference in vecs else None,
            "ndcg@10": {},
            "note": s.note,
        }
        for key, ds in sets.items():
            if ds is not None:
                log(f"  encode peers nDCG@10 {key}: {s.name} ...")
                try:
                    row["ndcg@10"][key] = ndcg_at_10(s, ds, batch_size)
                except Exception as e:
                    row["note"] = "; ".join(x for x in (row["note"], f"nDCG {key} failed: {why(e)}") if x)
        rows.append(row)
    return {
        "model": PRESET,
        "texts": len(timed),
        "tokens": sum(len(x) for x in ids),  # [CLS] and [SEP] included, as every system computes them
        "batches": len(batches),
        "batch_size": batch_size,
        "max_length": max_length,
        "threads": threads,
        "rounds": rounds,
        "calibration_texts": len(calib),
        "quantization_arch": quantization_arch(cpu_flags()),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "quick": quick,
        "ndcg_sets": {
            k: None if ds is None else {"docs": len(ds.corpus), "queries": sum(q in ds.queries for q in ds.qrels)}
            for k, ds in sets.items()
        },
        "qbqtc_dev_split": split,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
