import pytest

from deepseek_tf.data import load_beir, normalize_text, pair_dataset, pairs_from_beir, read_pairs
from deepseek_tf.errors import UserError
from deepseek_tf.text.tokenizer import Tokenizer


def test_normalize_text():
    assert normalize_text("  Ｓummer\tdress\u200b ") == "Summer dress"
    assert normalize_text(None) == "" and normalize_text(float("nan")) == ""


def test_load_beir_fixture(tiny_beir):
    ds = load_beir(tiny_beir, "test")
    assert len(ds.corpus) == 24 and len(ds.queries) == 18 and len(ds.qrels) == 6
    assert ds.qrels["q-dress-2"] == {"dress-0": 2, "dress-1": 2, "dress-2": 1, "dress-3": 1}
    assert ds.doc_text("dress-0") == "dress 0 summer dress floral cotton best price item 0"
    pairs = pairs_from_beir(load_beir(tiny_beir, "train"), min_label=2)
    assert len(pairs) == 12 * 2 and set(pairs.labels) == {2}


def test_beir_errors(tiny_beir, tmp_path):
    with pytest.raises(UserError, match="missing qrels file"):
        load_beir(tiny_beir, "dev")
    with pytest.raises(UserError, match="dataset directory not found"):
        load_beir(tmp_path / "nope")
    bad = tmp_path / "bad"
    (bad / "qrels").mkdir(parents=True)
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n')
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\n")
    with pytest.raises(UserError, match=r"test\.tsv: 1 judgments name unknown ids \(first: corpus id 'd9'\)"):
        load_beir(bad)
    ds = load_beir(bad, unknown_ids="drop")
    assert ds.qrels == {"q1": {"d1": 1}} and ds.dropped == {"judgments with unknown ids": 1}
    (bad / "corpus.jsonl").write_bytes(b'{"_id": "d1", "text": "caf\xe9"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        load_beir(bad)
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{oops\n')
    with pytest.raises(UserError, match=r"corpus\.jsonl:2: invalid JSON"):
        load_beir(bad)
    # stored as fields, these would be written back out as JSON no parser reads
    for value, named in (("NaN", "NaN"), ("-Infinity", "-Infinity"), ("1e400", "out of a float's range")):
        (bad / "corpus.jsonl").write_text(f'{{"_id": "d1", "text": "x"}}\n{{"_id": "d2", "price": {value}}}\n')
        with pytest.raises(UserError, match=rf"corpus\.jsonl:2: invalid JSON \(.*{named}"):
            load_beir(bad)


def test_read_pairs_cleans_and_counts(tmp_path, capsys):
    path = tmp_path / "pairs.csv"
    path.write_text(
        "query,doc_content,label\n"
        "summer dress,light cotton dress,3\n"
        "summer  dress ,light cotton dress,3\n"  # duplicate after normalisation
        ",empty query,1\n"
        "laptop,thin notebook,4\n"
    )
    pairs = read_pairs(path)
    assert pairs.queries == ["summer dress", "laptop"]
    assert pairs.labels == [3, 4] and pairs.negs is None
    assert "4 rows read, 1 empty dropped, 1 duplicates dropped, 2 kept" in capsys.readouterr().err


def test_read_pairs_errors(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("query\tdoc\nx\ty\n")
    with pytest.raises(UserError, match="missing column"):
        read_pairs(tsv)
    with pytest.raises(UserError, match="missing pairs file"):
        read_pairs(tmp_path / "none.csv")
    bad = tmp_path / "b.csv"
    bad.write_text("query,doc_content,label\nx,y,7\n")
    with pytest.raises(UserError, match=r"b\.csv:2: label must be a number from 0 to 4"):
        read_pairs(bad)
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"query": "q", "doc_content": "d", "neg_doc": "n"}\n')
    assert read_pairs(jl).negs == ["n"]


def test_pair_dataset_pads_per_batch_and_is_seeded(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]
    from deepseek_tf.data import Pairs

    pairs = Pairs(["a", "a b a b", "b", "a"], ["a", "b", "a b", "b"], ["b", "a", "a", "b"])
    ds = pair_dataset(pairs, Tokenizer(vocab), batch_size=2, query_max_length=16, doc_max_length=16, shuffle=False)
    batches = list(ds)
    assert batches[0]["query"]["token_ids"].shape == (2, 6)  # longest in batch: [CLS] a b a b [SEP]
    assert batches[1]["query"]["token_ids"].shape == (2, 3)
    assert set(batches[0]) == {"query", "doc", "neg"}
    order = lambda s: [
        b["query"]["token_ids"].numpy().tolist() for b in pair_dataset(pairs, Tokenizer(vocab), 1, 16, 16, seed=s)
    ]
    assert order(7) == order(7)


def test_run_file_round_trip_and_errors(tmp_path):
    from deepseek_tf.data import read_run, write_run

    run = {"q2": {"d1": 0.5, "d3": 2.0}, "q1": {"d9": -1.25}}
    write_run(run, tmp_path / "r.trec", tag="t")
    # by query, then score descending, ranks from 1: trec_eval's six columns
    assert (tmp_path / "r.trec").read_text().splitlines() == [
        "q1 Q0 d9 1 -1.250000 t",
        "q2 Q0 d3 1 2.000000 t",
        "q2 Q0 d1 2 0.500000 t",
    ]
    assert read_run(tmp_path / "r.trec") == run
    bad = tmp_path / "bad.trec"
    for text, message in [
        ("q1 Q0 d1 1 0.5\n", r"bad.trec:1: expected 'qid Q0 docid rank score tag'"),
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n", r"bad.trec:2: score 'high' is not a number"),
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", r"bad.trec:2: document 'd1' listed twice"),
        ("\n", "no lines"),
    ]:
        bad.write_text(text)
        with pytest.raises(UserError, match=message):
            read_run(bad)
    with pytest.raises(UserError, match="missing run file"):
        read_run(tmp_path / "none.trec")


def test_judged_subset_keeps_corpus_and_queries(tiny_beir):
    ds = load_beir(tiny_beir, "test")
    sub = ds.judged_subset(["q-dress-2", "not-a-query"])
    assert sub.qrels == {"q-dress-2": ds.qrels["q-dress-2"]}
    assert sub.corpus is ds.corpus and sub.queries is ds.queries
    assert len(ds.qrels) == 6  # the original is untouched


def test_run_file_source():
    from deepseek_tf.data import run_file

    assert run_file("run:runs/oof.trec") == "runs/oof.trec"
    assert run_file("bm25") is None and run_file("runs/model") is None
