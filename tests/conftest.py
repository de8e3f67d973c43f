"""Shared fixtures. Tests talk to real servers over HTTP: `server` is an audiorouter process started once
per session on a free port (local engines, no keys, no network)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEV_AUDIO = SHARED / "audio" / "dev"


IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tools(*tools: str) -> None:
    """Skips the test when a program it runs is not installed, except under CI=true (`make test` installs
    them: scripts/sysdeps.sh), where a missing tool is a failure, not a silent skip."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (scripts/sysdeps.sh installs it)"
        if IN_CI:
            pytest.fail(f"CI=true: {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, env: dict[str, str] | None = None, args: list[str] | None = None, tmp: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A developer's own provider keys or settings must not leak into test servers: they would reach real
        # providers (tests never touch the internet) or change behaviour.
        base = {k: v for k, v in os.environ.items()
                if not (k.endswith("_API_KEY") or k.startswith("AUDIOROUTER_") or k == "GOOGLE_ACCESS_TOKEN")}
        # Each test server gets its own data dir (SQLite ledger, keys) unless the test shares one on purpose.
        data_dir = tempfile.mkdtemp(prefix="audiorouter-data-", dir=tmp)
        self.env = {**base, "AUDIOROUTER_CACHE_DIR": str(Path.home() / ".cache" / "audiorouter"),
                    "AUDIOROUTER_DATA_DIR": data_dir,
                    # and its own transcript cache, so no test is answered from another test's cache
                    "AUDIOROUTER_CACHE_PATH": os.path.join(data_dir, "transcripts.db"), **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = (tmp or Path("/tmp")) / f"audiorouter-{self.port}.log"

    def start(self, timeout: float = 120) -> ServerProcess:
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(self.port), *self.args],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> ServerProcess:
    s = ServerProcess(tmp=tmp_path_factory.mktemp("server")).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def manifest() -> list[dict]:
    with open(DEV_AUDIO / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


class ClipTexts:
    """local/whisper-base's transcript of whole dev clips, each clip transcribed once per session by the shared
    `server` and remembered here. The accuracy test's pooled WER and the long-audio tests' clip-by-clip
    baselines read the same transcripts instead of each making their own (before: 342 s of clips for the
    accuracy test, then 233 s and 293 s of the same clips again for the two baselines). Every request says Cache-Control: no-store: the model's answer, not the transcript
    cache's; what is remembered is that answer, for this test session only."""

    def __init__(self, url: str):
        self.url = url
        self.texts: dict[str, str] = {}
        self.lock = threading.Lock()

    def _transcribe(self, entry: dict) -> str:
        path = DEV_AUDIO / entry["file"]
        body = {"model": "local/whisper-base",
                "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(), "format": path.suffix[1:]}}
        r = httpx.post(self.url + "/api/v1/audio/transcriptions", json=body, timeout=600,
                       headers={"Cache-Control": "no-store"})
        assert r.status_code == 200, f"{entry['file']}: {r.status_code} {r.text[:300]}"
        out = r.json()
        assert abs(out["usage"]["seconds"] - entry["duration_s"]) < 0.1, (entry["file"], out["usage"])
        return out["text"]

    def __call__(self, entries: list[dict]) -> list[str]:
        """The transcripts of `entries` (manifest rows), in order; those not yet made are made now, four at a
        time: the local engine decodes concurrent requests' windows in one batch (providers/local_whisper.py)."""
        with self.lock:
            todo = list({e["file"]: e for e in entries if e["file"] not in self.texts}.values())
            with ThreadPoolExecutor(4) as pool:
                for e, text in zip(todo, pool.map(self._transcribe, todo)):
                    self.texts[e["file"]] = text
            return [self.texts[e["file"]] for e in entries]


@pytest.fixture(scope="session")
def clip_texts(server) -> ClipTexts:
    return ClipTexts(server.url)


def slow_except(params, *quick) -> list:
    """Parameter sets for @pytest.mark.parametrize where only `quick` (values, or tuples of values) run in
    `make test-fast`: every other set is marked slow. For cases that each cost a local Whisper transcription
    and repeat one check over many inputs: the fast loop keeps a sample, `make test` runs them all."""
    out = []
    for p in params:
        if p in quick:
            out.append(p)
        else:
            out.append(pytest.param(*p, marks=pytest.mark.slow) if isinstance(p, tuple)
                       else pytest.param(p, marks=pytest.mark.slow))
    missing = [q for q in quick if q not in params]
    assert not missing, f"slow_except: {missing} not among the parameters"
    return out


# ---- `slow`: what `make test-fast` leaves out (CI and `make test` run everything) ---------------------------
# `make test-fast` is the edit-run loop: about two minutes on an idle 2-core machine. What it leaves out is
# marked slow: single tests with @pytest.mark.slow (preferred), the sets of a parametrized test beyond a
# sample with slow_except(), or an entry here. Measure with `pytest -m "not slow" --durations=30` before
# adding or removing one; every module keeps its quick tests in the loop unless each of its tests needs the
# slow set-up (the reasons below).
SLOW_MODULES = {
    "test_web.py": "a real browser (chromium through playwright) on a server with the local engines loaded",
    "test_replicas.py": "two gateways sharing PostgreSQL and Redis",
    "test_chat_local.py": "the offline voice-chat cascade: Whisper, a local LLM and hibari per request",
    "test_backpressure.py": "fills the local inference pool with real jobs",
    "test_fuzz_parsers.py": "hypothesis: hundreds of bodies per property (3.5 min measured on a busy 2-core box)",
    "test_fuzz_api.py": "schemathesis over every route",
    "test_seed_examples.py": "the published client programs (bash + curl + jq, SDKs) as real processes",
    "test_batch_workers.py": "worker processes, PostgreSQL, Redis and an S3 server",
}
# Tests of those modules that are quick all the same: `make test-fast` runs them.
QUICK_TESTS = {
    "test_seed_examples.py::test_skill_workflow_reports_a_bad_file",  # curl + jq against the shared server: a 400
    "test_seed_examples.py::test_docs_model_discovery",
}


# Single tests measured at 15 s or more (`--durations`, 2 cores shared with other work: about 5x an idle box).
# A key is FILE::NAME (every parameter set) or FILE::NAME[ID] (one set).
SLOW_TESTS = {
    "test_keys.py::test_non_loopback_without_auth_refuses_to_start_unless_forced": 84,  # starts 4 servers
    "test_keys.py::test_no_keys_serves_loopback_without_a_key": 41,
    "test_keys.py::test_require_auth_without_any_key": 37,
    "test_keys.py::test_start_sweeps_nothing_it_should_not": 31,  # per backend: a restart over the same store
    "test_parsing_multipart.py::test_fuzz_same_answer_as_starlettes_parser": 20,
    "test_parsing_stream.py::test_streamed_equals_whole_body": 20,
    "test_speech.py::test_streaming_first_bytes_leave_before_synthesis_ends": 17,
    "test_speech.py::test_round_trip_through_whisper": 15,
    "test_cli_jobs.py::test_cli_transcribe_chunks_long_audio_and_uses_the_cache": 19,
    "test_ledger.py::test_sigkill_during_transcription_then_the_sweeper_releases_the_reservation": 19,
    "test_ledger.py::test_sigkill_mid_request_leaves_an_incomplete_row": 19,
    # measured 2026-12-07 under a load average of ~11 (several suites and a benchmark at once)
    "test_batch_jobs.py::test_submit_run_result_webhook_and_charge": 38,
    "test_batch_jobs.py::test_cancel_queued_job_charges_nothing": 28,
    "test_batch_jobs.py::test_cli_submits_a_folder_and_writes_srt": 27,
    "test_batch_jobs.py::test_failed_webhook_is_retried_and_job_still_readable": 21,
    "test_batch_jobs.py::test_webhook_secrets_are_encrypted_at_rest": 20,
    "test_batch_jobs.py::test_tampered_body_does_not_verify": 0,  # reads the webhook test's events: runs with it
    # 2026-12-08, quiet machine, serial `make test` (CI=true, --durations=0): every test of the quick loop that
    # took 2 s or more (set-up included), so that `make test-fast` (-n 2) stays near two minutes
    "test_local_beam.py::test_greedy_and_beam_requests_at_once_each_decode_with_their_own_beam": 4,
    "test_chain.py::test_two_nodes_transcription": 13,
    "test_local_cancel.py::test_cancel_after_the_first_segment_stops_the_engine[batched]": 11,
    "test_routing.py::test_sort_by_measured_latency_and_throughput": 7,
    "test_url_input.py::test_fetch_from_loopback_when_allowed": 7,
    "test_disconnect.py::test_sse_transcription_client_leaving_is_recorded_as_cancelled": 7,
    "test_local_cancel.py::test_cancel_after_the_first_segment_stops_the_engine[sequential]": 6,
    "test_keys.py::test_cli_create_list_disable_share_the_store[postgres]": 5,
    "test_routing.py::test_overall_deadline_bounds_retries": 5,
    "test_url_input.py::test_allow_hosts_and_redirect_recheck": 5,
    "test_upload_disconnect.py::test_uploads_cut_short_are_not_server_errors": 5,
    "test_ledger.py::test_fallback_after_upstream_failures_is_charged_once[postgres]": 5,
    "test_routing.py::test_circuit_breaker_skips_then_probes": 5,
    "test_pricing.py::test_usage_seconds_is_the_measured_duration_and_cost_is_price_times_seconds[jfk_inaugural_excerpt.flac]": 5,
    "test_security.py::test_open_connections_are_capped": 4,
    "test_ledger.py::test_fallback_after_upstream_failures_is_charged_once[sqlite]": 4,
    "test_ledger.py::test_byok_key_is_encrypted_used_first_and_billed_the_fee[postgres]": 4,
    "test_batch_upload_memory.py::test_big_json_base64_body_is_decoded_to_disk_not_memory": 4,
    "test_key_hygiene.py::test_a_locked_database_answers_503_after_the_configured_busy_timeout": 4,
    "test_ledger.py::test_byok_key_is_encrypted_used_first_and_billed_the_fee[sqlite]": 4,
    "test_ledger.py::test_byok_only_transcription_model_is_served_with_the_callers_key[sqlite]": 4,
    "test_ledger.py::test_byok_only_transcription_model_is_served_with_the_callers_key[postgres]": 4,
    "test_keys.py::test_cli_create_list_disable_share_the_store[sqlite]": 4,
    "test_longform.py::test_upstream_chunks_fit_limit_and_carry_context": 4,
    "test_audio_input.py::test_part_content_type_is_the_hint_when_the_name_has_none": 4,
    "test_cache.py::test_ttl_expiry": 3,
    "test_keys.py::test_health_open_and_missing_key_in_both_dialects[postgres]": 3,
    "test_batch_jobs.py::test_base64_body_is_the_same_as_sync": 3,
    "test_provider_google.py::test_upstream_errors_map_to_the_dialect_envelope[timeout-openai]": 3,
    "test_key_hygiene.py::test_limit_remaining_subtracts_reservations_in_flight": 3,
    "test_provider_google.py::test_upstream_errors_map_to_the_dialect_envelope[timeout-openrouter]": 3,
    "test_provider_deepgram.py::test_transcription_errors_map_to_the_dialect_envelope[timeout-openai]": 3,
    "test_provider_elevenlabs.py::test_transcription_errors_map_to_the_dialect_envelope[timeout-openrouter]": 3,
    "test_provider_elevenlabs.py::test_transcription_errors_map_to_the_dialect_envelope[timeout-openai]": 3,
    "test_provider_deepgram.py::test_transcription_errors_map_to_the_dialect_envelope[timeout-openrouter]": 3,
    "test_provider_elevenlabs.py::test_speech_errors[timeout]": 3,
    "test_provider_deepgram.py::test_speech_errors[timeout]": 3,
    "test_keys.py::test_key_changes_apply_to_the_very_next_request[sqlite]": 3,
    "test_sdk_openai.py::test_openai_npm_sdk": 3,
    "test_ledger.py::test_a_store_failure_on_the_request_path_is_a_503_not_a_500": 3,
    "test_keys.py::test_key_changes_apply_to_the_very_next_request[postgres]": 3,
    "test_pricing.py::test_minimum_seconds_and_per_request_fee": 3,
    "test_audio_params.py::test_local_whisper_gives_word_logprobs": 3,
    "test_chain.py::test_first_fails_second_serves[429]": 3,
    "test_streaming.py::test_stream_json_dialect_and_text_matches_non_streaming": 3,
    "test_ledger.py::test_generation_row_in_openrouter_shape[postgres]": 3,
    "test_key_hygiene.py::test_weak_keys_are_refused_and_generated_ones_pass": 3,
    "test_security.py::test_headers_sent_a_byte_at_a_time_get_408": 2,
    "test_audio_input.py::test_json_shape_every_format[mp3]": 2,
    "test_security.py::test_connections_per_client_are_capped_and_idle_ones_closed": 2,
    "test_keys_sdk.py::test_api_keys_lifecycle_with_the_sdk[postgres]": 2,
    "test_errors.py::test_speech_input_limit_is_configurable": 2,
    "test_cache.py::test_redis_backend": 2,
    "test_limits.py::test_402_before_any_provider_is_called[postgres]": 2,
    "test_batch_jobs.py::test_multipart_upload_and_idempotency_key": 2,
    "test_router_health.py::test_a_refused_gateway_key_does_not_pause_the_endpoint": 2,
    "test_chain.py::test_first_fails_second_serves[timeout]": 2,
    "test_sdk_openai.py::test_transcription_verbose_json_words": 2,
    "test_sdk_openrouter.py::test_create_transcription_verbose_words": 2,
    "test_chain.py::test_without_fallbacks_the_first_error_is_returned[timeout-/api/v1/audio/transcriptions]": 2,
    "test_upstream_secrets.py::test_key_echoed_at_every_offset_around_the_cut_never_leaks": 2,
    "test_chain.py::test_without_fallbacks_the_first_error_is_returned[timeout-/v1/audio/transcriptions]": 2,
    "test_chat_cache.py::test_the_same_audio_question_is_not_transcribed_twice": 2,
    "test_pricing.py::test_usage_seconds_is_the_measured_duration_and_cost_is_price_times_seconds[librispeech_test-other_3080-5032-0009.flac]": 2,
    "test_keys.py::test_expired_key_gets_401_with_a_clear_message[sqlite]": 2,
    "test_security.py::test_a_stalled_or_dribbled_body_gets_408": 2,
    "test_key_hygiene.py::test_labels_stored_by_older_versions_are_redone_at_start": 2,
    "test_chat.py::test_seed_python_audio_in": 2,
    "test_ledger.py::test_generation_row_in_openrouter_shape[sqlite]": 2,
    "test_diarize_chunks.py::test_speakers_stay_the_same_across_chunks": 2,
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        test = f"{module}::{item.originalname}"
        if test in QUICK_TESTS:
            continue
        if module in SLOW_MODULES or test in SLOW_TESTS or f"{module}::{item.name}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
