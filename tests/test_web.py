"""The Playground and dashboard (src/audiorouter/web/) in a real browser: Debian's chromium (/usr/bin/chromium,
installed by scripts/sysdeps.sh) driven by Playwright for Python, which never downloads a browser of its own.

One server for the module (creating keys turns authentication on, so it is not the shared `server`), one
browser, and every request of the page to anything but 127.0.0.1 aborted and recorded: the app must work, and
must try nothing, without the internet. The tests run in order (the activity test counts the requests made
before it; the keys test turns auth on). Screenshots of each tab go to docs/images/ (README.md shows them)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from conftest import DEV_AUDIO, ROOT, ServerProcess

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        # a fake microphone (a beep), granted without a prompt: the recording test
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
IMAGES = ROOT / "docs" / "images"
JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"
SMALL_WAV = DEV_AUDIO / "asterisk_en_vm-nonumber.wav"
WAIT_MS = 120_000  # bounded waits for work on the local engines (a loaded 2-core machine)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    s = ServerProcess(tmp=tmp_path_factory.mktemp("web")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        msg = f"{CHROMIUM} is missing: install Debian's chromium (make sysdeps)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Watched:
    """A browser context whose page may reach 127.0.0.1 only; what else it tried, and its errors, are kept."""

    def __init__(self, browser, url: str, **ctx):
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.ctx = browser.new_context(accept_downloads=True, **ctx)
        self.ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
        self.ctx.route("**/*", self._route)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"console: {m.text} at {m.location.get('url', '')}"))

    def _route(self, route):
        url = route.request.url
        if urlparse(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


@pytest.fixture(scope="module")
def web(browser, web_server):
    w = Watched(browser, web_server.url, viewport={"width": 1280, "height": 900})
    w.page.goto(web_server.url + "/")
    yield w
    w.ctx.close()


def shot(page, name: str, mask: list | None = None) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"{name}.png"), full_page=True, mask=mask or [])


def wait_js(page, expr: str, timeout_s: float = WAIT_MS / 1000) -> None:
    """Poll a JS expression until it is true. (Playwright's wait_for_function evaluates a string inside the page,
    which the page's CSP forbids, as it should: no 'unsafe-eval'.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expr):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expr}; error banner: {error_banner(page)!r}")
        page.wait_for_timeout(100)


def error_banner(page) -> str:
    return page.locator("#error-text").inner_text() if page.locator("#error").is_visible() else ""


def test_page_headers_and_csp(web_server):
    r = httpx.get(web_server.url + "/playground")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "http" not in csp
    assert "<script>" not in r.text and "style=" not in r.text  # nothing inline for the CSP to refuse
    for url in ("/docs", "/redoc"):
        d = httpx.get(web_server.url + url)
        assert d.status_code == 200 and "script-src 'self'" in d.headers["content-security-policy"]
        assert "cdn" not in d.text.lower() and "https://" not in d.text


def test_transcribe_upload_shows_transcript_and_words(web):
    page = web.page
    page.goto(page.url.split("#")[0] + "#transcribe")
    page.wait_for_selector("#stt-model option[value='local/whisper-base']", state="attached")
    assert page.locator("#stt-model").input_value() == "local/whisper-base"
    assert "free" in page.locator("#stt-price").inner_text()
    page.set_input_files("#stt-file", str(JFK))
    page.check("#stt-words")
    page.click("#stt-submit")
    wait_js(page, "document.querySelector('#stt-text').textContent.toLowerCase().includes('country')")
    text = page.locator("#stt-text").inner_text().lower()
    assert "ask not what your country can do for you" in text.replace(",", "")
    meta = page.locator("#stt-meta").inner_text()
    assert "gen-" in meta and "Time taken" in meta and "local" in meta and "Cost" in meta and "Duration" in meta
    word = page.locator("#stt-segments button.word").nth(5)
    start = float(word.get_attribute("data-start"))
    word.click()
    t = page.evaluate("document.querySelector('#stt-audio').currentTime")
    assert abs(t - start) < 0.5, (t, start)
    shot(page, "transcribe")
    assert error_banner(page) == ""


def test_transcribe_srt_download(web, tmp_path):
    page = web.page
    page.select_option("#stt-format", "srt")
    page.uncheck("#stt-words")
    page.click("#stt-submit")
    wait_js(page, "document.querySelector('#stt-text').textContent.includes('-->')")
    with page.expect_download() as dl:
        page.click("#stt-download")
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(path)
    assert path.suffix == ".srt"
    srt = path.read_text()
    assert srt.startswith("1\n00:00:0") and " --> " in srt and "country" in srt.lower()


def test_transcribe_streamed_deltas(web):
    page = web.page
    page.select_option("#stt-format", "json")
    page.check("#stt-stream")
    page.set_input_files("#stt-file", str(SMALL_WAV))
    page.click("#stt-submit")
    wait_js(page, "document.querySelector('#stt-meta').textContent.includes('Time taken') && "
                           "document.querySelector('#stt-text').textContent.toLowerCase().includes('message')")
    assert "afraid" in page.locator("#stt-text").inner_text().lower()
    page.uncheck("#stt-stream")


def test_record_from_the_microphone_and_transcribe(web):
    page = web.page
    page.select_option("#stt-format", "json")
    page.click("#stt-record")
    wait_js(page, "document.querySelector('#stt-record').getAttribute('aria-pressed') === 'true'")
    page.wait_for_timeout(1500)
    page.click("#stt-record")
    wait_js(page, "document.querySelector('#stt-file-name').textContent.includes('recording.')")
    assert "KiB" in page.locator("#stt-file-name").inner_text()
    page.evaluate("document.querySelector('#stt-meta').textContent = ''")
    page.click("#stt-submit")
    wait_js(page, "document.querySelector('#stt-meta').textContent.includes('gen-')")  # a beep: no words needed
    assert error_banner(page) == ""


def test_keyboard_only_navigation(web):
    page = web.page
    page.reload()
    page.wait_for_selector("#stt-model option", state="attached")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the second section: Speech
    assert page.evaluate("document.activeElement.dataset.view") == "speech"
    page.keyboard.press("Enter")
    wait_js(page, "!document.querySelector('#view-speech').hidden")
    assert page.locator("nav a[data-view=speech]").get_attribute("aria-current") == "page"
    # every form control of every view has a label
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)""")
    assert unlabelled == []


def test_speech_plays_and_voice_picker(web):
    page = web.page
    page.click("nav a[data-view=speech]")
    page.wait_for_selector("#tts-voice option", state="attached")
    assert page.locator("#tts-model").input_value() == "local/hibari"
    voices = page.locator("#tts-voice option").all()
    assert len(voices) >= 2
    pick = voices[1].get_attribute("value")
    page.select_option("#tts-voice", pick)
    page.fill("#tts-text", "The playground speaks this sentence while it streams.")
    assert "characters" in page.locator("#tts-count").inner_text()
    page.click("#tts-submit")
    wait_js(page, "(() => { const a = document.querySelector('#tts-audio');"
                           " return a.duration > 0 && isFinite(a.duration); })()")
    meta = page.locator("#tts-meta").inner_text()
    assert pick in meta and "gen-" in meta and "First audio after" in meta
    with page.expect_download() as dl:
        page.click("#tts-download")
    assert dl.value.suggested_filename == "speech.mp3"
    shot(page, "speech")
    assert error_banner(page) == ""


CHAT_DONE = ("document.querySelectorAll('#chat-log li.assistant').length === {n} && "
             "document.querySelectorAll('#chat-log li.assistant dl dt').length > 0 && "
             "!document.querySelector('#chat-log li.assistant:last-child[aria-busy]') && "
             "document.querySelector('#chat-log li.assistant:last-child dl').textContent.includes('Time taken')")
AUDIO_OK = ("(() => {{ const a = document.querySelector('#chat-log li.assistant:last-child audio');"
            " return !!a && a.duration > 0 && isFinite(a.duration); }})()")


def test_audio_chat_two_turns_typed_then_spoken(web):
    page = web.page
    page.click("nav a[data-view=chat]")
    page.wait_for_selector("#chat-model option[value='local/voice-chat']", state="attached")
    assert page.locator("#chat-model").input_value() == "local/voice-chat"
    assert page.locator("#chat-voice option").count() >= 1
    # a typed question: the answer's transcript appears and its audio streams (pcm16 pieces played on arrival)
    page.fill("#chat-text", "What is the capital of France?")
    with page.expect_request(lambda r: r.url.endswith("/api/v1/chat/completions")) as req:
        page.click("#chat-submit")
    sent = json.loads(req.value.post_data)
    assert sent["stream"] is True and sent["modalities"] == ["text", "audio"] and sent["audio"]["format"] == "pcm16"
    wait_js(page, CHAT_DONE.format(n=1))
    wait_js(page, AUDIO_OK.format())
    first = page.locator("#chat-log li.assistant").first
    assert first.locator(".said").inner_text().strip()
    assert int(first.get_attribute("data-streamed-pieces")) >= 1
    meta = first.locator("dl").inner_text()
    assert "gen-" in meta and "local" in meta and "Cost" in meta and "First audio after" in meta
    audio_id = next(w for w in meta.split() if w.startswith("audio_"))
    assert "capital of France" in page.locator("#chat-log li.user").first.inner_text()
    # a spoken second turn from the (fake) microphone, sent when the recording stops; the first answer goes
    # back by its audio id
    page.click("#chat-record")
    wait_js(page, "document.querySelector('#chat-record').getAttribute('aria-pressed') === 'true'")
    page.wait_for_timeout(1500)
    with page.expect_request(lambda r: r.url.endswith("/api/v1/chat/completions")) as req:
        page.click("#chat-record")
    msgs = json.loads(req.value.post_data)["messages"]
    assert msgs[0] == {"role": "user", "content": "What is the capital of France?"}
    assert msgs[1] == {"role": "assistant", "audio": {"id": audio_id}}
    assert msgs[2]["content"][0]["type"] == "input_audio" and len(msgs[2]["content"][0]["input_audio"]["data"]) > 1000
    wait_js(page, CHAT_DONE.format(n=2))
    wait_js(page, AUDIO_OK.format())
    assert page.locator("#chat-log li.user").nth(1).locator("audio").count() == 1
    # the recorded question's own words (a beep: perhaps none) replace the placeholder
    wait_js(page, "document.querySelectorAll('#chat-log li.user')[1].querySelector('.said').textContent"
                  ".includes('\u201c')")
    second = page.locator("#chat-log li.assistant").nth(1)
    assert "gen-" in second.locator("dl").inner_text() and second.locator(".said").inner_text().strip()
    assert error_banner(page) == ""
    shot(page, "chat")
    # the API's refusal, in words
    page.evaluate("(() => { const s = document.querySelector('#chat-voice');"
                  " s.append(new Option('nosuch', 'nosuch')); s.value = 'nosuch'; })()")
    page.fill("#chat-text", "Hello?")
    page.click("#chat-submit")
    wait_js(page, "!document.querySelector('#error').hidden")
    assert "audio.voice" in error_banner(page) and "nosuch" in error_banner(page)
    assert page.locator("#chat-log li.assistant").count() == 2
    page.click("#error-close")
    page.click("#chat-new")
    assert page.locator("#chat-log li").count() == 0


def _copied_snippet(page, lang: str) -> str:
    page.click(f"#qs-tabs [data-lang={lang}]")
    page.click("#qs-copy")
    return page.evaluate("navigator.clipboard.readText()")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AUDIOROUTER_API_KEY"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_models_quickstart_snippets_run(web, web_server, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is missing (make sysdeps)")
    page = web.page
    page.click("nav a[data-view=models]")
    page.click("#models-table button[data-id='local/whisper-base']")
    page.wait_for_selector("#endpoints-table tbody tr")
    assert "closed" in page.locator("#endpoints-table").inner_text()
    shutil.copy(SMALL_WAV, tmp_path / "audio.wav")
    curl = _copied_snippet(page, "curl")
    assert web_server.url + "/v1/audio/transcriptions" in curl
    out = _run(["bash", "-c", curl], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "afraid" in json.loads(out.stdout)["text"].lower()
    for lang in ("python", "openrouter"):
        code = _copied_snippet(page, lang)
        out = _run([sys.executable, "-c", code], tmp_path)
        assert out.returncode == 0, out.stderr
        assert "afraid" in out.stdout.lower(), (lang, out.stdout)
    assert "createReadStream" in _copied_snippet(page, "typescript")
    shot(page, "models")
    # a speech model: its snippets write speech.mp3
    page.click("#models-table button[data-id='local/hibari']")
    wait_js(page, "document.querySelector('#model-title').textContent.startsWith('local/hibari')")
    for lang, cmd in (("curl", ["bash", "-c"]), ("python", [sys.executable, "-c"]), ("openrouter", [sys.executable, "-c"])):
        (tmp_path / "speech.mp3").unlink(missing_ok=True)
        out = _run([*cmd, _copied_snippet(page, lang)], tmp_path)
        assert out.returncode == 0, (lang, out.stderr)
        assert (tmp_path / "speech.mp3").stat().st_size > 1000, lang
    # an audio chat model: kind shown as chat (not "text"); its snippets ask a question (python: answer.wav)
    row = page.locator("#models-table tbody tr", has_text="local/voice-chat")
    assert "chat (text+audio → text+audio)" in row.inner_text()
    row.locator("button[data-id='local/voice-chat']").click()
    wait_js(page, "document.querySelector('#model-title').textContent.startsWith('local/voice-chat')")
    out = _run([sys.executable, "-c", _copied_snippet(page, "python")], tmp_path)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert (tmp_path / "answer.wav").read_bytes()[:4] == b"RIFF"
    out = _run(["bash", "-c", _copied_snippet(page, "curl")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "answer.json").read_text())["choices"][0]["message"]["audio"]["transcript"]
    out = _run([sys.executable, "-c", _copied_snippet(page, "openrouter")], tmp_path)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert "modalities" in _copied_snippet(page, "typescript")


def test_activity_chart_shows_the_requests(web, web_server):
    page = web.page
    page.click("nav a[data-view=activity]")
    page.select_option("#act-metric", "requests")
    # made so far: 3 transcriptions from the page, 1 speech, and the snippets' 3 + 3
    wait_js(page, "Number(document.querySelector('#chart-day svg').dataset.total) >= 10")
    assert "local/whisper-base" in page.locator("#chart-model").inner_html()
    today = page.locator("#chart-day rect.bar").last
    assert float(today.get_attribute("data-value")) >= 10
    rows = page.locator("#gens-table tbody tr")
    assert rows.count() >= 10
    rows.first.locator("button").click()
    page.wait_for_selector("#gen-detail:not([hidden])")
    assert "local" in page.locator("#gen-detail-meta").inner_text()
    assert "no key needed" in page.locator("#auth-state").inner_text()
    shot(page, "activity")


def test_docs_render_offline(web, web_server):
    page = web.page
    page.goto(web_server.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "audiorouter" in page.locator(".swagger-ui .info .title").inner_text()
    page.goto(web_server.url + "/redoc")
    page.wait_for_selector("h1:has-text('audiorouter')")
    page.goto(web_server.url + "/#transcribe")
    page.wait_for_selector("#stt-model option", state="attached")


def test_phone_width_dark(browser, web_server):
    w = Watched(browser, web_server.url, viewport={"width": 390, "height": 844}, color_scheme="dark",
                is_mobile=True, has_touch=True)
    try:
        for view in ("transcribe", "speech", "chat", "models", "activity"):
            w.page.goto(f"{web_server.url}/#{view}")
            w.page.wait_for_load_state("networkidle")
            width = w.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 392, (view, width)  # nothing wider than the phone: tables scroll inside their box
            assert not w.page.locator("#error").is_visible()  # no error, no (empty) banner
        bg = w.page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(18, 19, 23)"  # the dark palette
        w.page.goto(f"{web_server.url}/#transcribe")
        w.page.wait_for_selector("#stt-model option", state="attached")
        shot(w.page, "phone-dark")
        assert w.blocked == [] and w.errors == []
    finally:
        w.ctx.close()


def test_keys_create_and_use(web, web_server):
    page = web.page
    page.click("nav a[data-view=keys]")
    page.wait_for_selector("#byok-provider option", state="attached")
    # the first key, a management key, turns authentication on: the page then needs it
    page.fill("#key-name", "admin")
    page.check("#key-mgmt")
    page.click("#key-create")
    page.wait_for_selector("#key-secret:not([hidden])")
    admin = page.locator("#key-secret-value").inner_text()
    assert httpx.get(web_server.url + "/api/v1/keys").status_code == 401
    page.click("#key-secret-use")
    wait_js(page, "document.querySelector('#auth-state').textContent.includes('management')")
    assert page.evaluate("sessionStorage.getItem('audiorouter.api_key')") == admin
    assert page.evaluate("localStorage.length") == 0
    # a regular key with a limit; then change the limit, disable, enable
    page.fill("#key-name", "app")
    page.fill("#key-limit", "2")
    page.click("#key-create")
    page.wait_for_selector("#key-secret:not([hidden])")
    app_key = page.locator("#key-secret-value").inner_text()
    row = page.locator("#keys-table tbody tr", has_text="app")
    row.wait_for()
    assert "$2.0000" in row.inner_text()
    page.once("dialog", lambda d: d.accept("5"))
    row.locator("button[data-act=limit]").click()
    wait_js(page, "document.querySelector('#keys-table').textContent.includes('$5.0000')")
    row.locator("button[data-act=disable]").click()
    wait_js(page, "[...document.querySelectorAll('#keys-table tbody tr')]"
                           ".some(r => r.textContent.includes('app') && r.textContent.includes('disabled'))")
    r = httpx.get(web_server.url + "/api/v1/key", headers={"Authorization": f"Bearer {app_key}"})
    assert r.status_code == 403
    row.locator("button[data-act=enable]").click()
    wait_js(page, "![...document.querySelectorAll('#keys-table tbody tr')]"
                           ".some(r => r.textContent.includes('app') && r.textContent.includes('disabled'))")
    # a provider key of our own, added and removed
    page.select_option("#byok-provider", "openai")
    page.fill("#byok-key", "sk-test-not-a-real-key-0123456789")
    page.click("#byok-form button[type=submit]")
    page.wait_for_selector("#byok-table tbody tr")
    assert "sk-test-not-a-real-key-0123456789" not in page.content()
    page.once("dialog", lambda d: d.accept())
    page.locator("#byok-table tbody tr button").first.click()
    wait_js(page, "document.querySelectorAll('#byok-table tbody tr').length === 0")
    shot(page, "keys", mask=[page.locator("#key-secret-value")])  # no secret in the README, even a test's
    # a throw-away key, deleted
    page.fill("#key-name", "temp")
    page.click("#key-create")
    page.locator("#keys-table tbody tr", has_text="temp").wait_for()
    page.once("dialog", lambda d: d.accept())
    page.locator("#keys-table tbody tr", has_text="temp").locator("button[data-act=delete]").click()
    page.locator("#keys-table tbody tr", has_text="temp").wait_for(state="detached")
    assert error_banner(page) == ""
    # use the new key: in the page (speech), and from outside
    page.fill("#api-key", app_key)
    page.click("#auth button[type=submit]")
    wait_js(page, "document.querySelector('#auth-state').textContent.includes('app')")
    page.click("nav a[data-view=speech]")
    page.wait_for_selector("#tts-voice option", state="attached")
    page.fill("#tts-text", "Spoken with the new key.")
    page.click("#tts-submit")
    wait_js(page, "document.querySelector('#tts-meta').textContent.includes('gen-')")
    gid = page.locator("#tts-meta dd").nth(5).inner_text()
    g = httpx.get(web_server.url + "/api/v1/generation", params={"id": gid},
                  headers={"Authorization": f"Bearer {app_key}"})
    assert g.status_code == 200 and g.json()["data"]["characters"] == len("Spoken with the new key.")
    # the keys page with a regular key: the API's refusal, in words
    page.click("nav a[data-view=keys]")
    wait_js(page, "!document.querySelector('#error').hidden")
    assert "management key" in error_banner(page)
    # and with no key at all: the page asks for one
    page.click("#auth-forget")
    page.click("nav a[data-view=activity]")
    wait_js(page, "!document.querySelector('#error').hidden")
    assert "401" in error_banner(page) and "API key" in error_banner(page)


def test_nothing_left_127_0_0_1_and_no_errors(web):
    assert web.blocked == [], web.blocked
    # the 401/403 answers the last test provoked on purpose are logged by the browser as failed loads, and so is
    # the audio chat test's refused voice (a 400)
    # Redoc 3 always shows its vendor's logo from its CDN, with no option to turn that off: the docs pages' CSP
    # refuses it (so nothing leaves), and the browser logs the refusal.
    unexpected = [e for e in web.errors if "status of 401" not in e and "status of 403" not in e
                  and not ("status of 400" in e and e.endswith("/api/v1/chat/completions"))
                  and not ("cdn.redoc.ly/redoc/logo" in e and "violates the following Content Security Policy" in e)]
    assert unexpected == [], unexpected
