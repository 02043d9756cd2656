"""JSON round trips of every metric type and the validation boundary."""

from __future__ import annotations

import json

import pytest

from callmeter import InvalidMetricsError, metrics
from callmeter.metrics import (
    CachedTokenDetails,
    EOUMetrics,
    InputTokenDetails,
    LLMMetrics,
    Metadata,
    OutputTokenDetails,
    RealtimeModelMetrics,
    STTMetrics,
    ToolMetrics,
    TTSMetrics,
    VADMetrics,
)

T0 = 1_790_000_000.0
MD = Metadata(model_name="gpt-4o-mini", model_provider="openai")

SAMPLES = [
    LLMMetrics(
        timestamp=T0 + 1,
        started_at=T0,
        duration=0.75,
        label="openai.LLM",
        request_id="chatcmpl-1",
        ttft=0.25,
        completion_tokens=30,
        prompt_tokens=100,
        prompt_cached_tokens=64,
        total_tokens=130,
        tokens_per_second=60.0,
        speech_id="speech_1",
        metadata=MD,
    ),
    LLMMetrics(
        timestamp=T0,
        started_at=T0,
        duration=0.1,
        cancelled=True,
        usage_reported=False,
        error="APITimeoutError",
    ),
    ToolMetrics(
        timestamp=T0 + 2,
        started_at=T0 + 1.5,
        duration=0.4,
        tool_name="get_weather",
        call_id="call_1",
        success=False,
        error="KeyError",
        speech_id="speech_1",
    ),
    STTMetrics(
        timestamp=T0,
        started_at=T0 - 1,
        duration=0.3,
        audio_duration=2.5,
        ttfb=0.1,
        streamed=True,
        metadata=Metadata(model_name="nova-3", model_provider="deepgram"),
    ),
    TTSMetrics(
        timestamp=T0,
        started_at=T0 - 1,
        duration=0.9,
        ttfb=0.2,
        audio_duration=3.1,
        characters_count=57,
        segment_id="seg",
        speech_id="speech_2",
    ),
    VADMetrics(timestamp=T0, idle_time=0.5, inference_duration_total=0.02, inference_count=31),
    EOUMetrics(
        timestamp=T0,
        started_at=T0 - 0.6,
        end_of_utterance_delay=0.6,
        transcription_delay=0.2,
        on_user_turn_completed_delay=0.01,
        speech_id="speech_2",
    ),
    RealtimeModelMetrics(
        timestamp=T0,
        started_at=T0 - 2,
        duration=2.0,
        request_id="resp_1",
        ttft=0.4,
        input_tokens=500,
        output_tokens=200,
        total_tokens=700,
        input_token_details=InputTokenDetails(
            audio_tokens=400,
            text_tokens=100,
            cached_tokens=50,
            cached_tokens_details=CachedTokenDetails(audio_tokens=50),
        ),
        output_token_details=OutputTokenDetails(audio_tokens=150, text_tokens=50),
    ),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_type_round_trips(sample):
    data = metrics.encode(sample)
    assert json.loads(data)["type"] == sample.type
    back = metrics.decode(data)
    assert type(back) is type(sample)
    assert back == sample
    assert metrics.from_dict(metrics.to_dict(sample)) == sample


def test_mixed_list_round_trips_exactly():
    data = metrics.encode(SAMPLES)
    back = metrics.decode_list(data)
    assert back == SAMPLES
    assert [type(m) for m in back] == [type(m) for m in SAMPLES]


def test_type_tags_match_livekit_names():
    assert [m.type for m in SAMPLES[:1]] == ["llm_metrics"]
    assert ToolMetrics.type == "tool_metrics"
    assert RealtimeModelMetrics.type == "realtime_model_metrics"


def _bad(**change):
    event = json.loads(metrics.encode(SAMPLES[0]))
    event.update(change)
    return json.dumps(event, separators=(",", ":"))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (_bad(type="llm_metricz"), "$.type"),
        (_bad(duration=-0.1), "$.duration"),
        (_bad(prompt_tokens=-3), "$.prompt_tokens"),
        (_bad(completion_tokens=1.5), "$.completion_tokens"),
        (_bad(ttft=-2), "$.ttft"),
        (_bad(duration=None), "$.duration"),
        (_bad().replace('"duration":0.75', '"duration":1e999'), "$.duration"),
        (_bad(started_at="yesterday"), "$.started_at"),
    ],
)
def test_bad_input_raises_typed_error_naming_the_field(payload, field):
    with pytest.raises(InvalidMetricsError) as info:
        metrics.decode(payload)
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_required_field_is_named():
    event = json.loads(metrics.encode(SAMPLES[2]))
    del event["tool_name"]
    with pytest.raises(InvalidMetricsError) as info:
        metrics.decode(json.dumps(event))
    assert info.value.field == "$.tool_name"
    assert "tool_name" in str(info.value)


def test_missing_type_tag_is_rejected():
    event = json.loads(metrics.encode(SAMPLES[0]))
    del event["type"]
    with pytest.raises(InvalidMetricsError, match="type"):
        metrics.decode(json.dumps(event))


def test_nan_and_infinity_rejected():
    with pytest.raises(InvalidMetricsError, match="malformed"):
        metrics.decode(_bad().replace('"duration":0.75', '"duration":NaN'))
    with pytest.raises(InvalidMetricsError, match="malformed"):
        metrics.decode(_bad().replace('"duration":0.75', '"duration":Infinity'))
    event = json.loads(_bad())
    event["duration"] = float("nan")
    with pytest.raises(InvalidMetricsError) as info:
        metrics.from_dict(event)
    assert info.value.field == "$.duration"
    event["duration"] = float("inf")
    with pytest.raises(InvalidMetricsError) as info:
        metrics.from_dict(event)
    assert info.value.field == "$.duration"


def test_error_in_list_names_the_index():
    data = json.loads(metrics.encode(SAMPLES))
    data[3]["audio_duration"] = -1
    with pytest.raises(InvalidMetricsError) as info:
        metrics.decode_list(json.dumps(data))
    assert info.value.field == "$[3].audio_duration"


def test_not_json_at_all():
    with pytest.raises(InvalidMetricsError, match="invalid metrics JSON"):
        metrics.decode(b"{not json")


def test_tokens_per_second_definitions():
    m = SAMPLES[0]
    assert m.tokens_per_second == 60.0
    assert m.tokens_per_second_overall == pytest.approx(30 / 0.75)
