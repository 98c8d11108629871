"""The official `ollama` Python client, pointed at the proxy with a bearer key, against the fake Ollama.

Proves wire compatibility of what the proxy forwards: chat (streaming and not), generate and list.
Binaries come from OLLAMA_PROXY_BIN and FAKE_OLLAMA_BIN (defaults: target/debug).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import ollama
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROXY_BIN = os.environ.get("OLLAMA_PROXY_BIN", str(ROOT / "target/debug/ollama-proxy"))
FAKE_BIN = os.environ.get("FAKE_OLLAMA_BIN", str(ROOT / "target/debug/fake-ollama"))
KEY = "python-client-key-0123456789"
MODEL = "qwen2.5:0.5b"


def _wait_for_line(process, predicate, what):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} exited before it was ready")
        if predicate(line):
            return line
    raise RuntimeError(f"{what} not ready in time")


@pytest.fixture(scope="module")
def proxy_url():
    fake = subprocess.Popen(
        [FAKE_BIN, "--chunk-delay-ms", "20"], stdout=subprocess.PIPE, text=True
    )
    proxy = None
    try:
        fake_addr = _wait_for_line(fake, lambda l: l.startswith("listening on "), "fake").split()[-1]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "OLLAMA_UPSTREAM": f"http://{fake_addr}",
            "PROXY_API_KEYS": KEY,
            "PORT": "0",
            "PROXY_BIND": "127.0.0.1",
        }
        proxy = subprocess.Popen([PROXY_BIN], stdout=subprocess.PIPE, env=env, text=True)
        line = _wait_for_line(proxy, lambda l: '"listening"' in l, "proxy")
        yield f"http://{json.loads(line)['addr']}"
    finally:
        for process in (proxy, fake):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


@pytest.fixture()
def client(proxy_url):
    return ollama.Client(host=proxy_url, headers={"Authorization": f"Bearer {KEY}"})


def test_list_shows_the_model(client):
    names = [m.model for m in client.list().models]
    assert MODEL in names


def test_chat_without_streaming(client):
    response = client.chat(model=MODEL, messages=[{"role": "user", "content": "Will it rain?"}], stream=False)
    assert response.message.role == "assistant"
    assert response.message.content == "The spirits say yes."
    assert response.done


def test_chat_streaming_yields_each_chunk(client):
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert len(parts) == 6
    assert "".join(p.message.content for p in parts) == "The spirits say yes."
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_generate_with_and_without_streaming(client):
    whole = client.generate(model=MODEL, prompt="hi", stream=False)
    assert whole.response == "The spirits say yes."
    parts = list(client.generate(model=MODEL, prompt="hi", stream=True))
    assert "".join(p.response for p in parts) == "The spirits say yes."


def test_without_the_key_the_client_gets_401(proxy_url):
    with pytest.raises(ollama.ResponseError) as error:
        ollama.Client(host=proxy_url).list()
    assert error.value.status_code == 401


def test_model_management_is_refused(client):
    with pytest.raises(ollama.ResponseError) as error:
        client.pull(MODEL)
    assert error.value.status_code == 403
