"""`python -m bench.sender PLAN`: Slack's side of a scenario, sending the mentions from a process of its own.

Slack sends its events from machines of its own. Sent from the benchmark's process, a mention would wait for the
fakes' event loop (busy answering hundreds of Claude streams and Slack calls) before it left and again before its
answer was read, and the ack times would be the fakes' as much as the bot's. PLAN is a JSON file: the signing
secret, and for each mention its delay from the start, the URL of its bot process, team, channel and question. The
sender prints, for each mention in order, when it was sent (time.monotonic: one clock for every process of the
machine, so the fakes' records compare with it) and how long the bot took to answer it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from slack_sdk.signature import SignatureVerifier

BOT_USER = "UBOT"


def signed_mention(
    signing_secret: str,
    team: str,
    channel: str,
    question: str,
    *,
    event_id: str,
    ts: str,
    user: str = "U0001",
    sent_in: float = 0.0,
) -> tuple[bytes, dict[str, str]]:
    """An `app_mention` event as Slack delivers it: the JSON body and its signed headers, stamped for when it will
    be sent (`sent_in` seconds from now: Bolt refuses a stamp five minutes old)."""
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {question}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": team,
    }
    body = json.dumps(
        {
            "token": "legacy",
            "team_id": team,
            "api_app_id": "A0001",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time() + sent_in),
            "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True, "enterprise_id": None}],
        }
    )
    stamp = str(int(time.time() + sent_in))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": SignatureVerifier(signing_secret).generate_signature(timestamp=stamp, body=body),
    }
    return body.encode(), headers


class KeepAlive:
    """HTTP/1.1 to the bot processes as a client that does nothing else would speak it: requests written whole,
    answers read by their length, connections kept open for the next request. (An HTTP client library's own work
    per request, on a machine whose CPUs the bot shares with everything, showed in the times it measured.)"""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    @staticmethod
    def request(url: str, body: bytes, headers: dict[str, str]) -> tuple[tuple[str, int], bytes]:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        return (parts.hostname, parts.port), ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def send(self, address: tuple[str, int], request: bytes) -> tuple[int, float]:
        """The answer's status, and when it was sent (time.monotonic)."""
        idle = self._idle.setdefault(address, [])
        sent_at = time.monotonic()  # a new connection's opening counts: the bot accepts it
        reader, writer = idle.pop() if idle else await asyncio.open_connection(*address)
        writer.write(request)
        status_line = await reader.readline()
        length, keep = 0, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                keep = False
        await reader.readexactly(length)
        if keep:
            idle.append((reader, writer))
        else:
            writer.close()
        return int(status_line.split()[1]), sent_at

    def close(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()


async def send_all(plan: dict) -> list[dict]:
    requests = []  # before the first is sent: signing is the sender's work, not the burst's
    for k, mention in enumerate(plan["mentions"], start=1):
        team, channel = mention["team"], mention["channel"]
        ts = f"{1_700_000_000 + k}.000100"
        body, headers = signed_mention(
            plan["signing_secret"],
            team,
            channel,
            mention["question"],
            event_id=f"Ev{team}{channel}",
            ts=ts,
            sent_in=mention["delay"],
        )
        requests.append(KeepAlive.request(mention["url"], body, headers))
    results: list[dict] = [{} for _ in plan["mentions"]]
    http = KeepAlive()
    started = time.monotonic()

    async def one(k: int, mention: dict) -> None:
        await asyncio.sleep(max(0.0, started + mention["delay"] - time.monotonic()))
        status, sent_at = await http.send(*requests[k])
        results[k] = {"sent_at": sent_at, "ack": time.monotonic() - sent_at, "status": status}

    try:
        await asyncio.gather(*(one(k, mention) for k, mention in enumerate(plan["mentions"])))
    finally:
        http.close()
    return results


def main(plan_path: str) -> None:
    with open(plan_path) as plan_file:
        plan = json.load(plan_file)
    json.dump(asyncio.run(send_all(plan)), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
