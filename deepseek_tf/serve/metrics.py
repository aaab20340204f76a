"""Prometheus text exposition (format 0.0.4) of the service's counters and histograms, kept
in-process: request counts by endpoint and status, request latency, model batch sizes, cache
hits and misses, answers and the generator's calls."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# a generator's answer takes seconds to minutes (a streamed one is timed to its last event)
GENERATOR_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Counter:
    def __init__(self, name: str, help: str, kind: str = "counter"):
        self.name, self.help, self.kind = name, help, kind
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = value

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            lines += [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self._values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help: str, buckets: Iterable[float]):
        self.name, self.help = name, help
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[Labels, list] = {}  # labels -> [bucket counts..., sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            s = self._series.setdefault(key, [0] * len(self.buckets) + [0.0, 0])
            for i, upper in enumerate(self.buckets):
                if value <= upper:
                    s[i] += 1  # cumulative, as Prometheus buckets are
            s[-2] += value
            s[-1] += 1

    def count(self, **labels: str) -> int:
        s = self._series.get(tuple(sorted(labels.items())))
        return s[-1] if s else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key, s in sorted(self._series.items()):
                for upper, n in zip(self.buckets, s):
                    lines.append(f"{self.name}_bucket{_labels(key, (('le', _number(upper)),))} {n}")
                lines.append(f"{self.name}_sum{_labels(key)} {_number(s[-2])}")
                lines.append(f"{self.name}_count{_labels(key)} {s[-1]}")
        return lines


class ServiceMetrics:
    """The metrics /metrics shows. Cache counters are read from the caches when rendered."""

    def __init__(self):
        self.requests = Counter("deepseek_requests_total", "HTTP requests by endpoint and status code.")
        self.latency = Histogram(
            "deepseek_request_duration_seconds", "HTTP request latency by endpoint.", LATENCY_BUCKETS
        )
        self.batch_size = Histogram("deepseek_model_batch_size", "Texts per query-encoder call.", BATCH_BUCKETS)
        self.search_batch_size = Histogram(
            "deepseek_search_batch_size", "Queries per dense-search call.", BATCH_BUCKETS
        )
        self.model_seconds = Histogram(
            "deepseek_model_call_seconds", "Duration of one query-encoder call.", LATENCY_BUCKETS
        )
        self.cache_hits = Counter("deepseek_cache_hits_total", "Cache hits by cache (embedding, results).")
        self.cache_misses = Counter("deepseek_cache_misses_total", "Cache misses by cache (embedding, results).")
        self.reloads = Counter("deepseek_index_reloads_total", "Index reloads by outcome.")
        self.gauges = Counter("deepseek_index_documents", "Documents in the index being served.", kind="gauge")
        self.in_flight = Counter("deepseek_requests_in_flight", "Requests being answered.", kind="gauge")
        self.answers = Counter("deepseek_answers_total", "POST /answer answers by outcome (generated, cached, failed).")
        self.generator_seconds = Histogram(
            "deepseek_generator_call_seconds", "One call to the generator, failed ones too.", GENERATOR_BUCKETS
        )
        self.generator_errors = Counter(
            "deepseek_generator_errors_total",
            "Failed calls to the generator by reason (timeout, unreachable, status, bad_response, busy).",
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.inc(endpoint=endpoint, status=str(status))
        self.latency.observe(seconds, endpoint=endpoint)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)

    def observe_search_batch(self, size: int, seconds: float) -> None:
        self.search_batch_size.observe(size)

    def observe_generator(self, outcome: str, seconds: float) -> None:
        """One call to the generator: `outcome` "ok" or why it failed (`answer.generator.Generator`)."""
        if outcome != "busy":  # a request that found no free turn made no call: its wait is no latency
            self.generator_seconds.observe(seconds)
        if outcome != "ok":
            self.generator_errors.inc(reason=outcome)

    def render(self, caches: dict | None = None) -> str:
        for name, cache in (caches or {}).items():
            self.cache_hits.set(cache.hits, cache=name)
            self.cache_misses.set(cache.misses, cache=name)
        parts = [
            self.requests,
            self.latency,
            self.batch_size,
            self.search_batch_size,
            self.model_seconds,
            self.cache_hits,
            self.cache_misses,
            self.reloads,
            self.gauges,
            self.in_flight,
            self.answers,
            self.generator_seconds,
            self.generator_errors,
        ]
        return "\n".join(line for m in parts for line in m.render()) + "\n"
