"""results.json -> docs/benchmarks.md and PNG plots in docs/."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GATEWAYS = ("direct", "null-proxy", "audiorouter", "audiorouter-nometrics", "audiorouter-prev", "audiorouter-before",
            "litellm", "portkey")
COMPARISONS = ("audiorouter-nometrics", "audiorouter-prev", "audiorouter-before")  # first delay, c=1 and c=32 only
SCHEME_TITLES = {"http": "plain-http upstream", "https": "https upstream"}
NOT_PLOTTED = (*COMPARISONS, "null-proxy")  # only c=1 and c=32: no curve
KIND_TITLES = {"json": "JSON base64 transcription (10 s WAV)", "multipart": "multipart transcription (10 s WAV)",
               "speech": "speech (100 KB streamed)"}


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_range(xs, digits=1, unit=""):
    if not xs:
        return "—"
    m = med(xs)
    if len(xs) == 1:
        return f"{m:.{digits}f}{unit}"
    return f"{m:.{digits}f}{unit} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def _group(results, upstream: str = "http"):
    """(target, kind, delay, concurrency) -> repetitions, for one upstream scheme (older results: http)."""
    g = defaultdict(list)
    for r in results:
        if r.get("upstream", "http") == upstream:
            g[(r["target"], r["kind"], r["delay_ms"], r["concurrency"])].append(r)
    return g


def gateway_tables(gw: dict) -> tuple[list[str], dict]:
    lines: list[str] = []
    verdict: dict = {}
    for sc in gw.get("schemes", ["http"]):
        g = _group(gw["results"], sc)
        for d in sorted({k[2] for k in g}):
            lines += [f"#### {SCHEME_TITLES.get(sc, sc)}, delay {d} ms", "",
                      "| request | gateway | p50 @ c=1 (ms) | p99 @ c=1 (ms) | added p50 vs direct (ms) | req/s @ c=32 | "
                      "req/s vs Portkey | req/s vs LiteLLM | CPU/req @ c=32 (ms) | errors |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for kind in KIND_TITLES:
                direct = g.get(("direct", kind, d, 1), [])
                pk = g.get(("portkey", kind, d, 32), [])
                if kind == "json" and not pk:  # no base64 JSON route in Portkey: its multipart upload of the same audio
                    pk = g.get(("portkey", "multipart", d, 32), [])
                ll = g.get(("litellm", kind, d, 32), []) or (g.get(("litellm", "multipart", d, 32), [])
                                                             if kind == "json" else [])
                for t in GATEWAYS:
                    c1 = g.get((t, kind, d, 1), [])
                    c32 = g.get((t, kind, d, 32), [])
                    if not c1 and not c32:
                        if t in ("litellm", "portkey") and kind == "json":
                            lines.append(f"| {kind} | {t} | n/a: no base64 JSON transcription route | | | | | | | |")
                        continue
                    added = []
                    if direct and c1:  # pair repetitions in order: same run, same neighbours
                        added = [a["p50_ms"] - b["p50_ms"] for a, b in zip(c1, direct)]

                    def ratio_to(other, mine=c32):
                        return [a["req_per_s"] / b["req_per_s"] for a, b in zip(mine, other) if b["req_per_s"]]
                    rp = ratio_to(pk) if pk and c32 and t not in ("portkey", "direct") else []
                    rl = ratio_to(ll) if ll and c32 and t not in ("litellm", "direct") else []
                    cpu = [r["cpu_ms_per_req"] for r in c32 if r.get("cpu_ms_per_req")]
                    errs = sum(r["errors"] for r in c1 + c32)
                    lines.append(f"| {kind} | {t} | {fmt_range([r['p50_ms'] for r in c1], 2)} | "
                                 f"{fmt_range([r['p99_ms'] for r in c1], 2)} | "
                                 f"{fmt_range(added, 2) if t != 'direct' else '—'} | "
                                 f"{fmt_range([r['req_per_s'] for r in c32], 0)} | "
                                 f"{fmt_range(rp, 2) + 'x' if rp else '—'} | {fmt_range(rl, 2) + 'x' if rl else '—'} "
                                 f"| {fmt_range(cpu, 2)} | {errs} |")
                    v = verdict.setdefault((sc, kind, d), {})
                    if t == "audiorouter":
                        v.update({"added_p50": med(added), "ratio_vs_portkey": med(rp), "ratio_vs_litellm": med(rl),
                                  "cpu_ms": med(cpu), "rps": med([r["req_per_s"] for r in c32]),
                                  "portkey_is_multipart": kind == "json"})
                    if t == "audiorouter-nometrics":
                        v["rps_nometrics"] = med([r["req_per_s"] for r in c32])
                    if t == "null-proxy":
                        v["floor_added_p50"] = med(added)
            lines.append("")
    return lines, verdict


def phases_section(rows: list[dict]) -> list[str]:
    """The probe's per-phase medians (bench/probe/sitecustomize.py) at c=1, one column per kind and delay."""
    if not rows:
        return []
    cols = [(r["kind"], r["delay_ms"], r.get("upstream", "http")) for r in rows]
    by = {(r["kind"], r["delay_ms"], r.get("upstream", "http")): r["phases"] for r in rows}
    names: list[str] = []
    for r in rows:
        names += [n for n in r["phases"] if n not in names]
    L = ["### Where the time goes inside audiorouter (c=1)", "",
         "`bench/probe/sitecustomize.py` is loaded into one more audiorouter server (nothing in the product "
         "changes) and notes when each request passes each point; the table gives the median time since the "
         "previous point, in ms. *upstream answered* is the wait for the upstream's answer head (with 0 ms delay: "
         "the fake upstream reading the request and our write of it). The last row sums the rest: the gateway's "
         "own work inside the application, without uvicorn's reading of the request head and its final flush. "
         "The same code runs slower per phase when the core has idled 50 ms between requests than when requests "
         "follow each other (this machine is a KVM guest whose idle vCPU halts; its caches are cold when it "
         "wakes). The line under the table gives the ratio in this run; it varied from 1.4x to 2.7x between "
         "runs on this machine. This is why the added latency grows with the upstream's delay, for every "
         "gateway here and much less for the do-nothing relay, which runs almost no code.", "",
         "| phase | " + " | ".join(f"{k} {d} ms{' https' if u == 'https' else ''}" for k, d, u in cols) + " |",
         "|---|" + "---|" * len(cols)]
    for n in names:
        label = "(upstream wait) upstream answered" if n == "upstream answered" else n
        cells = [f"{by[c][n]:.3f}" if n in by[c] else "—" for c in cols]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    own = [sum(v for n, v in by[c].items() if n != "upstream answered") for c in cols]
    L.append("| **audiorouter's own part** | " + " | ".join(f"**{v:.3f}**" for v in own) + " |")
    ratios = [f"{k} {own[cols.index((k, d, u))] / own[cols.index((k, 0, u))]:.2f}x" for k, d, u in cols
              if d != 0 and (k, 0, u) in cols and own[cols.index((k, 0, u))]]
    if ratios:
        L += ["", "Own part with the slow upstream over the same with the 0 ms one: " + ", ".join(ratios) + "."]
    return [*L, ""]


def plot_gateways(gw: dict) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    g = _group(gw["results"])
    files = []
    for d in sorted({k[2] for k in g}):
        concs = sorted({k[3] for k in g if k[2] == d})
        if len(concs) < 2:
            continue
        fig, axes = plt.subplots(2, 3, figsize=(15, 8))
        for col, kind in enumerate(KIND_TITLES):
            for t in GATEWAYS:
                if t in NOT_PLOTTED:
                    continue
                xs = [c for c in concs if g.get((t, kind, d, c))]
                if not xs:
                    continue
                p50 = [med([r["p50_ms"] for r in g[(t, kind, d, c)]]) for c in xs]
                rps = [med([r["req_per_s"] for r in g[(t, kind, d, c)]]) for c in xs]
                axes[0][col].plot(xs, p50, marker="o", label=t)
                axes[1][col].plot(xs, rps, marker="o", label=t)
            axes[0][col].set_title(KIND_TITLES[kind], fontsize=10)
            axes[0][col].set_yscale("log")
            axes[0][col].set_ylabel("p50 latency (ms, log)")
            axes[1][col].set_yscale("log")
            axes[1][col].set_ylabel("requests / s (log)")
            for r in (0, 1):
                axes[r][col].set_xscale("log", base=2)
                axes[r][col].set_xlabel("concurrent connections")
                axes[r][col].grid(alpha=0.3)
                axes[r][col].legend(fontsize=8)
        fig.suptitle(f"Gateway overhead, fake upstream with {d} ms delay (gateway pinned to one core)")
        fig.tight_layout()
        name = f"bench-gateways-{d}ms.png"
        fig.savefig(DOCS / name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def plot_engines(loc: dict) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = loc.get("concurrency", 4)
    bars = [("faster-whisper loop\n(baseline)", [r["x_rt"] for r in loc.get("baseline", [])]),
            ("audiorouter\n1 at a time", [r["x_rt"] for r in loc.get("http_1", [])]),
            (f"audiorouter\n{c} concurrent", [r["x_rt"] for r in loc.get(f"http_{c}", [])])]
    tts = [r["x_rt"] for r in loc.get("tts", []) if r.get("x_rt")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    names = [b[0] for b in bars if b[1]]
    vals = [med(b[1]) for b in bars if b[1]]
    errs = [[med(b[1]) - min(b[1]) for b in bars if b[1]], [max(b[1]) - med(b[1]) for b in bars if b[1]]]
    axes[0].bar(names, vals, yerr=errs, capsize=4, color=["#999", "#4a7", "#2a5"][:len(vals)])
    axes[0].set_ylabel("x real-time (audio s / wall s)")
    axes[0].set_title("Whisper base, dev-set English clips")
    if tts:
        axes[1].bar(["hibari TTS"], [med(tts)], yerr=[[med(tts) - min(tts)], [max(tts) - med(tts)]], capsize=4,
                    color="#47a")
        axes[1].set_title("TTS over HTTP")
    fig.tight_layout()
    name = "bench-engines.png"
    fig.savefig(DOCS / name, dpi=90)
    plt.close(fig)
    return name


def batch_section(bj: dict) -> list[str]:
    """bench/batch_jobs.py: a batch of dev clips through the jobs API with 1 and 2 `audiorouter worker` processes
    on the local engine (x real-time, and the ratio), and how long a job waits in the queue when the workers are
    idle, against the 100 ms target (the SQLite queue; the Redis queue too when Redis was reachable)."""
    runs = bj.get("runs") or []
    if not runs:
        return []

    def wait(r: dict) -> str:
        if r.get("queue_wait_ms_median") is None:
            return "n/a"
        return f"{r['queue_wait_ms_median']:.0f} ms ({r['queue_wait_ms_max']:.0f} ms)"
    first = runs[0]
    L = ["## Batch jobs", "",
         f"`bench/batch_jobs.py`: {first['clips']} English dev clips ({first['audio_s']:.1f} s of audio) submitted "
         "at once as base64 JSON jobs for `local/whisper-base`, run by N `audiorouter worker` processes on this "
         f"host ({bj.get('cpus', '?')} CPUs) behind a gateway that runs no jobs itself; all share the SQLite database, "
         "the huey SQLite queue and the local audio store. Throughput: audio seconds / wall time from the first "
         "submit to the last job done. Queue wait: `started_at - created_at` of single jobs submitted while the "
         "workers are idle, median (max).", "",
         "| setup | wall | x real-time | queue wait when idle |", "|---|---|---|---|"]
    for r in runs:
        L.append(f"| {r['workers']} worker process{'es' if r['workers'] > 1 else ''}, SQLite queue | "
                 f"{r['wall_s']:.1f} s | {r['x_realtime']:.2f}x | {wait(r)} |")
    redis = bj.get("redis_queue")
    if redis:
        L.append(f"| {redis['workers']} worker process, Redis queue ({redis['clips']} clips) | {redis['wall_s']:.1f} s | "
                 f"{redis['x_realtime']:.2f}x | {wait(redis)} |")
    L += ["", "| target | measured | met |", "|---|---|---|"]
    ratio = bj.get("ratio_2_vs_1")
    if ratio is not None:
        L.append(f"| throughput, 2 worker processes / 1 (same host: they share its cores) | {ratio:.2f}x | — |")
    checks = [(r, f"{r['workers']} worker(s), SQLite queue") for r in runs] + ([(redis, "Redis queue")] if redis else [])
    for r, name in checks:
        if r.get("queue_wait_ms_median") is not None:
            met = "yes" if r["queue_wait_ms_median"] < 100 else "no"
            L.append(f"| queue wait when idle < 100 ms, {name} (median; max {r['queue_wait_ms_max']:.0f} ms) | "
                     f"{r['queue_wait_ms_median']:.0f} ms | {met} |")
    L.append("")
    return L


def write(res: dict) -> Path:
    meta = res["meta"]
    L = ["# Benchmarks", "",
         "Generated by `make bench` (bench/run.py); do not edit by hand. Every figure is the **median over "
         f"{meta['reps']} repetitions with the min–max range in parentheses**; every comparison is a ratio of "
         "figures measured in the same run, on the same machine, against the same fake upstream.", "",
         "## Setup", "",
         f"- command: `{meta['command']}` ({meta['mode']} mode), {meta['started']}, took {meta['took_min']:.1f} min",
         f"- machine: {meta['machine']}",
         f"- software: {meta['versions']}",
         f"- audiorouter commit: `{meta['commit']}`{' (with uncommitted changes)' if meta.get('dirty') else ''}",
         "- load: the gateway under test is pinned to one core with `taskset`; wrk (one thread) and the fake "
         "upstream share the other core. Each point is a warm-up second then "
         f"{meta['seconds']} s of wrk (`-t1 -cN`).",
         f"- machine load when the run started (1-min load average): {meta['loadavg']}; other work on the machine "
         "(tests, builds) shows up as noise in the ranges."]
    for mg in meta.get("merged") or []:
        L.append(f"- sections {', '.join(mg['sections'])}: a later run (`bench/run.py --merge`), {mg['started']}, "
                 f"commit `{mg['commit']}`{' (with uncommitted changes)' if mg.get('dirty') else ''}, 1-min load "
                 f"average at its start {mg['loadavg']:.2f}" + (f"; {mg['note']}" if mg.get("note") else ""))
    L.append("")
    gw = res.get("gateways")
    if gw:
        L += ["## Gateway overhead", "",
              "The fake upstream (`bench/fake_upstream.py`, raw asyncio) speaks OpenAI's audio API: transcriptions "
              "answer a small JSON, speech streams 100 KB in 4 chunks. It serves each delay twice: over plain http, "
              "and over https (TLS 1.3, a certificate for 127.0.0.1 signed by a CA the bench makes, "
              "`bench/tls.py`). Every gateway trusts that CA the way a deployment trusts a private one: "
              "`SSL_CERT_FILE` (audiorouter, LiteLLM) and `NODE_EXTRA_CA_CERTS` (Portkey); verification is never "
              "off. *direct* is wrk against the fake upstream with no gateway.", "",
              "Each gateway runs as deployed. audiorouter: a user catalog (`AUDIOROUTER_CATALOG`) whose provider "
              "uses the `openai_compatible` adapter (plain http) or the `openai` adapter with its `base_url` "
              "pointed at the fake upstream (https); auth on, with an API key created through the API by a "
              "management key; the usage ledger (SQLite) and /metrics on; the transcript cache off "
              "(`AUDIOROUTER_CACHE_TTL_S=0`). LiteLLM: its proxy with a `model_list` (`api_base`) and a master "
              "key (its spend log needs a PostgreSQL database and its Prometheus callback is an enterprise feature: "
              "neither is on). Portkey: its open-source gateway with `x-portkey-provider: openai` and "
              "`x-portkey-custom-host` (it has no keys, ledger or metrics of its own).", "",
              "LiteLLM and Portkey have no route that takes OpenRouter's base64 JSON (`input_audio`): for the JSON "
              "row their ratios are taken against their multipart figure for the same audio.", "",
              "More audiorouter servers run in the same run, at the first delay, c=1 and c=32 only: "
              "*audiorouter-nometrics* is today's code with `AUDIOROUTER_METRICS=false` (what metrics cost); "
              f"*audiorouter-prev* the code before the one upstream client (git `{gw.get('prev_ref', '?')}`: the "
              "hand-written transport for plain http, httpx for https); *audiorouter-before* the code before "
              f"the profile-guided rounds (git `{gw.get('before_ref', '?')}`); both from git worktrees with the same "
              "virtualenv. *CPU/req* is the gateway's own CPU time (user + system, all its processes and threads) "
              "per request at c=32: the figure the load on the rest of the machine disturbs least.", "",
              "*null-proxy* (`bench/null_proxy.py`) is the floor on the plain-http rows: a uvloop byte relay with "
              "no gateway logic (no parsing, auth, routing or ledger), pinned like the gateways. What it adds is "
              "what any extra process in the path costs on this machine; a gateway's added latency minus the "
              "floor's is its own work.", ""]
        tables, verdict = gateway_tables(gw)
        L += tables
        for f in plot_gateways(gw):
            L += [f"![gateway overhead]({f})", ""]
        L += phases_section(res.get("phases") or [])
        if gw.get("notes"):
            L += ["Notes from the run:", ""] + [f"- {n}" for n in gw["notes"]] + [""]
            if any(n.startswith("portkey speech") for n in gw["notes"]):
                L += ["Portkey's speech route fails on its own: its log shows `TypeError: immutable` from "
                      "`updateHeaders` (it appends headers to the upstream fetch response, whose headers are "
                      "immutable under Node 20's undici), with chunked and with Content-Length answers alike. "
                      "So there is no Portkey speech figure and no speech ratio against it.", ""]
        res["verdict_gateways"] = {f"{k[0]}@{k[1]}@{k[2]}ms": v for k, v in verdict.items()}
    if res.get("clients"):
        import upstream_clients
        L += ["## Upstream HTTP client", "",
              "`bench/upstream_clients.py`: the client end of a relayed request and nothing else, per library, in a "
              "child process pinned to the gateway's core, against the same fake upstream over plain http and over "
              "https (the bench's CA through `SSL_CERT_FILE`, verification on). *audiorouter* is the product's own "
              "call (`HTTPProvider.post_checked` / `open_checked` + `drain`, providers/upstream_client.py); "
              "*fasthttp* is the hand-written HTTP/1.1 transport it replaced (run from the git worktree of "
              "the last commit that had it; plain http only). CPU is the client process's own (user + system, all "
              "threads) per request with 32 in flight.", "",
              upstream_clients.table(res["clients"]), ""]
    big = res.get("big_payload")
    if big:
        runs, st = big["runs"], big["stages"]
        L += ["## Big payload", "",
              f"One {big['payload_bytes'] / 2**20:.1f} MiB OpenRouter JSON request (base64 of a "
              f"{st[0]['audio_s']:.0f} s, 16 kHz mono WAV) through audiorouter to the 0 ms upstream, a fresh "
              "server each time. RSS growth = peak RSS (VmHWM) after the request minus RSS before it.", "",
              "| figure | value |", "|---|---|",
              f"| HTTP status | {', '.join(str(r['status']) for r in runs)} |",
              f"| peak RSS growth | {fmt_range([r['growth_bytes'] / 2**20 for r in runs], 1, ' MiB')} |",
              f"| growth / payload | {fmt_range([r['growth_x_payload'] for r in runs], 2, 'x')} |",
              f"| end-to-end latency | {fmt_range([r['latency_s'] for r in runs], 2, ' s')} |",
              f"| usage.seconds | {runs[0].get('usage_seconds')} |",
              f"| upstream requests (long audio is cut at pauses) | {', '.join(str(r.get('chunks', '?')) for r in runs)} |",
              f"| body read while scanning, base64 decoded piece by piece (api/json_body.py) | "
              f"{fmt_range([s.get('read_body_streamed_ms', s['base64_decode_validate_ms']) for s in st], 1, ' ms')} |",
              f"| JSON parse of the rest (orjson) | {fmt_range([s['json_parse_ms'] for s in st], 2, ' ms')} |",
              f"| measuring the audio (duration) | {fmt_range([s['measure_audio_ms'] for s in st], 2, ' ms')} |",
              f"| decoding to 16 kHz samples (only when needed) | {fmt_range([s['decode_samples_ms'] for s in st], 1, ' ms')} |",
              f"| before: full PyAV decode to measure the duration | "
              f"{fmt_range([s['previous_full_decode_ms'] for s in st if 'previous_full_decode_ms' in s], 0, ' ms')} |"]
        relay = big.get("relay_runs") or []
        if relay:
            L += [f"| relayed whole (`AUDIOROUTER_CHUNK_SECONDS=0`): peak RSS growth | "
                  f"{fmt_range([r['growth_bytes'] / 2**20 for r in relay], 1, ' MiB')} |",
                  f"| relayed whole: growth / payload | {fmt_range([r['growth_x_payload'] for r in relay], 2, 'x')} |",
                  f"| relayed whole: end-to-end latency | {fmt_range([r['latency_s'] for r in relay], 2, ' s')} |"]
        if big.get("note"):
            L += ["", big["note"]]
        L.append("")
    loc = res.get("local")
    if loc:
        c = loc["concurrency"]
        b, h1, hc = loc["baseline"], loc["http_1"], loc[f"http_{c}"]
        L += ["## Local engines", "",
              f"Whisper base (int8) on {loc['clips']} English clips of the dev set with exact references (the first "
              f"{loc['clips']} in manifest order, {loc['audio_s']:.0f} s of audio), no language given (auto-detected). "
              "Baseline: plain "
              "faster-whisper (`WhisperModel(...).transcribe(audio, beam_size=5)`, all cores) in a loop, in-process. "
              "audiorouter: base64 JSON requests over HTTP to `local/whisper-base`, one at a time and "
              f"{c} concurrent clients. WER is pooled (total edits / total reference words) after the same "
              "normalisation (bench/textnorm.py) for both.", "",
              "| engine | x real-time | vs baseline | audio s per CPU s | pooled WER |", "|---|---|---|---|---|"]
        for name, rows in (("faster-whisper loop (baseline)", b), ("audiorouter, 1 at a time", h1),
                           (f"audiorouter, {c} concurrent", hc)):
            if not rows:
                continue
            ratio = [r["x_rt"] / bb["x_rt"] for r, bb in zip(rows, b)] if rows is not b else []
            L.append(f"| {name} | {fmt_range([r['x_rt'] for r in rows], 2, 'x')} | "
                     f"{fmt_range(ratio, 2, 'x') if ratio else '—'} | "
                     f"{fmt_range([r['audio_s_per_cpu_s'] for r in rows if r.get('audio_s_per_cpu_s')], 2)} | "
                     f"{fmt_range([r['wer'] * 100 for r in rows], 2, ' %')} |")
        res["verdict_stt"] = {"ratio_concurrent": med([r["x_rt"] / bb["x_rt"] for r, bb in zip(hc, b)]) if hc and b else None,
                              "wer_base": med([r["wer"] for r in b]) if b else None,
                              "wer_concurrent": med([r["wer"] for r in hc]) if hc else None}
        tts = loc.get("tts", [])
        if tts:
            L += ["", "hibari TTS over HTTP (`POST /api/v1/audio/speech`, model `local/hibari`, a 3-sentence text of "
                  f"{len(__import__('local_engines').TTS_TEXT)} characters), time to first body byte measured by the "
                  "client:", "", "| format | time to first byte | total | x real-time |", "|---|---|---|---|"]
            for fmt in ("pcm", "mp3"):
                rows = [r for r in tts if r["format"] == fmt]
                if rows:
                    L.append(f"| {fmt} | {fmt_range([r['ttfb_ms'] for r in rows], 1, ' ms')} | "
                             f"{fmt_range([r['total_s'] * 1000 for r in rows], 0, ' ms')} | "
                             f"{fmt_range([r['x_rt'] for r in rows if r.get('x_rt')], 1, 'x') if fmt == 'pcm' else '—'} |")
            res["verdict_tts"] = {"ttfb_ms": med([r["ttfb_ms"] for r in tts if r["format"] == "pcm"])}
        ba = loc.get("engine_before_after") or []
        if len(ba) == 2:
            prev, now = ba
            L += ["", f"Before/after of the Whisper engine, same run, in-process, {prev['clips']} clips "
                  f"({prev['audio_s']:.0f} s), {prev['concurrency']} requests in flight:", "",
                  "| engine | x real-time | audio s per CPU s | pooled WER |", "|---|---|---|---|",
                  f"| before (7b32ce4: one decode per worker thread, 1 CPU thread each) | {prev['x_rt']:.2f}x | "
                  f"{prev['audio_s_per_cpu_s']:.2f} | {prev['wer'] * 100:.2f} % |",
                  f"| after (cross-request batching, language from the shared encoder pass) | {now['x_rt']:.2f}x | "
                  f"{now['audio_s_per_cpu_s']:.2f} | {now['wer'] * 100:.2f} % |",
                  f"| ratio | {now['x_rt'] / prev['x_rt']:.2f}x | | |"]
        name = plot_engines(loc)
        if name:
            L += ["", f"![local engines]({name})"]
        L.append("")
    L += batch_section(res.get("batch_jobs") or {})
    if res.get("before_after"):
        L += res["before_after"] + [""]
    L += chat_section(res.get("chat") or {})
    L += targets_section(res)
    out = DOCS / "benchmarks.md"
    out.write_text("\n".join(L) + "\n")
    return out


def chat_section(chat: dict) -> list[str]:
    """bench/chat.py: the chat path's gateway overhead against the fake OpenAI chat upstream, the offline
    voice-chat cascade's time to first audio byte and x real-time against the 1.5 s target, and where that time
    goes (the in-process phase breakdown)."""
    if not chat:
        return []
    L = ["## Chat (`/chat/completions`)", ""]
    ov = chat.get("overhead") or {}
    if ov:
        names = {"audio_in": "audio in (2.7 s wav), text answer", "audio_out_stream": "streamed audio out (pcm16)"}
        others = [t for t in ("litellm", "portkey") if any(f"{t}_p50_ms" in r for r in ov.values())]
        L += ["Gateway overhead against the fake OpenAI chat upstream (`tests/fakes/openai_chat_fake.py`), one "
              "request at a time, whole answer read; added = p50 through the gateway minus p50 direct.", "",
              "| request | direct p50 (ms) | audiorouter p50 (ms) | audiorouter adds (ms) |"
              + "".join(f" {t} p50 (ms) | {t} adds (ms) |" for t in others),
              "|---|---|---|---|" + "---|---|" * len(others)]
        for key, r in ov.items():
            cells = [f"{r['direct_p50_ms']:.2f}", f"{r['audiorouter_p50_ms']:.2f}", f"{r['overhead_ms']:+.2f}"]
            for t in others:
                p50 = r.get(f"{t}_p50_ms")
                cells += ([f"{p50:.2f}", f"{p50 - r['direct_p50_ms']:+.2f}"] if p50 is not None
                          else [r.get(f"{t}_note") or "n/a", ""])
            L.append(f"| {names.get(key, key)} | " + " | ".join(cells) + " |")
        if not others:
            L += ["", "LiteLLM and Portkey are not measured on the chat path in this run."]
        L.append("")
    off = chat.get("offline") or {}
    runs = off.get("runs") or []
    if runs:
        target = off.get("target_ttfa_s", 1.5)
        ttfa = [r["ttfa_s"] for r in runs if r.get("ttfa_s") is not None]
        p50 = med(ttfa)
        met = "—" if p50 is None else ("yes" if p50 < target else "no")
        L += ["Offline voice-chat cascade (`local/voice-chat`: local Whisper -> the local LLM -> hibari, no key), "
              f"streamed pcm16 over HTTP: a {off.get('question_s', 0):.1f} s spoken question (said by hibari) "
              "answered in two or three sentences; the first request after start-up is not counted. "
              "x real-time = seconds of answer audio per second of wall clock.", "",
              "| figure | value |", "|---|---|",
              f"| time to first audio byte | {fmt_range(ttfa, 2, ' s')} |",
              f"| target: first audio byte < {target:g} s | {met} |",
              f"| whole answer | {fmt_range([r['total_s'] for r in runs], 2, ' s')} |",
              f"| answer audio | {fmt_range([r['audio_s'] for r in runs], 1, ' s')} |",
              f"| x real-time | {fmt_range([r['x_rt'] for r in runs if r.get('x_rt')], 1, 'x')} |"]
        if off.get("rss_mb"):
            L.append(f"| gateway RSS after the runs | {off['rss_mb']:.0f} MB |")
        if off.get("loadavg"):
            L.append(f"| 1-min load average before / after | {off['loadavg'][0]} / {off['loadavg'][-1]} |")
        L.append("")
    ph = chat.get("phases") or {}
    steps, casc = ph.get("steps") or [], ph.get("cascade") or []
    if steps or casc:
        L += ["Where the cascade's time to first audio goes, measured in-process on the product's own engines "
              f"(`python bench/chat.py --phases`), {ph.get('question_s', 0):.1f} s question; medians in ms with "
              "the range. Each step alone:", "", "| step | ms |", "|---|---|"]
        rows = [("decode the question (wav)", "decode_ms"), ("VAD (Silero)", "vad_ms"),
                ("Whisper base, beam 5 (VAD included)", "whisper_beam5_incl_vad_ms"),
                ("Whisper base, greedy (VAD included)", "whisper_beam1_incl_vad_ms"),
                ("LLM: first token", "llm_first_token_ms"), ("LLM: first clause", "llm_first_clause_ms"),
                ("LLM: first piece the cascade speaks", "llm_first_sentence_ms"), ("LLM: whole answer", "llm_total_ms"),
                ("TTS: first chunk of that piece", "tts_first_chunk_ms"), ("encode the first chunk", "encode_first_chunk_ms")]
        for label, k in rows:
            xs = [s[k] for s in steps if s.get(k) is not None]
            if xs:
                L.append(f"| {label} | {fmt_range(xs, 1)} |")
        marks = [("question decoded, request planned", "decode_plan_ms"), ("transcription done", "stt_end_ms"),
                 ("LLM's first token", "llm_first_token_ms"), ("first piece to speak", "first_sentence_ms"),
                 ("its first audio chunk", "tts_first_chunk_ms"), ("first audio byte out", "first_audio_ms"),
                 ("LLM done", "llm_end_ms"), ("answer done", "total_ms")]
        cold = ph.get("cold") or {}
        L += ["", "The whole cascade (`ChatJob.open_stream`), ms since the request: warm, and cold (first request "
              "after start-up with nothing preloaded):", "", "| moment | warm | cold |", "|---|---|---|"]
        for label, k in marks:
            xs = [c[k] for c in casc if c.get(k) is not None]
            if xs or cold.get(k) is not None:
                L.append(f"| {label} | {fmt_range(xs, 0)} | {f'{cold[k]:.0f}' if cold.get(k) is not None else '—'} |")
        if ph.get("loadavg_before"):
            L += ["", f"Load average (1, 5, 15 min) before: {ph['loadavg_before']}, after: {ph.get('loadavg_after')}."]
        L.append("")
    return L


# section -> (the first line of its text in the doc, the renderer of that text, the result it renders)
SPLICEABLE = {"chat": ("## Chat (`/chat/completions`)", chat_section, "chat"),
              # the cascade's part of the chat section only (its gateway-overhead table, measured beside LiteLLM and
              # Portkey, stays)
              "chat-offline": ("Offline voice-chat cascade (", lambda r: chat_section(r)[2:], "chat")}


def splice(res: dict, sections: list[str]) -> Path:
    """A section measured again on its own (`bench/run.py --only chat --splice`, e.g. on a fresh machine where
    the full run's results.json is gone) put in place of that section of the generated docs/benchmarks.md,
    with a line under Setup saying which run, commit and load it comes from. Other sections stay as they were."""
    doc = ROOT / "docs" / "benchmarks.md"
    lines = doc.read_text(encoding="utf-8").splitlines()
    m = res["meta"]
    for name in sections:
        if name not in SPLICEABLE:
            raise SystemExit(f"--splice: no renderer for section {name!r} (have: {', '.join(SPLICEABLE)})")
        head, render, key = SPLICEABLE[name]
        start = next(i for i, line in enumerate(lines) if line.startswith(head))
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = render(res[key])
    setup = lines.index("## Setup")
    end = next(i for i in range(setup + 1, len(lines)) if lines[i].startswith("## "))
    while not lines[end - 1].strip():
        end -= 1
    dirty = " (with uncommitted changes)" if m.get("dirty") else ""
    lines.insert(end, f"- sections {', '.join(sections)}: a later run on its own (`bench/run.py --only "
                      f"{','.join(sections)} --splice`), {m['started']}, commit `{m['commit']}`{dirty}, 1-min load "
                      f"average at its start {m['loadavg']:.2f}; it replaces what the full run measured there")
    doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return doc


def targets_section(res: dict) -> list[str]:
    """Issue 14's targets: on the https rows (auth with a key, ledger and metrics on) added p50 <= 1 ms at c=1,
    req/s at c=32 >= 2x Portkey's and >= 5x LiteLLM's, gateway CPU <= 1 ms per request; on the plain-http rows
    added p50 <= 0.5 ms (0 ms upstream); metrics cost <= 5 % of req/s at c=32."""
    L = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    verdicts = res.get("verdict_gateways", {})

    def key(k):
        sc, kind, d = k.split("@")
        return (sc != "https", int(d[:-2]), list(KIND_TITLES).index(kind))
    for k in sorted(verdicts, key=key):
        v = verdicts[k]
        sc, kind, d = k.split("@")
        d = d[:-2]
        where = f"{kind}, {sc} upstream, {d} ms"
        a, floor = v.get("added_p50"), v.get("floor_added_p50")
        limit = 1.0 if (sc == "https" or d != "0") else 0.5
        if a is not None:
            fl = f" (a do-nothing relay: {floor:+.2f} ms)" if floor is not None else ""
            L.append(f"| {where}: audiorouter adds <= {limit:g} ms p50 at c=1 | {a:+.2f} ms{fl} | "
                     f"{'yes' if a <= limit else 'no'} |")
        if d != "0":
            continue  # the 50 ms rows are bounded by the upstream (32 / 50 ms): no ratio targets there
        vs = " (their multipart figure)" if kind == "json" else ""
        r, rl = v.get("ratio_vs_portkey"), v.get("ratio_vs_litellm")
        if r is not None:
            L.append(f"| {where}: req/s at c=32 >= 2x Portkey{vs} | {r:.2f}x | {'yes' if r >= 2 else 'no'} |")
        elif kind == "speech":
            L.append(f"| {where}: req/s at c=32 >= 2x Portkey | no Portkey figure (its speech route fails) | — |")
        if rl is not None:
            L.append(f"| {where}: req/s at c=32 >= 5x LiteLLM{vs} | {rl:.2f}x | {'yes' if rl >= 5 else 'no'} |")
        if sc == "https" and v.get("cpu_ms") is not None:
            L.append(f"| {where}: gateway CPU <= 1 ms per request (c=32) | {v['cpu_ms']:.2f} ms | "
                     f"{'yes' if v['cpu_ms'] <= 1 else 'no'} |")
        if v.get("rps") and v.get("rps_nometrics"):
            cost = 1 - v["rps"] / v["rps_nometrics"]
            L.append(f"| {where}: metrics on cost <= 5 % of req/s at c=32 | {cost * 100:+.1f} % | "
                     f"{'yes' if cost <= 0.05 else 'no'} |")
    big = res.get("big_payload")
    if big and big["runs"]:
        g = med([x["growth_x_payload"] for x in big["runs"]])
        L.append(f"| 25 MB JSON: peak RSS growth <= 3x payload | {g:.2f}x | {'yes' if g <= 3 else 'no'} |")
    s = res.get("verdict_stt")
    if s and s.get("ratio_concurrent") is not None:
        L.append(f"| STT: concurrent throughput >= 1.3x baseline | {s['ratio_concurrent']:.2f}x | "
                 f"{'yes' if s['ratio_concurrent'] >= 1.3 else 'no'} |")
        L.append(f"| STT: WER no worse than baseline | {s['wer_concurrent'] * 100:.2f} % vs {s['wer_base'] * 100:.2f} % | "
                 f"{'yes' if s['wer_concurrent'] <= s['wer_base'] + 1e-9 else 'no'} |")
    t = res.get("verdict_tts")
    if t:
        L.append(f"| TTS: first byte < 60 ms (3 sentences) | {t['ttfb_ms']:.1f} ms | {'yes' if t['ttfb_ms'] < 60 else 'no'} |")
    L.append("")
    return L


def interim(res: dict) -> list[str]:
    """The sections a partial run (`--only gateways,clients`) measured, for a doc section of their own: the
    gateway tables (plain http and https), the probe's phases, the upstream clients and the targets they
    decide."""
    gw = res.get("gateways") or {}
    L: list[str] = []
    if gw:
        tables, verdict = gateway_tables(gw)
        L += tables
        res["verdict_gateways"] = {f"{k[0]}@{k[1]}@{k[2]}ms": v for k, v in verdict.items()}
        if gw.get("notes"):
            L += ["Notes from the run:", ""] + [f"- {n}" for n in gw["notes"]] + [""]
    L += phases_section(res.get("phases") or [])
    if res.get("clients"):
        import upstream_clients
        L += ["### Upstream HTTP client (client side only)", "", upstream_clients.table(res["clients"]), ""]
    if gw:
        L += [line.replace("## Targets", "### Targets", 1) for line in targets_section(res)]
    return L
