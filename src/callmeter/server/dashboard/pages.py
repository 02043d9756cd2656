"""The dashboard's HTML pages (server-rendered; every value escaped with ``html.escape``)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from ...report.style import seconds
from ...store.schema import COST_KINDS
from . import charts

KIND_LABELS = {"llm": "LLM", "stt": "STT", "tts": "TTS", "realtime": "realtime",
               "call": "call-level"}  # fmt: skip
KIND_COLORS = {"llm": "#e69138", "stt": "#8e7cc3", "tts": "#6aa84f", "realtime": "#c27ba0",
               "call": "#777777"}  # fmt: skip
SORTABLE = {"started": "Start", "duration": "Duration", "cost": "Cost", "e2e_p95": "e2e p95"}


def money(v: float | None, complete: bool = True) -> str:
    """USD for people; ``unknown`` when there is no price, ``+?`` when some is missing."""
    if v is None or (not v and not complete):
        return "unknown"
    s = f"${v:,.4f}" if abs(v) >= 0.01 or v == 0 else f"${v:.6f}"
    return s if complete else s + " +?"


def when(t: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _labels(labels: Mapping[str, str]) -> str:
    return " ".join(
        f'<span class="tag">{escape(k)}: {escape(str(v))}</span>' for k, v in labels.items()
    )


def call_level(call: Mapping[str, Any]) -> float:
    """Cost not attributed to a request kind (call-level charges)."""
    kinds = sum(v or 0.0 for v in call["cost_by_kind"].values())
    return max((call["cost"] or 0.0) - kinds, 0.0)


def layout(title: str, body: str, *, active: str, logout: bool) -> str:
    """The page around ``body``: header, navigation, main landmark."""
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == active else ""}>{name}</a>'
        for key, href, name in (("overview", "/", "Overview"), ("calls", "/calls", "Calls"),
                                ("live", "/live", "Live"))
    )  # fmt: skip
    out = (
        '<form method="post" action="/logout" class="logout"><button type="submit">'
        "Log out</button></form>"
        if logout
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · callmeter</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/dashboard.css"></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><span class="brand">callmeter</span><nav aria-label="Main">{nav}</nav>{out}'
        f'</header><main id="main" tabindex="-1"><h1>{escape(title)}</h1>{body}</main>'
        "</body></html>"
    )


def error_box(message: str) -> str:
    """A visible, announced error message."""
    return f'<p class="error" role="alert">{escape(message)}</p>'


def _select(name: str, label: str, options: Sequence[tuple[str, str]], value: str) -> str:
    opts = "".join(
        f'<option value="{escape(v)}"{" selected" if v == value else ""}>{escape(t)}</option>'
        for v, t in options
    )
    return (f'<label>{escape(label)} <select name="{name}" id="f-{name}">{opts}</select>'
            "</label>")  # fmt: skip


def _input(name: str, label: str, value: str, kind: str = "text", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return (f'<label>{escape(label)} <input type="{kind}" name="{name}" id="f-{name}" '
            f'value="{escape(value)}"{extra}></label>')  # fmt: skip


def _agent_options(agents: Sequence[str]) -> list[tuple[str, str]]:
    return [("", "all agents"), *((a, a) for a in agents)]


def _call_link(sid: str) -> str:
    return f'<a href="/calls/{quote(sid, safe="")}">{escape(sid)}</a>'


def _table(caption: str, head: Sequence[Any], rows: Sequence[Sequence[str]], cls: str) -> str:
    th = "".join(
        f'<th scope="col"{h[1]}>{h[0]}</th>'
        if isinstance(h, tuple)
        else f'<th scope="col">{h}</th>'
        for h in head  # a (html, attributes) pair or plain html
    )
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(head)}">none</td></tr>'
    return (f'<div class="scroll"><table class="{cls}"><caption>{escape(caption)}</caption>'
            f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>")  # fmt: skip


def _call_rows(calls: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [_call_link(c["session_id"]), escape(c["agent_name"] or "-"), _labels(c["labels"]),
         when(c["started_at"]), seconds(c["duration"]), str(c["turns"]),
         money(c["cost"], c["cost_complete"]), seconds(c["e2e_p95"]), str(c["errors"])]
        for c in calls
    ]  # fmt: skip


CALL_HEAD = ["Call", "Agent", "Labels", "Start (UTC)", "Duration", "Turns", "Cost", "e2e p95",
             "Errors"]  # fmt: skip


def overview(ctx: Mapping[str, Any]) -> str:
    """The overview page's body."""
    p = ctx["params"]
    form = (
        '<form method="get" action="/" class="filters" aria-label="Time range and agent">'
        + _select("range", "Time range", [("1h", "last hour"), ("1d", "last day"),
                                          ("7d", "last week"), ("custom", "custom")],
                  p.get("range", "1d"))
        + _input("since", "From (UTC)", p.get("since", ""), "datetime-local")
        + _input("until", "To (UTC)", p.get("until", ""), "datetime-local")
        + _select("agent", "Agent", _agent_options(ctx["agents"]), p.get("agent", ""))
        + '<button type="submit">Apply</button></form>'
    )  # fmt: skip
    if ctx.get("error"):
        return form + error_box(ctx["error"])
    xs, b = ctx["xs"], ctx["buckets"]
    span = f"{when(ctx['since'])} to {when(ctx['until'])} UTC, by {ctx['interval'] // 60} min"
    calls_chart = charts.line_chart(
        xs,
        [("calls started", "#3d85c6", [float(x["calls"]) for x in b]),
         ("active calls", "#e69138", [float(x["active_calls"]) for x in b])],
        label=f"calls started and active calls per bucket, {span}",
    )  # fmt: skip
    kinds = [*COST_KINDS, "call"]
    cost_chart = charts.stacked_bars(
        xs,
        [(KIND_LABELS[k], KIND_COLORS[k], [x["cost_by_kind"].get(k) or 0.0 for x in b])
         for k in kinds],
        label=f"cost in USD per bucket stacked by kind (LLM, STT, TTS, realtime, call-level), "
        f"{span}",
        fmt=lambda v: f"${v:.4g}",
    )  # fmt: skip
    lat_chart = charts.line_chart(
        xs,
        [("e2e p50", "#0b5394", [x["e2e_p50"] for x in b]),
         ("e2e p95", "#cc0000", [x["e2e_p95"] for x in b]),
         ("LLM TTFT p50", "#e69138", [x["ttft_p50"] for x in b]),
         ("TTS TTFB p50", "#6aa84f", ctx["tts_ttfb"])],
        label=f"latency in seconds: e2e p50 and p95, LLM TTFT p50, TTS TTFB p50, {span}",
        fmt=lambda v: f"{v:.2f} s",
    )  # fmt: skip
    err_chart = charts.line_chart(
        xs,
        [("tool error rate", "#cc0000",
          [None if x["tool_error_rate"] is None else 100 * x["tool_error_rate"] for x in b])],
        label=f"tool error rate in percent, {span}",
        fmt=lambda v: f"{v:.3g} %",
    )  # fmt: skip
    notes = []
    if ctx.get("sample_every", 1) > 1:
        notes.append(
            "e2e and TTFT percentiles from the calls that started in every "
            f"{ctx['sample_every']}th minute"
        )
    if ctx.get("ttfb_sample_every", 1) > 1:
        notes.append(
            f"TTS TTFB from the calls that started in every {ctx['ttfb_sample_every']}th minute"
        )
    sampled = f'<p class="muted">{escape("; ".join(notes))}.</p>' if notes else ""
    t = ctx["totals"]
    cards = "".join(
        f'<div class="card"><span>{k}</span><strong>{v}</strong></div>'
        for k, v in (("Calls", f"{t['calls']:,}"), ("Cost", money(t["cost"])),
                     ("Turns", f"{t['turns']:,}"), ("Errors", f"{t['errors']:,}"))
    )  # fmt: skip
    agents_t = _table(
        "By agent",
        ["Agent", "Calls", "Turns", "Cost", "Mean duration", "e2e p50", "e2e p95",
         "Tool errors", "Errors"],
        [[escape(r["agent"] or "-"), f"{r['calls']:,}", f"{r['turns']:,}", money(r["cost"]),
          seconds(r["mean_duration"]), seconds(r["e2e_p50"]), seconds(r["e2e_p95"]),
          f"{r['tool_errors']:,} / {r['tool_calls']:,}", f"{r['errors']:,}"]
         for r in ctx["by_agent"]],
        "by-agent",
    )  # fmt: skip
    model_total = sum(r["cost"] for r in ctx["by_model"])
    models_t = _table(
        "By model",
        ["Kind", "Provider / model", "Calls", "Calls without a price", "Cost",
         "Share of the cost"],
        [[escape(r["kind"]), escape(f"{r['provider']}/{r['model']}"), f"{r['calls']:,}",
          f"{r['unpriced']:,}", money(r["cost"], r["cost_complete"]),
          f"{100 * r['cost'] / model_total:.1f} %" if model_total else "-"]
         for r in ctx["by_model"]],
        "by-model",
    )  # fmt: skip
    return (
        form
        + f'<p class="muted">{escape(span)}</p><div class="cards">{cards}</div>'
        + '<div class="grid2">'
        + f"<figure><figcaption>Calls and active calls</figcaption>{calls_chart}</figure>"
        + f"<figure><figcaption>Cost by kind</figcaption>{cost_chart}</figure>"
        + f"<figure><figcaption>Latency</figcaption>{lat_chart}{sampled}</figure>"
        + f"<figure><figcaption>Tool error rate</figcaption>{err_chart}</figure></div>"
        + _table("Costliest calls", CALL_HEAD, _call_rows(ctx["costliest"]), "costliest")
        + _table("Slowest calls (e2e p95)", CALL_HEAD, _call_rows(ctx["slowest"]), "slowest")
        + agents_t
        + models_t
    )


def calls(ctx: Mapping[str, Any]) -> str:
    """The calls page's body: filters, sortable table, cursor pagination."""
    p: dict[str, str] = dict(ctx["params"])
    sort, order = p.get("sort", "started"), p.get("order", "desc")
    form = (
        '<form method="get" action="/calls" class="filters" aria-label="Filter calls">'
        + _select("agent", "Agent", _agent_options(ctx["agents"]), p.get("agent", ""))
        + _input("label", "Label (key:value)", p.get("label", ""), placeholder="tier:gold")
        + _input("since", "Started from (UTC)", p.get("since", ""), "datetime-local")
        + _input("until", "Started before (UTC)", p.get("until", ""), "datetime-local")
        + _input("min_cost", "Min cost (USD)", p.get("min_cost", ""), "number", step="any",
                 min="0")
        + _input("min_e2e_p95", "Min e2e p95 (s)", p.get("min_e2e_p95", ""), "number",
                 step="any", min="0")
        + _select("has_errors", "Errors", [("", "any"), ("true", "with errors"),
                                           ("false", "without errors")], p.get("has_errors", ""))
        + _select("sort", "Sort by", [(k, v) for k, v in SORTABLE.items()], sort)
        + _select("order", "Order", [("desc", "descending"), ("asc", "ascending")], order)
        + '<button type="submit">Apply</button> <a href="/calls">Clear</a></form>'
    )  # fmt: skip
    if ctx.get("error"):
        return form + error_box(ctx["error"])
    base = {k: v for k, v in p.items() if v and k != "cursor"}
    head: list[Any] = []
    for h in CALL_HEAD:
        key = next((k for k, v in SORTABLE.items() if h.startswith(v)), None)
        if key is None:
            head.append(h)
            continue
        new_order = "asc" if key == sort and order == "desc" else "desc"
        q = urlencode({**base, "sort": key, "order": new_order})
        link = f'<a href="/calls?{escape(q)}" data-sort="{key}">{h}'
        if key == sort:
            direction = "descending" if order == "desc" else "ascending"
            arrow = " ▼" if order == "desc" else " ▲"
            head.append((f"{link}{arrow}</a>", f' aria-sort="{direction}"'))
        else:
            head.append(f"{link}</a>")
    rows = _call_rows(ctx["calls"])
    table = _table(f"{len(rows)} call(s) on this page", head, rows, "calls")
    pager = []
    if p.get("cursor"):
        pager.append(f'<a href="/calls?{escape(urlencode(base))}" rel="first">First page</a>')
    if ctx["next_cursor"]:
        q = urlencode({**base, "cursor": ctx["next_cursor"]})
        pager.append(f'<a href="/calls?{escape(q)}" rel="next">Next page</a>')
    return form + table + f'<nav class="pager" aria-label="Pages">{" ".join(pager)}</nav>'


def call(detail: Mapping[str, Any]) -> str:
    """The call page's body: summary, cost, waterfall, tool calls, records."""
    c = detail["call"]
    sid = c["session_id"]
    facts = [
        ("Agent", escape(c["agent_name"] or "-")), ("Labels", _labels(c["labels"]) or "-"),
        ("Started (UTC)", when(c["started_at"])), ("Ended (UTC)", when(c["ended_at"])),
        ("Duration", seconds(c["duration"])), ("Status", "closed" if c["closed"] else "open"),
        ("Turns", f"{c['turns']} ({c['interrupted_turns']} interrupted)"),
        ("Cost", money(c["cost"], c["cost_complete"])),
        ("e2e p50 / p95", f"{seconds(c['e2e_p50'])} / {seconds(c['e2e_p95'])}"),
        ("LLM TTFT p50 / p95", f"{seconds(c['ttft_p50'])} / {seconds(c['ttft_p95'])}"),
        ("LLM", f"{c['llm']['requests']} request(s), {c['llm']['prompt_tokens']:,} prompt + "
                f"{c['llm']['completion_tokens']:,} completion tokens"),
        ("Tools", f"{c['tool']['calls']} call(s), {c['tool']['errors']} error(s), "
                  f"{seconds(c['tool']['duration'])}"),
        ("STT", f"{c['stt']['requests']} request(s), {seconds(c['stt']['audio_duration'])} audio"),
        ("TTS", f"{c['tts']['requests']} request(s), {c['tts']['characters']:,} characters"),
        ("Errors", str(c["errors"])), ("Records", str(c["records"])),
    ]  # fmt: skip
    if c["error"]:
        facts.append(("Call error", escape(c["error"])))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    kinds = {**{k: c["cost_by_kind"].get(k) for k in COST_KINDS}, "call": call_level(c)}
    cost_rows = [[KIND_LABELS[k], money(v)] for k, v in kinds.items()]
    total = sum(v or 0.0 for v in kinds.values())
    bar_note = '<p class="muted">No cost recorded for this call.</p>' if total <= 0 else ""
    total = total or 1.0
    bar = "".join(
        f'<rect x="{sum((kinds[j] or 0.0) for j in list(kinds)[:i]) / total * 600:.2f}" y="0" '
        f'width="{(v or 0.0) / total * 600:.2f}" height="16" fill="{KIND_COLORS[k]}">'
        f"<title>{KIND_LABELS[k]}: {money(v)}</title></rect>"
        for i, (k, v) in enumerate(kinds.items())
    )
    cost_svg = (f'<svg class="costbar" viewBox="0 0 600 16" role="img" '
                f'aria-label="cost by kind of {escape(sid)}">{bar}</svg>'
                + charts.legend([(KIND_LABELS[k], KIND_COLORS[k]) for k in kinds]))  # fmt: skip
    models = _table(
        "Cost by model",
        ["Kind", "Provider / model", "Requests", "Tokens in / out", "Characters", "Audio",
         "Errors", "Cost"],
        [[escape(m["kind"]), escape(f"{m['provider']}/{m['model']}"), str(m["requests"]),
          f"{m['prompt_tokens']:,} / {m['completion_tokens']:,}", f"{m['characters']:,}",
          seconds(m["audio_duration"]), str(m["errors"]), money(m["cost"])]
         for m in detail["models"]],
        "models",
    )  # fmt: skip
    tools = _table(
        "Tool calls",
        ["Tool", "Call id", "Started (UTC)", "Duration", "Result"],
        [[escape(str(t.get("tool_name", ""))), escape(str(t.get("call_id") or "-")),
          when(t.get("started_at")), seconds(t.get("duration")),
          "ok" if t.get("success", True) else
          f'<span class="bad">error: {escape(str(t.get("error") or "failed"))}</span>']
         for t in detail["tool_calls"]],
        "tools",
    )  # fmt: skip
    recs = detail["records"]
    shown = recs[:1000]
    items = "".join(
        f"<li><details><summary>#{int(r.get('seq', 0))} {escape(str(r.get('event', '')))}"
        f"{' ' + escape(str(r['metrics'].get('type', ''))) if isinstance(r.get('metrics'), dict) else ''}"  # noqa: E501
        f"</summary><pre>{escape(json.dumps(r, indent=1, ensure_ascii=False))}</pre>"
        "</details></li>"
        for r in shown
    )
    more = ""
    if len(shown) < c["records"]:
        more = f'<p class="muted">Showing {len(shown)} of {c["records"]} records: the JSON has more.</p>'  # noqa: E501
    json_href = f"/calls/{quote(sid, safe='')}?format=json"
    cost_svg = bar_note + cost_svg
    return (
        f'<p><a href="{json_href}" type="application/json">This call as JSON</a></p>'
        f'<dl class="facts">{dl}</dl>'
        f"<h2>Cost by component</h2>{cost_svg}"
        + _table("Cost by kind", ["Kind", "Cost"], cost_rows, "kinds")
        + models
        + f'<h2>Turn latency</h2><div class="scroll">{charts.waterfall(detail["turns"], sid)}</div>'
        + charts.waterfall_legend()
        + "<h2>Tool calls</h2>"
        + tools
        + f'<h2>Records</h2><details class="records"><summary>{len(recs)} record(s)</summary>'
        + f"{more}<ol>{items}</ol></details>"
    )


def live(calls_now: Sequence[Mapping[str, Any]]) -> str:
    """The live page's body; ``live.js`` keeps the table current over server-sent events."""
    rows = "".join(_live_row(c) for c in calls_now)
    return (
        '<p id="live-status" role="status" aria-live="polite">'
        f"{len(calls_now)} call(s) active now.</p>"
        '<div class="scroll"><table class="live"><caption>Calls active now (updates '
        'itself)</caption><thead><tr><th scope="col">Call</th><th scope="col">Agent</th>'
        '<th scope="col">Started (UTC)</th><th scope="col">Turns</th><th scope="col">Cost</th>'
        '<th scope="col">Last record (UTC)</th></tr></thead>'
        f'<tbody id="live-calls">{rows}</tbody></table></div>'
        '<script src="/static/live.js" defer></script>'
    )


def _live_row(c: Mapping[str, Any]) -> str:
    return (
        f'<tr data-session-id="{escape(c["session_id"])}"><td>{_call_link(c["session_id"])}</td>'
        f"<td>{escape(c['agent_name'] or '-')}</td><td>{when(c['started_at'])}</td>"
        f"<td>{c['turns']}</td><td>{money(c['cost'], c['cost_complete'])}</td>"
        f"<td>{when(c['last_record_at'])}</td></tr>"
    )


def live_event(calls_now: Sequence[Mapping[str, Any]]) -> str:
    """The JSON of one server-sent event: the active calls, formatted for display."""
    return json.dumps(
        [{"id": c["session_id"], "href": f"/calls/{quote(c['session_id'], safe='')}",
          "agent": c["agent_name"] or "-", "started": when(c["started_at"]),
          "turns": c["turns"], "cost": money(c["cost"], c["cost_complete"]),
          "last": when(c["last_record_at"])} for c in calls_now],
        separators=(",", ":"),
    )  # fmt: skip


def login(next_url: str, error: str | None = None) -> str:
    """The login form: one read token, kept in an HTTP-only cookie."""
    return (
        (error_box(error) if error else "") + '<form method="post" action="/login" class="login">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        '<label for="token">Read token</label> '
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        'required autofocus> <button type="submit">Log in</button></form>'
        '<p class="muted">A token with the read scope (TOKEN:TENANT:read in '
        "$CALLMETER_TOKENS). It is kept in a secure, HTTP-only cookie.</p>"
    )
