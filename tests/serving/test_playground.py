"""The playground page at `/` of the REST port, driven in headless Chromium (Debian's `chromium`)
through the DevTools protocol over `--remote-debugging-pipe` (no websocket client needed): load the
page, see the model and version, type a prompt and parameters, click Generate, watch the pieces
stream in, read the DOM and check a screenshot."""

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import threading
import time
import zlib

import pytest

from tfllm.export import signatures as sig
from tfllm.serving.server.errors import ServingError
from tfllm.serving.server.rest import RestServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1100, 760
PIECES = ["Once", " upon", " a", " time", " there", " was", " a", " tiny", " model", "."]


class StreamingCore:
    """Streams PIECES a few tens of milliseconds apart and remembers what it was asked."""

    def __init__(self):
        self.requests = []

    def model_names(self):
        return ["tiny"]

    def status(self, model_name, version=None, version_label=None):
        from tensorflow_serving.apis import get_model_status_pb2

        if model_name != "tiny":
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({model_name})")
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(version=7, state="AVAILABLE").status.SetInParent()
        return response

    def stream_generate(self, model_name, text, params, version=None, version_label=None):
        self.status(model_name)
        self.requests.append((model_name, text, params))
        for piece in PIECES:
            time.sleep(0.04)
            yield piece


class DevTools:
    """A Chromium started with `--remote-debugging-pipe`: JSON messages ending in NUL on fds 3 and 4."""

    def __init__(self, user_data_dir):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def child_fds():  # move the pipe ends to 3 and 4 (through high numbers, so none clobbers another)
            high_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 100)
            high_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 100)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--remote-debugging-pipe", f"--user-data-dir={user_data_dir}", f"--window-size={WIDTH},{HEIGHT}",
                   "--no-first-run", "--no-default-browser-check", "about:blank"]
        self.process = subprocess.Popen(command, pass_fds=(3, 4), preexec_fn=child_fds,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer, self._next_id, self.events = b"", 0, []
        self.session = None

    def send(self, method, timeout=30, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _read(self, deadline):
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.process.stderr.read().decode(errors='replace')[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open_page(self, url):
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition, timeout=30):
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({condition})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {condition}")
            time.sleep(0.05)

    def screenshot(self):
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._to_browser)
        os.close(self._from_browser)


def png_pixels(data):
    """`(width, height, raw scanlines)` of a PNG, checking its chunks' CRCs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        assert struct.unpack(">I", data[position + 8 + length:position + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.setdefault(kind, []).append(body)
        position += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    assert depth == 8 and color in (2, 6)
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    assert len(raw) == height * (1 + width * (3 if color == 2 else 4))
    return width, height, raw


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    devtools = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    watchdog = threading.Timer(240, devtools.process.kill)  # a hung browser must not hang the run
    watchdog.start()
    try:
        yield devtools
    finally:
        watchdog.cancel()
        devtools.close()


@pytest.fixture(scope="module")
def playground(browser):
    core = StreamingCore()
    rest = RestServer(core, "127.0.0.1", 0).start()
    try:
        browser.open_page(f"http://127.0.0.1:{rest.port}/")
        yield core, rest, browser
    finally:
        rest.stop()


def test_page_shows_the_model_and_version_served(playground):
    _, _, browser = playground
    browser.wait_for("document.getElementById('served').dataset.version === '7'")
    assert browser.evaluate("document.getElementById('served').textContent") == "tiny · version 7"
    assert browser.evaluate("[...document.querySelectorAll('#model option')].map(o => o.value)") == ["tiny"]
    assert browser.evaluate("document.title") == "tfllm playground"


def test_generate_streams_pieces_into_the_page(playground, tmp_path):
    core, _, browser = playground
    before = browser.screenshot()
    # Record the output's text each time it changes, to see the pieces arrive one by one.
    browser.evaluate("""
        window.seen = [];
        new MutationObserver(() => window.seen.push(document.querySelector('#output .completion')?.textContent ?? ''))
            .observe(document.getElementById('output'), {childList: true, subtree: true, characterData: true});
    """)
    browser.evaluate("""
        const set = (id, value) => { document.getElementById(id).value = value; };
        set('prompt', 'Tell me a story:'); set('max_new_tokens', '10'); set('temperature', '0.7');
        set('top_k', '40'); set('top_p', '0.9'); set('seed', '5');
        document.getElementById('do_sample').checked = true;
        document.getElementById('generate').click();
    """)
    browser.wait_for("document.getElementById('output').dataset.state === 'done'")
    completion = "".join(PIECES)
    assert browser.evaluate("document.querySelector('#output .completion').textContent") == completion
    assert browser.evaluate("document.querySelector('#output .prompt').textContent") == "Tell me a story:"
    assert browser.evaluate("document.getElementById('output').dataset.pieces") == str(len(PIECES))
    assert browser.evaluate("document.getElementById('output').dataset.generated") == "Tell me a story:" + completion
    assert browser.evaluate("document.getElementById('status').textContent").startswith(f"done · {len(PIECES)} pieces")
    seen = [text for text in browser.evaluate("window.seen") if text]
    assert len(set(seen)) >= 3 and all(completion.startswith(text) for text in seen)  # grew piece by piece
    assert core.requests[-1] == ("tiny", "Tell me a story:", {
        sig.MAX_NEW_TOKENS: 10, sig.TEMPERATURE: 0.7, sig.TOP_K: 40, sig.TOP_P: 0.9, sig.SEED: 5, sig.DO_SAMPLE: True})
    dom = browser.evaluate("document.documentElement.outerHTML")
    assert completion in dom and "tiny · version 7" in dom

    after = browser.screenshot()
    (tmp_path / "playground.png").write_bytes(after)
    width, height, raw = png_pixels(after)
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(set(raw)) > 50 and len(after) > 10_000  # text, buttons and colours, not a blank page
    assert png_pixels(before)[2] != raw  # the streamed text changed what is drawn


def test_an_error_is_shown_in_the_page(playground):
    _, _, browser = playground
    browser.evaluate("""
        document.getElementById('model').add(new Option('nope', 'nope'));
        document.getElementById('model').value = 'nope';
        document.getElementById('generate').click();
    """)
    browser.wait_for("document.getElementById('output').dataset.state === 'error'")
    status = browser.evaluate("document.getElementById('status').textContent")
    assert status.startswith("4") and "nope" in status
    assert browser.evaluate("document.getElementById('generate').disabled") is False


def test_playground_on_tfllm_serve_streams_the_models_greedy_text(browser, running_server):
    import urllib.request

    _, _, rest_port = running_server
    body = json.dumps({"text": "The river", "max_new_tokens": 5}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{rest_port}/generate", body), timeout=60) as answer:
        expected = json.loads(answer.read())[sig.GENERATED_TEXT]
    browser.open_page(f"http://127.0.0.1:{rest_port}/")
    browser.wait_for("document.getElementById('served').dataset.version === '1'")
    browser.evaluate("""
        document.getElementById('prompt').value = 'The river';
        document.getElementById('max_new_tokens').value = '5';
        document.getElementById('generate').click();
    """)
    browser.wait_for("document.getElementById('output').dataset.state === 'done'", timeout=60)
    assert browser.evaluate("document.getElementById('output').textContent") == expected
    assert browser.evaluate("document.getElementById('output').dataset.generated") == expected
    assert int(browser.evaluate("document.getElementById('output').dataset.pieces")) >= 2
