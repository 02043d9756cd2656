"""callmeter-sim over HTTP: honesty markers, raw wire format, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import openai
import pytest


def _get(url: str) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, dict(resp.headers), resp.read()


def _post(url: str, body: object) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_says_it_is_a_simulator(sim):
    status, headers, body = _get(sim.base_url.removesuffix("/v1") + "/")
    assert status == 200 and b"SIMULATED" in body
    assert headers["x-callmeter-simulator"] == "1"
    sim.config.ttft = sim.config.token_delay = 0.0
    client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-x", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-callmeter-simulator"] == "1"
    completion = raw.parse()
    assert completion.system_fingerprint == "callmeter-sim"
    assert completion.model == "callmeter-sim:gpt-x"
    assert client.models.list().data[0].id == "callmeter-sim"


def test_sse_wire_format(sim):
    sim.config.ttft = sim.config.token_delay = 0.0
    sim.config.tokens = 3
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, headers, raw = _post(sim.base_url + "/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == [
        "This",
        " reply",
        " comes",
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_bad_request_body(sim):
    status, _, _ = _post(sim.base_url + "/chat/completions", ["not", "an", "object"])
    assert status == 400
    status, _, _ = _post(sim.base_url + "/chat/completions", {"model": "m"})
    assert status == 400


def test_cli_serves_and_prints_banner():
    proc = subprocess.Popen(
        [sys.executable, "-m", "callmeter", "sim", "--port", "0", "--ttft", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "SIMULATED OpenAI-compatible server" in line
        base_url = line.split(" at ")[1].strip()
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert "simulator" in reply.choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("content", ["{not json", '{"latency": 1}'])
def test_cli_rejects_bad_config(tmp_path, content):
    path = tmp_path / "sim.json"
    path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "callmeter", "sim", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "invalid --config" in done.stderr
