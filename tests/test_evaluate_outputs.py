"""`evaluate`'s outputs (--output, --plot, --save-runs DIR): checked before anything is evaluated.

No two outputs may share a path (the report lost under the plot, a run file replaced by the
report), and none rewrites a file it did not write (only its own earlier reports, plots and run files),
and --dev-fraction is refused by the parser unless strictly between 0 and 1. A refusal is one
`error:` line, a non-zero exit, and nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli_here

EVALUATE = "deepseek_tf.evaluate"


def _refused(proc, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for word in words:
        assert word in lines[0], proc.stderr
    assert "|" not in proc.stdout  # refused before the evaluation: no table printed


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "outputs",
    [
        ["--output", "r.json", "--plot", "r.json"],
        ["--output", "r.json", "--plot", "./sub/../r.json"],  # the same file however spelled
        ["--save-runs", "runs", "--output", "runs/bm25.trec"],
        ["--save-runs", "runs", "--plot", "runs/bm25.trec"],
        ["--save-runs", "runs", "--output", "runs/report.json"],  # anything inside the runs directory
    ],
    ids=["output-is-plot", "output-is-plot-spelled-otherwise", "output-in-runs", "plot-in-runs", "report-in-runs"],
)
def test_outputs_sharing_a_path_are_refused(tiny_beir, tmp_path, outputs):
    (tmp_path / "sub").mkdir()
    (tmp_path / "runs").mkdir()  # an existing directory: where a previous --save-runs wrote
    outputs = [str(tmp_path / o) if not o.startswith("--") else o for o in outputs]
    proc = run_cli_here(EVALUATE, "--dataset", str(tiny_beir), "--baseline", "bm25", *outputs)
    _refused(proc, "another output")
    assert _files(tmp_path) == {}


def test_save_runs_rewrites_only_its_own_run_files(tiny_beir, tmp_path):
    runs, report = tmp_path / "runs", tmp_path / "report.json"
    runs.mkdir()
    (runs / "bm25.trec").write_text("precious\n")
    (runs / "notes.txt").write_text("mine\n")
    before = _files(tmp_path)
    args = ["--dataset", str(tiny_beir), "--baseline", "bm25", "--save-runs", str(runs), "--output", str(report)]
    _refused(run_cli_here(EVALUATE, *args), "bm25.trec", "not a run file")
    assert _files(tmp_path) == before

    # a TREC run of someone else's system (another tag) is not ours either
    (runs / "bm25.trec").write_text("q1 Q0 d1 1 3.5 production\n")
    _refused(run_cli_here(EVALUATE, *args), "bm25.trec")
    assert (runs / "bm25.trec").read_text() == "q1 Q0 d1 1 3.5 production\n"

    # without the foreign file: written, and a second run replaces its own run file and report
    (runs / "bm25.trec").unlink()
    for _ in range(2):
        proc = run_cli_here(EVALUATE, *args)
        assert proc.returncode == 0, proc.stderr
    assert {line.split()[5] for line in (runs / "bm25.trec").read_text().splitlines()} == {"bm25"}
    assert "bm25" in json.loads(report.read_text())
    assert (runs / "notes.txt").read_text() == "mine\n"


def test_save_runs_checks_the_dense_run_before_encoding(tiny_beir, tiny_run, tmp_path):
    runs = tmp_path / "userruns"
    runs.mkdir()
    (runs / "dense.trec").write_text("precious\n")
    proc = run_cli_here(
        EVALUATE, "--model", str(tiny_run / "model"), "--dataset", str(tiny_beir), "--save-runs", str(runs)
    )
    _refused(proc, "dense.trec")
    assert _files(runs) == {"dense.trec": b"precious\n"}


def test_output_and_plot_replace_only_what_evaluate_wrote(tiny_beir, tmp_path):
    """--output and --plot over a file of the user's are refused; over the report and plot an
    earlier run wrote, they are replaced."""
    report, plot = tmp_path / "report.json", tmp_path / "curves.png"
    args = ["--dataset", str(tiny_beir), "--baseline", "bm25", "--output", str(report), "--plot", str(plot)]
    for foreign in ('{"budget": 12}\n', '{"bm25": {"owner": "me"}}\n'):
        report.write_text(foreign)
        _refused(run_cli_here(EVALUATE, *args), "--output", "not a report evaluate wrote")
        assert _files(tmp_path) == {"report.json": foreign.encode()}
    report.unlink()
    for _ in range(2):  # the second run replaces the first one's report and plot
        proc = run_cli_here(EVALUATE, *args)
        assert proc.returncode == 0, proc.stderr
    assert "bm25" in json.loads(report.read_text())
    ours = plot.read_bytes()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(plot)  # a PNG, but not one evaluate wrote
    theirs = plot.read_bytes()
    _refused(run_cli_here(EVALUATE, *args), "--plot", "not a plot evaluate wrote")
    assert plot.read_bytes() == theirs and ours != theirs


@pytest.mark.parametrize("fraction", ["1", "0", "1.5"])
def test_dev_fraction_is_refused_by_the_parser_outside_0_1(tiny_beir, tmp_path, fraction):
    report = tmp_path / "r.json"
    args = ["--dataset", str(tiny_beir), "--baseline", "bm25", "--dev-fraction", fraction, "--output", str(report)]
    proc = run_cli_here(EVALUATE, *args)
    _refused(proc, "--dev-fraction", "must be in (0, 1)")
    assert proc.returncode == 2  # a usage error, caught by the parser
    assert not report.exists()
