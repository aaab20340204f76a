"""The optimizer both trainers build: AdamW on a warm-up + exponential-decay schedule."""

import keras
import pytest
from conftest import ROOT

from deepseek_tf.config import load_config
from deepseek_tf.train.optim import WarmupExponentialDecay, make_optimizer


def test_config_builds_adamw_on_the_warmup_schedule():
    config = load_config(
        ROOT / "configs/tiny.yaml",
        [
            "train.learning_rate=0.01",
            "train.warmup_ratio=0.2",
            "train.decay_steps=10",
            "train.decay_rate=0.5",
            "train.weight_decay=0.02",
        ],
    )
    optimizer = make_optimizer(config, 20)  # 20 steps: 4 of warm-up
    assert type(optimizer) is keras.optimizers.AdamW and optimizer.weight_decay == pytest.approx(0.02)
    schedule = (
        optimizer.learning_rate
        if isinstance(optimizer.learning_rate, WarmupExponentialDecay)
        else optimizer._learning_rate
    )
    assert isinstance(schedule, WarmupExponentialDecay) and schedule.warmup_steps == 4
    # warm-up: peak·(s + 1)/4; then peak·0.5^((s − 4)/10)
    assert [round(float(schedule(s)), 6) for s in (0, 3, 4, 14)] == [0.0025, 0.01, 0.01, 0.005]
    again = WarmupExponentialDecay(**schedule.get_config())
    assert float(again(9)) == pytest.approx(float(schedule(9)))
