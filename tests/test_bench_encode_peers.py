"""The pure parts of `make bench`'s encode-peers section: batches, cosine stats, CPU flags, the table.

No runtime is loaded here (no torch, ONNX Runtime or OpenVINO); the benchmark itself measures.
"""

import numpy as np
import pytest

from deepseek_tf.bench.encode_peers import (
    cosine_stats,
    cpu_flags,
    encode_batches,
    failed_row,
    length_batches,
    quantization_arch,
)
from deepseek_tf.bench.report import encode_peers_lines

TEXTS = ["ccc", "a", "bbbbb", "dd", "e", "ffff", "gg"]


def test_length_batches_are_fixed_length_sorted_and_stable():
    # lengths 3 1 5 2 1 4 2 -> order by length, ties in input order: 1(a) 4(e) 3(dd) 6(gg) 0(ccc) 5(ffff) 2(bbbbb)
    assert length_batches(TEXTS, 3) == [[1, 4, 3], [6, 0, 5], [2]]
    assert length_batches(TEXTS, 3) == length_batches(list(TEXTS), 3)  # the same lists, every call
    assert length_batches([], 4) == []


def test_every_system_sees_the_same_batches_and_rows_come_back_in_input_order():
    batches = length_batches(TEXTS, 3)
    seen: dict[str, list[list[str]]] = {"a": [], "b": [], "c": []}

    def recorder(name):
        def encode(batch):
            seen[name].append(list(batch))
            return np.array([[len(t), 1.0] for t in batch])  # (len(batch), 2)

        return encode

    vecs_a, _ = encode_batches(recorder("a"), TEXTS, batches)
    vecs_b, _ = encode_batches(recorder("b"), TEXTS, batches)
    assert seen["a"] == seen["b"] == [["a", "e", "dd"], ["gg", "ccc", "ffff"], ["bbbbb"]]
    assert vecs_a[:, 0].tolist() == [len(t) for t in TEXTS] and np.array_equal(vecs_a, vecs_b)
    # ours takes every text in one call (its engine may run batches at once) and cuts the same batches itself
    vecs_c, _ = encode_batches(recorder("c"), TEXTS, batches, whole=True)
    assert seen["c"] == [TEXTS] and np.array_equal(vecs_c, vecs_a)


def test_cosine_stats_by_hand():
    ref = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0]])
    vecs = np.array([[2.0, 0.0], [0.6, 0.8], [1.0, 1.0]])
    # cosines: 1 (scale does not matter), 0.8·0.6 + 0.6·0.8 = 0.96, 2 / (2·√2) = 1/√2 ≈ 0.70711
    stats = cosine_stats(vecs, ref)
    assert stats["min"] == pytest.approx(2**-0.5)
    assert stats["mean"] == pytest.approx((1 + 0.96 + 2**-0.5) / 3)


def test_cpu_flags_and_quantization_preset():
    info = "processor\t: 0\nflags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16\n\nflags\t\t: ignored amx_tile\n"
    assert cpu_flags(info) == ["avx2", "avx512_vnni", "avx512_bf16"]
    assert quantization_arch(cpu_flags(info)) == "avx512_vnni"
    assert quantization_arch(cpu_flags("flags\t: sse4_2 avx2\n")) == "avx2"
    assert cpu_flags("no flags here") == []


def _section(qbqtc: bool = True) -> dict:
    def row(system, engine, rate, vs, cos, cran, qb):
        return {
            "system": system,
            "engine": engine,
            "measured": True,
            "docs_per_s": rate,
            "vs_st_torch": vs,
            "cosine_to_fp32": {"mean": cos[0], "min": cos[1]},
            "ndcg@10": {"cranfield_test": cran, **({"qbqtc_dev": qb} if qbqtc else {})},
            "note": "",
        }

    return {
        "model": "all-MiniLM-L6-v2",
        "texts": 512,
        "tokens": 100_000,
        "batches": 16,
        "batch_size": 32,
        "max_length": 256,
        "threads": 2,
        "rounds": 2,
        "calibration_texts": 300,
        "quantization_arch": "avx512_vnni",
        "cpu": "AMD EPYC",
        "cpu_flags": ["avx2", "avx512_vnni"],
        "quick": False,
        "ndcg_sets": {
            "cranfield_test": {"docs": 1398, "queries": 75},
            "qbqtc_dev": {"docs": 19317, "queries": 3760} if qbqtc else None,
        },
        "qbqtc_dev_split": {"split": "train", "dev_fraction": 0.2, "dev_seed": 42},
        "rows": [
            row("ST torch", "PyTorch fp32", 40.0, 1.0, (1.0, 1.0), 0.40312, 0.3),
            row("ST onnx int8", "ONNX Runtime | int8", 80.0, 2.0, (0.99123, 0.95), 0.39, 0.29),
            failed_row("ST OpenVINO static int8", "OpenVINO", "ImportError: No module named 'nncf'"),
        ],
    }


def test_table_rows_ratios_cosines_and_ndcg():
    lines = encode_peers_lines(_section())
    header = (
        "| system | engine / precision | docs/s | × ST torch | cos to fp32 mean / min | nDCG@10 Cranfield test "
        "| nDCG@10 QBQTC dev |"
    )
    assert header in lines
    assert "| ST torch | PyTorch fp32 | 40.0 | 1.00× | 1.00000 / 1.00000 | 0.4031 | 0.3000 |" in lines
    # a | inside a cell is escaped, or it would split the row
    assert "| ST onnx int8 | ONNX Runtime \\| int8 | 80.0 | 2.00× | 0.99123 / 0.95000 | 0.3900 | 0.2900 |" in lines
    assert (
        "| ST OpenVINO static int8 | OpenVINO (not measured: ImportError: No module named 'nncf') "
        "| — | — | — | — | — |" in lines
    )
    intro = lines[1]
    assert "avx2, avx512_vnni" in intro and "QBQTC dev (train split, dev fraction 0.2, seed 42)" in intro
    assert encode_peers_lines(None) == [] and encode_peers_lines({}) == []


def test_table_without_qbqtc_says_dash():
    lines = encode_peers_lines(_section(qbqtc=False))
    assert "| ST torch | PyTorch fp32 | 40.0 | 1.00× | 1.00000 / 1.00000 | 0.4031 | — |" in lines
    assert "QBQTC dev (train split, dev fraction 0.2, seed 42): not given" in lines[1]
