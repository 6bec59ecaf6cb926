"""From the recorded runs to the table's rows."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from bench.measure import first_text_delay, mean, percentile, visible_lags
from bench.scenarios import Run
from tests.fakes.anthropic import output_tokens
from tests.fakes.slack import Call

# The first visible sign of an answer: its placeholder, its stream, or the thread's loading status.
FIRST_SIGN_METHODS = ("chat.postMessage", "chat.startStream", "assistant.threads.setStatus")


@dataclass
class Row:
    scenario: str
    approach: str
    lag_mean: float
    lag_p95: float
    bound: float
    calls_per_answer: float
    rate_limited: int
    inexact: int
    answers: int
    unseen: int
    ack_p50: float | None
    ack_p99: float | None
    sender_ack_p99: float | None
    first_sign_p50: float
    first_sign_p99: float
    first_words_p50: float
    first_words_p99: float
    first_text_p50: float
    first_text_p95: float
    cpu_ms_per_1k_tokens: float | None
    kb_per_answer: float | None
    loop_lag_p99: float | None
    cut_off: bool

    @property
    def ratio(self) -> float:
        return self.lag_mean / self.bound if self.bound else math.nan


def lower_bound(answers_per_workspace: int, *, interval: float, edits_per_minute: int) -> float:
    """Mean lag if each message's edits were evenly spaced at the best interval the budget allows it."""
    spacing = max(interval, 60.0 * answers_per_workspace / edits_per_minute)
    return spacing / 2


def calls_by_channel(calls: list[Call]) -> dict[str, list[Call]]:
    by_channel = defaultdict(list)
    for call in calls:
        channel = call.params.get("channel") or call.params.get("channel_id")
        if channel:
            by_channel[channel].append(call)
    return by_channel


def summarize(run: Run, calls: dict[str, list[Call]], *, interval: float, edits_per_minute: int) -> Row:
    lags, unseen = [], 0
    for trace in run.traces:
        answer_lags, answer_unseen = visible_lags(trace, give_up_at=run.ended_at)
        lags.extend(answer_lags)
        unseen += answer_unseen
    own_calls = [call for channel in run.channels.values() for call in calls.get(channel, [])]
    first_sign_waits = []
    for answer_id, channel in run.channels.items():
        shown = next((c.at for c in calls.get(channel, []) if c.method in FIRST_SIGN_METHODS and c.status == 200), None)
        if answer_id in run.sent_at:  # never shown: waited until the end
            first_sign_waits.append((shown if shown is not None else run.ended_at) - run.sent_at[answer_id])
    first_words_waits = []
    for trace in run.traces:
        shown = next((at for at, length in sorted(trace.shown) if length > 0), run.ended_at)
        if trace.answer_id in run.sent_at:
            first_words_waits.append(shown - run.sent_at[trace.answer_id])
    first_texts = [d for d in (first_text_delay(trace) for trace in run.traces) if d is not None]
    tokens = sum(output_tokens(trace.expected) for trace in run.traces)
    answers = len(run.traces)
    return Row(
        scenario=run.scenario.name,
        approach=run.approach,
        lag_mean=mean(lags),
        lag_p95=percentile(lags, 95),
        bound=lower_bound(run.scenario.per_workspace, interval=interval, edits_per_minute=edits_per_minute),
        calls_per_answer=len(own_calls) / answers,
        rate_limited=sum(1 for call in own_calls if call.status == 429),
        inexact=sum(1 for trace in run.traces if trace.final_text != trace.expected),
        answers=answers,
        unseen=unseen,
        ack_p50=percentile(run.handled, 50) if run.handled else None,
        ack_p99=percentile(run.handled, 99) if run.handled else None,
        sender_ack_p99=percentile(run.acks, 99) if run.acks else None,
        first_sign_p50=percentile(first_sign_waits, 50),
        first_sign_p99=percentile(first_sign_waits, 99),
        first_words_p50=percentile(first_words_waits, 50),
        first_words_p99=percentile(first_words_waits, 99),
        first_text_p50=percentile(first_texts, 50),
        first_text_p95=percentile(first_texts, 95),
        cpu_ms_per_1k_tokens=run.cpu_seconds * 1000 / tokens * 1000 if run.cpu_seconds is not None else None,
        kb_per_answer=run.rss_growth / 1024 / answers if run.rss_growth is not None else None,
        loop_lag_p99=percentile(run.loop_lags, 99) if run.loop_lags else None,
        cut_off=run.cut_off,
    )


def _s(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value * 1000:.0f}"


HEADER = (
    "| answers | approach | lag mean s | lag p95 s | bound s | ratio | calls/answer | 429s | inexact | "
    "ack p50/p99 ms (sender's p99) | mention→first sign p50/p99 ms | mention→first words p50/p99 ms | "
    "first token→text p50/p95 ms | CPU ms/1k tok | "
    "KB/answer | loop lag p99 ms |"
)


def markdown_table(rows: list[Row]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in rows:
        inexact = f"{r.inexact}/{r.answers}" + (" (cut off)" if r.cut_off else "")
        ack = f"{_ms(r.ack_p50)}/{_ms(r.ack_p99)} ({_ms(r.sender_ack_p99)})" if r.ack_p50 is not None else "–"
        lines.append(
            f"| {r.scenario} | {r.approach} | {_s(r.lag_mean)} | {_s(r.lag_p95)} | {_s(r.bound)} | {_s(r.ratio)} | "
            f"{_s(r.calls_per_answer, 1)} | {r.rate_limited} | {inexact} | "
            f"{ack} | "
            f"{_ms(r.first_sign_p50)}/{_ms(r.first_sign_p99)} | {_ms(r.first_words_p50)}/{_ms(r.first_words_p99)} | "
            f"{_ms(r.first_text_p50)}/{_ms(r.first_text_p95)} | {_s(r.cpu_ms_per_1k_tokens, 0)} | "
            f"{_s(r.kb_per_answer, 0)} | {_ms(r.loop_lag_p99)} |"
        )
    return "\n".join(lines)
