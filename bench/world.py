"""The benchmark's world: the test fakes, instrumented, and the answers they will stream.

Two small subclasses, so that nothing in tests/ changes:

- `TimedAnthropic` picks each request's script by the question it carries (requests arrive in any
  order) and records when every delta left the server.
- `BenchSlack` is the tests' FakeSlack, with its native streaming (chat.startStream/appendStream/stopStream)
  at the tiers REFERENCE.md gives.

In the many-workspace scenario the bot runs in OAuth mode and every workspace has installed it with a
token of its own, so Slack counts each workspace's calls separately, as it would.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from tests.fakes.anthropic import FakeAnthropic, Received, Script
from tests.fakes.slack import FakeSlack

_VOCABULARY = (  # noqa: SIM905  (a word list reads best as words)
    "the of and to a in is you that it for on with as this are be can your by or have from an not "
    "but all will if they which more when use one each about how there their then them these so "
    "some would other into has two like time make than first been its who now people my made over "
    "did down only way find use may water long little very after words called just where most know "
    "function value return request message answer budget limit server client stream token workspace"
).split()


def answer_text(answer_id: str, words: int) -> str:
    """Prose-like text of `words` words, different for every answer, the same on every run."""
    rng = random.Random(answer_id)
    out = [f"Answer {answer_id}."]
    for _ in range(words - 2):
        word = rng.choice(_VOCABULARY)
        out.append(word + ("." if rng.random() < 0.08 else ""))
        if rng.random() < 0.02:
            out.append("\n\n")
    return " ".join(out).replace(" \n\n ", "\n\n") + " End."


def script_for(text: str, *, words_per_second: float, delta_chars: int) -> Script:
    """Claude's pace: `words_per_second`, in deltas of about `delta_chars` characters."""
    words = len(text.split())
    deltas = max(1, round(len(text) / delta_chars))
    delay = words / words_per_second / deltas
    return Script(text=text, delta_chars=delta_chars, delay=delay)


class TimedReceived(Received):
    """A request record that notes the time whenever the fake has sent more text."""

    def __setattr__(self, name, value):
        if name == "text" and "emitted" in self.__dict__:
            self.emitted.append((time.monotonic(), len(value)))
        object.__setattr__(self, name, value)


class TimedAnthropic(FakeAnthropic):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, Script] = {}  # keyed by a marker the question contains
        self.by_marker: dict[str, Received] = {}

    def plan(self, marker: str, script: Script) -> None:
        self.scripts[marker] = script

    async def _stream(self, request, rec: Received, script: Script):
        marker = _marker_of(rec.body)
        script = self.scripts.get(marker, script)
        rec.script = script
        rec.__class__ = TimedReceived
        rec.emitted = []
        self.by_marker[marker] = rec
        return await super()._stream(request, rec, script)


def _marker_of(body: dict) -> str:
    """The answer id the question ends with ("... [a17]")."""
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(block.get("text", "") for block in content)
    start = text.rfind("[")
    return text[start + 1 : text.rfind("]")] if start >= 0 else ""


def question_for(answer_id: str) -> str:
    return f"tell me something [{answer_id}]"


class BenchSlack(FakeSlack):
    """FakeSlack as it is: Slack's limits, native streaming included (REFERENCE.md's tiers)."""


@dataclass
class Team:
    team_id: str
    token: str


def add_team(slack: FakeSlack, team_id: str) -> Team:
    token = f"xoxb-bench-{team_id}"
    slack.add_workspace(team_id, token, bot_user_id="UBOT")
    return Team(team_id, token)
