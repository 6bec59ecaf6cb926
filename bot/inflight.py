"""Answers in flight, recorded durably so that no reply is left half-written by a process that died.

A record is opened in the transaction that claims the question (and holds its credits); it learns the
reply's messages as they are posted, and before every edit what Slack is about to show and what Claude
has consumed so far; it is marked settled in the transaction that charges the answer, and deleted once
Slack shows the final text. A record nobody is working on any more (its process died, or its task was
abandoned) is finished by recovery.py: the text shown stays, a notice says the answer was interrupted,
and the hold is settled for what the record says was consumed.

Which records this process is working on is known in memory (`running`); the database knows the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import TokenUsage
from bot.processes import ProcessRegistry
from bot.question import Question
from bot.tables import answers_in_flight as records

log = logging.getLogger(__name__)


class NotOurs(Exception):
    """Another process has taken this answer over (this one was taken for dead): leave it to that one."""


@dataclass(frozen=True)
class InFlight:
    id: str
    team_id: str
    channel_id: str
    thread_ts: str | None
    user_id: str | None
    reservation_id: str | None
    owner: str
    messages: list[str]
    text: str  # the last message's text as last shown (no cursor)
    usage: TokenUsage
    settled: bool
    outcome_text: str | None = None  # a one-message outcome to post (help, no credits), when that is all there is
    model: str | None = None  # None: CLAUDE_MODEL

    @property
    def shown_anything(self) -> bool:
        return bool(self.text) or len(self.messages) > 1


def _from_row(row) -> InFlight:
    return InFlight(
        id=row.id,
        team_id=row.team_id,
        channel_id=row.channel_id,
        thread_ts=row.thread_ts,
        user_id=row.user_id,
        reservation_id=row.reservation_id,
        owner=row.owner,
        messages=json.loads(row.messages),
        text=row.shown_text,
        usage=TokenUsage(
            input_tokens=row.input_tokens,
            cache_creation_input_tokens=row.cache_creation_input_tokens,
            cache_read_input_tokens=row.cache_read_input_tokens,
            output_tokens=row.output_tokens,
            web_search_requests=row.web_search_requests or 0,
        ),
        settled=row.settled,
        outcome_text=row.outcome_text,
        model=row.model,
    )


def _usage_values(usage: TokenUsage) -> dict:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
        "web_search_requests": usage.web_search_requests,
    }


class AnswerJournal:
    def __init__(self, engine: AsyncEngine, processes: ProcessRegistry, *, clock: Callable[[], datetime]):
        self._engine = engine
        self._processes = processes
        self._clock = clock
        self.owner = processes.process_id
        self.running: dict[str, str | None] = {}  # record id -> its reservation id, for answers being worked on here
        self._to_delete: set[str] = set()  # finished, but the delete did not get through yet
        self._checkpoints: dict[str, tuple[dict, list[asyncio.Future]]] = {}  # record id -> newest values, waiters
        self._checkpointing: asyncio.Task | None = None

    # -- the owner's side -------------------------------------------------------------------------------

    def start(self, record_id: str) -> bool:
        """Called before the record is opened, so that no record of this process is ever taken for abandoned.
        False when the same question is already being answered here (a repeated delivery)."""
        if record_id in self.running:
            return False
        self.running[record_id] = None
        return True

    async def open(
        self,
        connection: AsyncConnection,
        question: Question,
        reservation_id: str | None,
        outcome_text: str | None = None,
        model: str | None = None,
    ) -> None:
        """Inside the transaction that claims the question. `outcome_text`: the one message the question gets
        (help, no credits), posted by recovery if this process dies before it could post it."""
        now = self._clock()
        self.running[question.reservation_id] = reservation_id
        await connection.execute(
            insert(records).values(
                id=question.reservation_id,
                team_id=question.team_id,
                channel_id=question.channel_id,
                thread_ts=question.reply_thread_ts,
                user_id=question.user_id or None,
                reservation_id=reservation_id,
                owner=self.owner,
                messages="[]",
                shown_text="",
                settled=False,
                created_at=now,
                updated_at=now,
                outcome_text=outcome_text,
                model=model,
                **_usage_values(TokenUsage()),
            )
        )

    async def shown(self, record_id: str, messages: list[str], text: str, usage: TokenUsage) -> str | None:
        """What Slack shows (or is about to): the reply's messages, the last one's text, and the usage so far.
        Returns who asked to stop the answer, when someone did (possibly through another process). Raises
        NotOurs when another process has taken the answer over (this one was taken for dead).

        The checkpoints of every answer of this process are written together, one transaction at a time: a
        burst of answers costs a few transactions a second, not one per edit (on SQLite every transaction
        waits for the single writer, and the questions arriving meanwhile would wait behind them)."""
        values = {
            "b_messages": json.dumps(messages),
            "b_text": text,
            "b_now": self._clock(),
            **{f"b_{key}": value for key, value in _usage_values(usage).items()},
        }
        future = asyncio.get_running_loop().create_future()
        _, waiting = self._checkpoints.get(record_id, (None, []))
        self._checkpoints[record_id] = (values, [*waiting, future])
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointing = asyncio.get_running_loop().create_task(self._write_checkpoints(), name="checkpoints")
        return await future

    async def _write_checkpoints(self) -> None:
        while self._checkpoints:
            batch, self._checkpoints = self._checkpoints, {}
            try:
                found = await self._write_batch({record_id: values for record_id, (values, _) in batch.items()})
            except Exception as error:
                for _, waiting in batch.values():
                    for future in waiting:
                        if not future.done():
                            future.set_exception(error)
                continue
            for record_id, (_, waiting) in batch.items():
                owner, stop_requested_by = found.get(record_id, (None, None))
                for future in waiting:
                    if future.done():
                        continue
                    if owner != self.owner:
                        future.set_exception(NotOurs(record_id))
                    else:
                        future.set_result(stop_requested_by)

    async def _write_batch(self, batch: dict[str, dict]) -> dict[str, tuple[str, str | None]]:
        """Writes the records that are still this process's; returns each record's owner and stop request."""
        statement = (
            update(records)
            .where(records.c.id == bindparam("b_id"), records.c.owner == self.owner)
            .values(
                messages=bindparam("b_messages"),
                shown_text=bindparam("b_text"),
                updated_at=bindparam("b_now"),
                **{key: bindparam(f"b_{key}") for key in _usage_values(TokenUsage())},
            )
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement, [{"b_id": record_id, **values} for record_id, values in batch.items()])
            rows = (
                await connection.execute(
                    select(records.c.id, records.c.owner, records.c.stop_requested_by).where(
                        records.c.id.in_(list(batch))
                    )
                )
            ).all()
        return {row.id: (row.owner, row.stop_requested_by) for row in rows}

    async def request_stop(
        self, *, by: str, record_id: str | None = None, thread: tuple[str, str, str] | None = None
    ) -> int:
        """Ask whichever process writes the answer (`record_id`) or the answers of a thread (team, channel,
        thread_ts) to stop; how many answers were asked."""
        where: list[sa.ColumnElement[bool]] = [records.c.stop_requested_by.is_(None), records.c.settled.is_(False)]
        if record_id is not None:
            where.append(records.c.id == record_id)
        if thread is not None:
            team_id, channel_id, thread_ts = thread
            where += [
                records.c.team_id == team_id,
                records.c.channel_id == channel_id,
                records.c.thread_ts == thread_ts,
            ]
        async with self._engine.begin() as connection:
            return (await connection.execute(update(records).where(*where).values(stop_requested_by=by))).rowcount

    async def find(self, record_id: str) -> InFlight | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(records).where(records.c.id == record_id))).first()
        return None if row is None else _from_row(row)

    async def settled(self, connection: AsyncConnection, record_id: str, messages: list[str], text: str) -> None:
        """Inside the transaction that charges the answer: from now on only its final text is missing. Raises
        NotOurs (and so undoes the charge) when another process has taken the answer over."""
        result = await connection.execute(
            update(records)
            .where(records.c.id == record_id, records.c.owner == self.owner)
            .values(messages=json.dumps(messages), shown_text=text, settled=True, updated_at=self._clock())
        )
        if result.rowcount != 1:
            raise NotOurs(record_id)

    async def finished(self, record_id: str) -> None:
        """The answer's outcome is final in Slack (and its credits settled): forget it. The record goes before
        the answer stops counting as running, so that it is never taken for abandoned in between."""
        try:
            await self._delete({record_id})
        except Exception as error:
            log.warning("could not delete the record of answer %s yet (%s)", record_id, error.__class__.__name__)
            self._to_delete.add(record_id)
        finally:
            self.running.pop(record_id, None)

    def abandon(self, record_id: str) -> None:
        """The task gave up on the answer without finishing it: leave the record for recovery."""
        self.running.pop(record_id, None)

    def held(self) -> set[str]:
        """The reservations of the answers this process is working on."""
        return {reservation for reservation in self.running.values() if reservation}

    async def _delete(self, ids: set[str]) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(records).where(records.c.id.in_(ids), records.c.owner == self.owner))

    # -- upkeep -----------------------------------------------------------------------------------------

    async def abandoned_here(self) -> list[InFlight]:
        """Deletes what finished meanwhile; returns this process's records that no task is working on (to be
        adopted before anything is done with them: the answer may have finished since)."""
        if self._to_delete:
            ids, self._to_delete = self._to_delete, set()
            try:
                await self._delete(ids)
            except Exception:
                self._to_delete |= ids
                raise
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(records).where(records.c.owner == self.owner))).all()
        return [_from_row(row) for row in rows if row.id not in self.running and row.id not in self._to_delete]

    async def orphans(self) -> list[InFlight]:
        """Records whose owner is dead (see processes.py); empty until this process may judge."""
        if not self._processes.may_judge_others():
            return []
        query = select(records).where(records.c.owner.not_in(self._processes.alive_ids()))
        async with self._engine.connect() as connection:
            return [_from_row(row) for row in (await connection.execute(query)).all()]

    async def adopt(self, record: InFlight) -> bool:
        """Take over a record from its dead owner (or from this process's own abandoned task); False when
        another process was quicker, or the owner has shown itself alive since it was judged."""
        owner_gone = records.c.owner.not_in(self._processes.alive_ids()) if record.owner != self.owner else sa.true()
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(records)
                .where(records.c.id == record.id, records.c.owner == record.owner, owner_gone)
                .values(owner=self.owner, updated_at=self._clock())
            )
        if result.rowcount == 1:
            self.running[record.id] = record.reservation_id
        return result.rowcount == 1

    async def owners(self) -> set[str]:
        async with self._engine.connect() as connection:
            return set((await connection.execute(select(records.c.owner).distinct())).scalars())

    async def reservations(self) -> set[str]:
        """Every hold some record still accounts for: only the record's owner or recovery may close it."""
        query = select(records.c.reservation_id).where(records.c.reservation_id.is_not(None))
        async with self._engine.connect() as connection:
            return set((await connection.execute(query)).scalars())


CHECKPOINT_WAIT = 1.0


class Checkpoints:
    """The reply's progress, written to its record before Slack shows it (the ReplyJournal of bot/delivery).

    One write at a time per reply, each carrying the newest state; a caller waits for it at most
    CHECKPOINT_WAIT, so a slow database delays an edit a little and a dead one not at all (the write is
    never cancelled half-way: it finishes in the background)."""

    def __init__(
        self,
        journal: AnswerJournal,
        record_id: str,
        *,
        on_stop_requested: Callable[[str], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ):
        self._journal = journal
        self._record_id = record_id
        self._on_stop_requested = on_stop_requested
        self._on_lost = on_lost
        self.usage: Callable[[], TokenUsage] = TokenUsage
        self._newest: tuple[list[str], str] | None = None
        self._writing: asyncio.Task | None = None
        self._failed = False

    async def shown(self, messages: list[str], text: str) -> None:
        self._newest = (list(messages), text)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(self._write_newest(), name="checkpoint")
        await asyncio.wait({self._writing}, timeout=CHECKPOINT_WAIT)

    async def _write_newest(self) -> None:
        while self._newest is not None:
            (messages, text), self._newest = self._newest, None
            try:
                stop_requested_by = await self._journal.shown(self._record_id, messages, text, self.usage())
                self._failed = False
            except NotOurs:
                if self._record_id not in self._journal.running:
                    return  # a late checkpoint of an answer that is over: its record is gone, rightly
                log.warning("answer %s was taken over by another process; this one stops writing it", self._record_id)
                if self._on_lost is not None:
                    self._on_lost()
                return
            except Exception as error:
                if not self._failed:
                    log.warning("could not checkpoint answer %s (%s)", self._record_id, error.__class__.__name__)
                self._failed = True
                continue
            if stop_requested_by and self._on_stop_requested is not None:
                self._on_stop_requested(stop_requested_by)  # asked through another process (bot/stops.py)
