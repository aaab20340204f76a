"""The machine under `make bench`: one thread count for every runtime, its float32 matmul rate
(what each system's share is reported against) and progress lines with wall and CPU time."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

_START = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr with wall and process CPU seconds (CPU ÷ threads ≈ wall on an idle machine)."""
    print(
        f"[{time.perf_counter() - _START:6.0f}s wall {time.process_time():6.0f}s cpu] {message}",
        file=sys.stderr,
        flush=True,
    )


def set_threads(n: int) -> None:
    """Same N for TF (intra- and inter-op pools) and PyTorch; must run before TF starts its runtime."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
        torch.set_num_interop_threads(n)
    except ImportError:
        pass


def matmul_rate(n: int = 2048, repeats: int = 5, rounds: int = 3) -> dict:
    """Best-of-`rounds` FLOP/s of `repeats` float32 (n, n) @ (n, n) products (2n³ FLOPs each),
    in TensorFlow (the reference) and, when installed, PyTorch."""
    import tensorflow as tf

    def best_rate(matmul: Callable[[], object]) -> float:
        matmul()  # warm-up: oneDNN primitive creation
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                matmul()
            best = min(best, (time.perf_counter() - start) / repeats)
        return 2 * n**3 / best

    a, b = tf.random.normal([n, n], seed=1), tf.random.normal([n, n], seed=2)
    out = {"n": n, "tf_flops": best_rate(lambda: tf.linalg.matmul(a, b).numpy())}
    try:
        import torch

        x, y = torch.randn(n, n), torch.randn(n, n)
        out["torch_flops"] = best_rate(lambda: x @ y)
    except ImportError:
        pass
    return out
