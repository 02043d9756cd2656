"""What the simulator says and how slowly: configuration, scripted replies and rules.

Pure Python (no server library): the server in :mod:`callmeter.sim.server` asks
:meth:`SimConfig.choose` for a :class:`Plan` per request and plays it back.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError

SIM_NAME = "callmeter-sim"
"""Name the simulator uses for itself (``system_fingerprint``, headers, banner)."""

_TOKEN_RE = re.compile(r"\s*\S+")
_FILLER_TEXT = (
    "This reply comes from callmeter-sim, a local simulator of the OpenAI API; "
    "no language model wrote it."
)
_FILLER = _FILLER_TEXT.split(" ")


def tokenize(text: str) -> list[str]:
    """The simulator's tokenizer: each word with its leading whitespace is one token."""
    return _TOKEN_RE.findall(text)


def filler_text(tokens: int) -> str:
    """An honest placeholder reply of exactly ``tokens`` tokens."""
    words = [_FILLER[i % len(_FILLER)] for i in range(tokens)]
    return " ".join(words)


@dataclass(slots=True)
class ToolCallSpec:
    """A tool call the simulated model requests. ``arguments`` is a dict (sent as JSON) or
    a raw string (sent verbatim, e.g. to simulate invalid JSON)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    """One simulated reply.

    ``text`` is the answer; with neither ``text`` nor ``tool_calls`` the reply is
    ``tokens`` tokens of placeholder text (default: :attr:`SimConfig.tokens`).
    ``ttft``/``token_delay`` override the config for this reply. ``usage=False`` leaves
    the usage block out. ``status`` answers with that HTTP error instead (e.g. 500, 429).
    """

    text: str | None = None
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    tokens: int | None = None
    ttft: float | None = None
    token_delay: float | None = None
    usage: bool = True
    status: int | None = None
    error_message: str | None = None
    fail_after: int | None = None
    """Stream only: after this many text tokens, send an error event and stop."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        """Build a reply from JSON-like data (``tool_calls`` as ``{"name", "arguments"}``)."""
        if not isinstance(data, dict):
            raise InvalidArgumentError(f"a reply must be a JSON object, got {data!r}")
        data = dict(data)
        calls = data.pop("tool_calls", None) or []
        try:
            return cls(**data, tool_calls=[ToolCallSpec(**c) for c in calls])
        except TypeError as exc:
            raise InvalidArgumentError(f"invalid reply {data!r}: {exc}") from None


@dataclass(slots=True)
class Rule:
    """Reply with ``reply`` when the regular expression ``match`` is found
    (case-insensitively) in the last user message. Named groups fill ``{name}``
    placeholders in the reply's text and in string tool-call arguments."""

    match: str
    reply: Reply
    _re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self._re = re.compile(self.match, re.IGNORECASE)
        except re.error as exc:
            raise InvalidArgumentError(f"invalid rule pattern {self.match!r}: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        """Build a rule from ``{"match": ..., "reply": {...}}``."""
        if not isinstance(data, dict) or "match" not in data or "reply" not in data:
            raise InvalidArgumentError(
                f'a rule must be an object with "match" and "reply", got {data!r}'
            )
        return cls(match=data["match"], reply=Reply.from_dict(data["reply"]))


@dataclass(slots=True)
class Plan:
    """What to send for one request: pieces of text or tool calls, timing and usage."""

    text_tokens: list[str]
    tool_calls: list[tuple[str, str, list[str]]]
    """(call id, name, argument pieces) per tool call."""
    delays: list[float]
    """Seconds from the request to each token; the last entry is the end of the reply."""
    prompt_tokens: int
    cached_tokens: int
    usage: bool
    status: int | None = None
    error_message: str | None = None
    fail_after: int | None = None

    @property
    def completion_tokens(self) -> int:
        """Tokens in the reply (each tool call's name counts as one)."""
        return len(self.text_tokens) + sum(1 + len(p) for _, _, p in self.tool_calls)


@dataclass
class SimConfig:
    """Latency and behaviour of the simulator.

    A request is answered by the next :attr:`script` reply if any (consumed in order),
    else by the first :attr:`rules` match on the last user message, else, right after tool
    results, by a text quoting them, else by :attr:`tokens` tokens of placeholder text.
    The first token comes ``ttft`` seconds after the request, then one token every
    ``token_delay`` seconds; the reply ends one ``token_delay`` after the last token.
    ``jitter`` adds uniform noise of up to that many seconds to each delay, drawn from a
    generator seeded with ``seed`` and the request number (reproducible).
    """

    ttft: float = 0.25
    token_delay: float = 0.01
    jitter: float = 0.0
    seed: int = 0
    tokens: int = 30
    rules: list[Rule] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)
    max_logged_requests: int = 1000

    def __post_init__(self) -> None:
        for name in ("ttft", "token_delay", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise InvalidArgumentError(f"{name} must be a number >= 0 seconds, got {value!r}")
        if not isinstance(self.tokens, int) or self.tokens < 1:
            raise InvalidArgumentError(f"tokens must be a positive int, got {self.tokens!r}")
        self.script = deque(self.script)
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.max_logged_requests)
        """Bodies of the requests received, newest last (for inspection in tests)."""
        self._lock = threading.Lock()
        self._count = 0
        self._prefixes: OrderedDict[bytes, None] = OrderedDict()

    def add_rule(self, match: str, reply: Reply) -> None:
        """Append a rule."""
        self.rules.append(Rule(match, reply))

    @classmethod
    def from_json(cls, data: dict[str, Any], **overrides: Any) -> SimConfig:
        """Build a config from a JSON object: latency fields, ``rules`` and ``script``."""
        if not isinstance(data, dict):
            raise InvalidArgumentError("the simulator config must be a JSON object")
        data = dict(data)
        rules = [Rule.from_dict(r) for r in data.pop("rules", [])]
        script = [Reply.from_dict(r) for r in data.pop("script", [])]
        known = {"ttft", "token_delay", "jitter", "seed", "tokens"}
        unknown = set(data) - known
        if unknown:
            raise InvalidArgumentError(
                f"unknown simulator config keys {sorted(unknown)}; known: {sorted(known)}, "
                "rules, script"
            )
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data, rules=rules, script=deque(script))

    # planning ---------------------------------------------------------------------------

    def choose(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> Plan:
        """Plan the reply to one request (``messages`` normalized to chat form)."""
        with self._lock:
            self.requests.append(body)
            self._count += 1
            rng = random.Random(self.seed * 1_000_003 + self._count)
            reply = self.script.popleft() if self.script else None
            prompt, cached = self._prompt_tokens(messages)
        groups: dict[str, str] = {}
        if reply is None:
            reply, groups = self._match(messages)
        text_tokens: list[str] = []
        calls: list[tuple[str, str, list[str]]] = []
        for spec in reply.tool_calls:
            args = spec.arguments
            if isinstance(args, dict):
                args = json.dumps({k: _fill(v, groups) for k, v in args.items()})
            calls.append((f"call_{rng.getrandbits(48):012x}", spec.name, tokenize(args) or [""]))
        if reply.text is not None:
            text_tokens = tokenize(_fill(reply.text, groups))
        elif not calls:
            text_tokens = tokenize(filler_text(reply.tokens or self.tokens))
        ttft = self.ttft if reply.ttft is None else reply.ttft
        step = self.token_delay if reply.token_delay is None else reply.token_delay
        n = len(text_tokens) + sum(1 + len(p) for _, _, p in calls)
        delays = []
        t = 0.0
        for i in range(n + 1):
            t += (ttft if i == 0 else step) + (rng.uniform(0, self.jitter) if self.jitter else 0)
            delays.append(t)
        return Plan(
            text_tokens=text_tokens,
            tool_calls=calls,
            delays=delays,
            prompt_tokens=prompt,
            cached_tokens=cached,
            usage=reply.usage,
            status=reply.status,
            error_message=reply.error_message,
            fail_after=reply.fail_after,
        )

    def _match(self, messages: list[dict[str, Any]]) -> tuple[Reply, dict[str, str]]:
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            results = []
            for m in reversed(messages):
                if m.get("role") != "tool":
                    break
                results.append(_content_text(m.get("content"))[:300])
            joined = "; ".join(reversed(results))
            return Reply(text=f"(simulated answer) The tools returned: {joined}"), {}
        user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = _content_text(user.get("content"))
        for rule in self.rules:
            found = rule._re.search(text)
            if found:
                return rule.reply, {k: v for k, v in found.groupdict().items() if v is not None}
        return Reply(), {}

    def _prompt_tokens(self, messages: list[dict[str, Any]]) -> tuple[int, int]:
        """Prompt tokens (words plus 3 per message) and how many of them a previous
        request already sent as the same leading messages (simulated prefix cache)."""
        total = cached = 0
        digest = hashlib.blake2b(digest_size=16)
        for i, m in enumerate(messages):
            total += 3 + len(tokenize(_content_text(m.get("content"))))
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                total += 1 + len(tokenize(str(fn.get("arguments", ""))))
            digest.update(json.dumps(m, sort_keys=True, default=str).encode())
            key = digest.copy().digest()
            if i < len(messages) - 1 and key in self._prefixes:
                cached = total
                self._prefixes.move_to_end(key)
            else:
                self._prefixes[key] = None
        while len(self._prefixes) > 4096:
            self._prefixes.popitem(last=False)
        return total, cached


def _fill(value: Any, groups: dict[str, str]) -> Any:
    if isinstance(value, str) and groups:
        try:
            return value.format(**groups)
        except (KeyError, IndexError, ValueError):
            return value
    return value


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                parts.append(str(part.get("text") or part.get("output") or ""))
            else:
                parts.append(str(part))
        return " ".join(parts)
    return str(content)


def responses_to_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Normalize a Responses API request's ``instructions`` and ``input`` to chat messages."""
    out: list[dict[str, Any]] = []
    if body.get("instructions"):
        out.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        out.append({"role": "user", "content": items})
        return out
    for item in items or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "function_call_output":
            out.append({"role": "tool", "content": item.get("output")})
        elif kind == "function_call":
            out.append(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"function": {"name": item.get("name"), "arguments": item.get("arguments")}}
                    ],
                }
            )
        elif "role" in item:
            out.append({"role": item["role"], "content": item.get("content")})
    return out
