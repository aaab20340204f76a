"""Cross-fitting: fold splits, training without a fold, and the out-of-fold run it writes."""
import pytest

from conftest import ROOT, run_cli
from deepseek_tf.config import load_config
from deepseek_tf.errors import ConfigError

TINY = ROOT / "configs" / "tiny.yaml"


def test_fold_split_partitions_the_queries_by_seed():
    from deepseek_tf.data.splits import fold_split

    qids = [str(i) for i in range(10)]
    parts = fold_split(qids, 3, seed=42)
    assert sorted(len(p) for p in parts) == [3, 3, 4] and set().union(*parts) == set(qids)
    assert not parts[0] & parts[1] and not parts[1] & parts[2]
    assert fold_split(reversed(qids), 3, seed=42) == parts  # the ids' order does not matter, the seed does
    assert fold_split(qids, 3, seed=7) != parts


def test_a_fold_is_left_out_of_training(tiny_beir):
    from deepseek_tf.data import load_beir
    from deepseek_tf.data.splits import fold_split, split_train_dev

    ds = load_beir(tiny_beir, "train")
    config = load_config(TINY, [f"data.dataset={tiny_beir}", "data.folds=2", "data.fold=1"])
    train_ds, dev = split_train_dev(ds, config)
    assert dev is None
    assert set(train_ds.qrels) == set(ds.qrels) - fold_split(ds.qrels, 2, 42)[1]
    for bad in (["data.folds=1"], ["data.folds=2", "data.fold=2"], ["data.folds=-2"]):
        from deepseek_tf.train.run import check_config

        with pytest.raises(ConfigError, match="data.folds must be 0"):
            check_config(load_config(TINY, [f"data.dataset={tiny_beir}", *bad]))


def test_crossfit_writes_each_query_from_the_model_that_left_it_out(tiny_beir, tmp_path):
    from deepseek_tf.train.crossfit import crossfit
    from deepseek_tf.data import BeirDataset, load_beir, read_run
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.evaluate.report import dense_run
    from deepseek_tf.data.splits import fold_split

    config = load_config(TINY, [f"data.dataset={tiny_beir}", "train.epochs=1", "train.steps_per_epoch=2"])
    run = crossfit(config, 2, tmp_path / "folds", tmp_path / "oof.trec", top_k=5, verbose=0)
    ds = load_beir(tiny_beir, "train")
    assert read_run(tmp_path / "oof.trec").keys() == run.keys() == ds.qrels.keys()
    assert all(len(docs) == 5 for docs in run.values())
    for i, part in enumerate(fold_split(ds.qrels, 2, 42)):
        saved = load_config(tmp_path / "folds" / f"fold{i}" / "config.yaml")
        assert (saved.data.folds, saved.data.fold) == (2, i)
        held = BeirDataset(ds.corpus, ds.queries, {q: ds.qrels[q] for q in part})
        want, _ = dense_run(load_embedder(str(tmp_path / "folds" / f"fold{i}" / "model")), held, 5)
        for q in part:
            assert list(run[q]) == list(want[q]) and list(run[q].values()) == pytest.approx(list(want[q].values()))
    # the run feeds a cross-encoder: its candidates, and their scores as the first-stage prior
    from deepseek_tf.train import train

    ce = load_config(ROOT / "configs" / "cross_encoder_tiny.yaml",
                     [f"data.dataset={tiny_beir}", f"data.negatives_from=run:{tmp_path / 'oof.trec'}",
                      "data.mine_top_k=5", "model.first_stage_weight=1.0", "train.epochs=1", "train.steps_per_epoch=1"])
    assert train(ce, tmp_path / "ce", verbose=0)["steps"] == [1]
    # a fold dir trained with another config is not silently reused
    other = load_config(TINY, [f"data.dataset={tiny_beir}", "train.epochs=1", "train.steps_per_epoch=3"])
    with pytest.raises(ConfigError, match="fold0 holds a model trained with another config"):
        crossfit(other, 2, tmp_path / "folds", tmp_path / "other.trec", top_k=5, verbose=0)
    assert not (tmp_path / "other.trec").exists()


def test_crossfit_cli_help_and_one_line_errors(tmp_path):
    assert "--folds" in run_cli("deepseek_tf.cli", "crossfit", "--help").stdout
    bad = run_cli("deepseek_tf.cli", "crossfit", "--config", str(ROOT / "configs" / "cross_encoder_tiny.yaml"),
                  "--output", str(tmp_path / "x.trec"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: crossfit trains a retriever (model.kind: dual_encoder), got cross_encoder"]
