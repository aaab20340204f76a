"""Progress that suits where output goes: plain lines (no escape codes, no carriage returns)
when it is not a terminal; their rate and ETA on a fake clock."""

import io
import sys

import pytest
from conftest import ROOT

from deepseek_tf.console import PlainProgress, every_for, format_eta, is_terminal, progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (-3, "0s"),
        (42, "42s"),
        (59.6, "1m00s"),
        (185, "3m05s"),
        (3600, "1h00m"),
        (3725, "1h02m"),
        (90061, "25h01m"),
    ],
)
def test_format_eta(seconds, text):
    assert format_eta(seconds) == text


def test_plain_progress_rate_and_eta_on_a_fake_clock():
    clock, out = FakeClock(), io.StringIO()
    bar = PlainProgress("step", 100, every=20, stream=out, clock=clock)
    clock.now += 10  # 20 steps in 10 s: 2.00/s, 80 steps left -> 40 s
    assert bar.line(20) == "step 20/100, 2.00/s, ETA 40s"
    bar.update(19)
    assert out.getvalue() == ""  # only every 20 steps
    bar.update(20, "loss 2.3141")
    clock.now += 40  # 100 in 50 s
    bar.update(100)
    assert out.getvalue() == "step 20/100, loss 2.3141, 2.00/s, ETA 40s\nstep 100/100, 2.00/s, ETA 0s\n"


def test_plain_progress_speaks_at_least_every_30_seconds_of_slow_work():
    clock, out = FakeClock(), io.StringIO()
    bar = PlainProgress("encoding docs", 1000, every=50, stream=out, clock=clock)
    for step in range(1, 4):  # one batch every 12 s: a line is due at 36 s, long before step 50
        clock.now += 12
        bar.update(step)
    assert out.getvalue() == "encoding docs 3/1000, 0.08/s, ETA 3h19m\n"
    clock.now += 12
    bar.update(4)
    assert out.getvalue().count("\n") == 1  # 12 s since the last line


def test_plain_progress_units_and_unknown_total():
    clock = FakeClock()
    bar = PlainProgress("epoch 1/2 step", 67, every=20, clock=clock, unit="steps")
    clock.now += 13.2  # 20 steps: 1.515/s, 47 left -> 31.02 s
    assert bar.line(20, "loss 2.3141") == "epoch 1/2 step 20/67, loss 2.3141, 1.52 steps/s, ETA 31s"
    bar = PlainProgress("encoding docs", None, every=1, clock=clock)
    clock.now += 4
    assert bar.line(6) == "encoding docs 6, 1.50/s"  # no total: no ETA


def test_every_for():
    assert every_for(2010, 30) == 67
    assert every_for(6, 30) == every_for(0) == every_for(None) == 1


def test_progress_plain_lines_off_a_terminal_a_bar_on_one():
    out = io.StringIO()
    assert list(progress(range(40), "scoring", unit="batch", stream=out, lines=4)) == list(range(40))
    lines = out.getvalue().splitlines()
    assert [x.split(",")[0] for x in lines] == ["scoring 10/40", "scoring 20/40", "scoring 30/40", "scoring 40/40"]
    assert all(" batch/s" in x for x in lines) and "\r" not in out.getvalue()
    quiet = io.StringIO()
    assert list(progress([1, 2], "x", stream=quiet, lines=0)) == [1, 2] and quiet.getvalue() == ""
    assert is_terminal(FakeTTY()) and not is_terminal(io.StringIO())
    tty = FakeTTY()
    assert list(progress(range(3), "x", stream=tty)) == [0, 1, 2]
    assert "\r" in tty.getvalue()  # tqdm's bar


def test_plain_progress_logger_lines():
    """The training callback: one line every N steps with the loss, an epoch summary with the logs."""
    from deepseek_tf.train.callbacks import PlainProgressLogger, fit_progress

    clock, out = FakeClock(), io.StringIO()
    logger = PlainProgressLogger(stream=out, clock=clock, lines=4)
    logger.set_params({"epochs": 2, "steps": 4, "verbose": 0})
    logger.on_train_begin()
    for epoch in range(2):
        logger.on_epoch_begin(epoch)
        for batch in range(4):
            clock.now += 0.5
            logger.on_train_batch_end(batch, {"loss": 2.0 - batch / 10})
        logger.on_epoch_end(epoch, {"loss": 1.85, "dev_ndcg@10": 0.5})
    assert out.getvalue().splitlines()[:3] == [
        "epoch 1/2 step 2/4, loss 1.9000, 2.00 steps/s, ETA 1s",
        "epoch 1/2 step 4/4, loss 1.7000, 2.00 steps/s, ETA 0s",
        "epoch 1/2 done: 4 steps in 2s, 2.00 steps/s, loss 1.8500, dev_ndcg@10 0.5000",
    ]
    assert len(out.getvalue().splitlines()) == 6
    assert fit_progress(0) == (0, [])  # --quiet: neither a bar nor lines
    if not sys.stdout.isatty():  # pytest captures stdout
        verbose, callbacks = fit_progress(1)
        assert verbose == 0 and isinstance(callbacks[0], PlainProgressLogger)


def test_train_to_a_file_writes_plain_lines(tiny_beir, tmp_path):
    """`train ... > log 2>&1`: no escape codes, no carriage returns, progress lines with the loss."""
    import os
    import subprocess

    log = tmp_path / "log.txt"
    with open(log, "wb") as f:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepseek_tf.train",
                "--config",
                "configs/tiny.yaml",
                "--set",
                f"data.dataset={tiny_beir}",
                "--workdir",
                str(tmp_path / "run"),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    text = log.read_bytes()
    assert proc.returncode == 0, text.decode()[-2000:]
    assert b"\x1b" not in text and b"\r" not in text
    lines = text.decode().splitlines()
    steps = [x for x in lines if x.startswith("epoch ") and " step " in x and "loss " in x]
    assert any(x.startswith("epoch 1/2 step 3/3, loss ") and x.endswith(" steps/s, ETA 0s") for x in steps)
    assert all(" steps/s, ETA " in x for x in steps)
    assert any(x.startswith("epoch 2/2 done: 3 steps in ") and ", loss " in x for x in lines)
    assert lines[-1].startswith("trained 6 steps, final loss ")


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "export", "search", "mine", "index", "serve", "bench", "bench-ann"]
)
def test_help_answers_without_loading_tensorflow(command):
    """`deepseek-tf COMMAND --help` prints its options and examples without importing TensorFlow
    (which takes seconds); the command loads it once its arguments are parsed."""
    import subprocess

    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('tensorflow' in sys.modules, file=sys.stderr))\n"
        "from deepseek_tf.cli.main import main\n"
        f"sys.exit(main([{command!r}, '--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "examples:" in done.stdout
    assert done.stderr.strip() == "False"
