"""Lost COMMIT answers and two holders of one epoch, on the real PostgreSQL (issue 19).

A commit whose answer never arrives is settled by its commit mark, not by its transaction id;
a claim is fenced by its lease owner as well as its epoch, so the holder of a claim that was
lost (with a failed primary) and then made again at the same epoch by another worker records
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from stepstone.errors import InstanceAlreadyExists
from stepstone.storage.base import Claim, Fenced, NewEvent, NewInstance, Release, WorkflowDefinition
from stepstone.storage.postgres import PostgresStorage
from stepstone.storage.postgres_db import COMMIT_MARKS, Database, StorageUnavailable
from tests.storage.conftest import LEASE, NOW


class CommitCutter:
    """A TCP relay to the server that, once armed, loses the next COMMIT's answer ("after":
    the server gets the COMMIT, the client never hears back) or the COMMIT itself ("before":
    the connection dies with the transaction open). Everything else passes through. While
    ``refusing`` it drops every connection: the database is unreachable; ``down_after_cut``
    turns that on at the cut."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.mode: str | None = None
        self.cut = 0
        self.answered = asyncio.Event()  # the server answered the lost COMMIT
        self.refusing = False
        self.down_after_cut = False
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def go_down(self) -> None:
        self.refusing = True
        for writer in self._open:
            writer.transport.abort()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _relay(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        if self.refusing:
            cwriter.transport.abort()
            return
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target)
        self._open.update((cwriter, swriter))
        lost = asyncio.Event()

        async def up() -> None:
            while data := await creader.read(65536):
                if self.mode is not None and b"COMMIT\x00" in data:
                    mode, self.mode = self.mode, None
                    self.cut += 1
                    if mode == "after":
                        swriter.write(data)
                        await swriter.drain()
                    lost.set()
                    cwriter.transport.abort()
                    if mode == "before":
                        swriter.transport.abort()
                    if self.down_after_cut:
                        self.refusing = True
                        for writer in self._open - {swriter}:
                            writer.transport.abort()
                    return
                swriter.write(data)
                await swriter.drain()
            swriter.close()

        async def down() -> None:
            while data := await sreader.read(65536):
                if lost.is_set():
                    # The server has answered the COMMIT: it committed; nobody hears it.
                    self.answered.set()
                    swriter.transport.abort()
                    return
                cwriter.write(data)
                await cwriter.drain()
            cwriter.close()

        for job in (up(), down()):
            task = asyncio.create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def _port(url: str) -> int:
    return int(url.split("@", 1)[1].split("/", 1)[0].split(":")[1])


@pytest.fixture
async def cut(pg_database: str) -> AsyncIterator[tuple[CommitCutter, Database, str]]:
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.execute("CREATE TABLE lost_commit_probe (n INTEGER NOT NULL)")
    finally:
        await conn.close()
    cutter = CommitCutter(_port(pg_database))
    port = await cutter.start()
    host = pg_database.split("@", 1)[1].split("/", 1)[0]
    db = Database(pg_database.replace(host, f"127.0.0.1:{port}"), min_size=1, max_size=2)
    await db.start()
    try:
        yield cutter, db, pg_database
    finally:
        await db.close()
        await cutter.close()


async def _probe_rows(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT n FROM lost_commit_probe ORDER BY n")]
    finally:
        await conn.close()


async def _insert(conn: Any) -> str:
    await conn.execute("INSERT INTO lost_commit_probe VALUES (1)")
    return "done"


@pytest.mark.parametrize("mode", ["after", "before"])
async def test_a_write_whose_commit_answer_is_lost_is_applied_once(
    cut: tuple[CommitCutter, Database, str], mode: str
) -> None:
    cutter, db, url = cut
    cutter.mode = mode
    assert await db.write(_insert) == "done"
    assert cutter.cut == 1
    if mode == "after":
        assert cutter.answered.is_set()
    # Committed by the lost try ("after") and not again, or rolled back and run again.
    assert await _probe_rows(url) == [1]
    # Settled by a veto: the question asked again gets the same answer, and the lost
    # transaction's mark is the only row for it.
    conn = await asyncpg.connect(url)
    try:
        marks = await conn.fetch(f"SELECT token, veto FROM {COMMIT_MARKS}")
    finally:
        await conn.close()
    vetoed = [token for token, veto in marks if veto]
    assert len(vetoed) == (1 if mode == "before" else 0)


async def test_a_veto_waits_for_a_commit_under_way_and_then_finds_it(
    cut: tuple[CommitCutter, Database, str],
) -> None:
    _, db, url = cut
    mark = uuid.uuid4()
    conn = await asyncpg.connect(url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"INSERT INTO {COMMIT_MARKS} (token) VALUES ($1)", mark)
        loop = asyncio.get_running_loop()
        asking = asyncio.create_task(db._committed(mark, loop.time()))
        # The veto is blocked on the open transaction's key (a lock wait, seen by the server).
        async with asyncio.timeout(10):
            while not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ):
                await asyncio.sleep(0.01)
        assert not asking.done()
        await tx.commit()
        assert await asking is True
        assert await db._committed(mark, loop.time()) is True
    finally:
        await conn.close()


async def test_a_veto_keeps_a_transaction_it_did_not_find_from_ever_committing(
    cut: tuple[CommitCutter, Database, str],
) -> None:
    _, db, url = cut
    mark = uuid.uuid4()
    loop = asyncio.get_running_loop()
    assert await db._committed(mark, loop.time()) is False
    # Asked again (the first answer lost too): the veto stored answers the same.
    assert await db._committed(mark, loop.time()) is False
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute("INSERT INTO lost_commit_probe VALUES (2)")
                await conn.execute(f"INSERT INTO {COMMIT_MARKS} (token) VALUES ($1)", mark)
    finally:
        await conn.close()
    assert await _probe_rows(url) == []


async def test_a_commit_too_old_to_settle_is_an_outage_not_a_guess(
    cut: tuple[CommitCutter, Database, str],
) -> None:
    _, db, _ = cut
    long_ago = asyncio.get_running_loop().time() - 3600
    with pytest.raises(StorageUnavailable, match="can no longer be told"):
        await db._committed(uuid.uuid4(), long_ago)


async def test_old_commit_marks_are_forgotten(cut: tuple[CommitCutter, Database, str]) -> None:
    _, db, url = cut
    await db.write(_insert)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"INSERT INTO {COMMIT_MARKS} (token, at) VALUES ($1, now() - interval '1 hour')",
            uuid.uuid4(),
        )
        assert await conn.fetchval(f"SELECT count(*) FROM {COMMIT_MARKS}") == 2
        assert await db.forget_marks() == 1
        assert await conn.fetchval(f"SELECT count(*) FROM {COMMIT_MARKS}") == 1
    finally:
        await conn.close()


# --- two holders of one epoch -----------------------------------------------------------------


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(pg_database)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _lose_claims(pg: PostgresStorage, claims: list[Claim]) -> None:
    """Put the rows back as they were before ``claims``, as a promoted standby that never
    received them would have them."""

    async def job(conn: Any) -> None:
        await conn.execute(
            "UPDATE instances SET epoch = epoch - 1, lease_owner = NULL, lease_expires = NULL"
            " WHERE pk = ANY($1::bigint[])",
            [c.instance.pk for c in claims],
        )

    await pg._db.write(job)


async def test_a_lost_claim_made_again_at_its_epoch_fences_its_first_holder(
    pg: PostgresStorage,
) -> None:
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    ids = ["i1", "i2", "i3"]
    await pg.create_instances(
        wf.pk, wf.version.id, [NewInstance(i, b"1") for i in ids], NOW, skip_existing=False
    )
    first = await pg.claim_runnable("old", 3, NOW, LEASE, None)
    await _lose_claims(pg, first)
    again = await pg.claim_runnable("new", 3, NOW, LEASE, None)
    assert [(c.instance.pk, c.epoch) for c in again] == [(c.instance.pk, c.epoch) for c in first]
    old = {c.instance.id: c for c in first}
    new = {c.instance.id: c for c in again}

    def done(name: str) -> list[NewEvent]:
        return [NewEvent("step_completed", NOW, b"{}", "do", name)]

    # Alone (one-instance function), together (many-instance function) and through the
    # locked-row path: the first holder is fenced each time, the second writes.
    with pytest.raises(Fenced):
        await pg.record_progress(old["i1"], done("s-old"))
    results = await asyncio.gather(
        pg.record_progress(old["i2"], done("s-old")),
        pg.record_progress(old["i3"], done("s-old")),
        return_exceptions=True,
    )
    assert all(isinstance(r, Fenced) for r in results), results
    with pytest.raises(Fenced):
        await pg.set_active_status(old["i1"], "waitingForPause")
    pg.record_progress_nowait(old["i2"], [NewEvent("attempt_started", NOW, None, "do", "x")])
    for instance_id in ids:
        assert await pg.record_progress(new[instance_id], done("s-new")) == "running"
    release = Release("complete", output=b"1", events=[NewEvent("workflow_completed", NOW)])
    with pytest.raises(Fenced):
        await pg.release_instance(old["i1"], release, NOW)
    ended = await asyncio.gather(
        pg.release_instance(old["i2"], release, NOW),
        pg.release_instance(old["i3"], release, NOW),
        return_exceptions=True,
    )
    assert all(isinstance(r, Fenced) for r in ended), ended
    ends = await asyncio.gather(*(pg.release_instance(new[i], release, NOW) for i in ids))
    assert ends == ["complete"] * 3
    for instance_id in ids:
        events = await pg.load_events(new[instance_id].instance.pk)
        assert [(e.type, e.step_name) for e in events if e.type != "workflow_queued"] == [
            ("step_completed", "s-new"),
            ("workflow_completed", None),
        ], instance_id


# --- one-statement writes that carry their own mark ------------------------------------------


@pytest.mark.parametrize("committed", [True, False])
async def test_a_one_statement_write_whose_answer_is_lost_is_applied_once(
    cut: tuple[CommitCutter, Database, str], committed: bool
) -> None:
    _, db, url = cut
    tries: list[uuid.UUID] = []

    async def job(conn: Any, mark: uuid.UUID) -> str:
        tries.append(mark)
        if len(tries) == 1 and not committed:
            raise asyncpg.ConnectionDoesNotExistError("lost before it was sent")
        await conn.execute(
            f"WITH m AS (INSERT INTO {COMMIT_MARKS} (token) VALUES ($1))"
            " INSERT INTO lost_commit_probe VALUES (1)",
            mark,
        )
        if len(tries) == 1:
            # Committed on its own; the answer never arrives.
            raise asyncpg.ConnectionDoesNotExistError("the answer was lost")
        return "sent"

    async def recover(conn: Any) -> str:
        return "recovered"

    assert await db.once(job, recover) == ("recovered" if committed else "sent")
    assert len(tries) == (1 if committed else 2)
    assert await _probe_rows(url) == [1]


async def test_a_lone_create_is_one_statement_and_a_taken_id_still_fails_alone(
    pg: PostgresStorage,
) -> None:
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    made = await pg.create_instances(
        wf.pk, wf.version.id, [NewInstance("i1", b"1")], NOW, skip_existing=False
    )
    assert [r.id for r in made] == ["i1"]
    with pytest.raises(InstanceAlreadyExists, match="'i1'"):
        await pg.create_instances(
            wf.pk,
            wf.version.id,
            [NewInstance("i2", b"1"), NewInstance("i1", b"1")],
            NOW,
            skip_existing=False,
        )
    # Nothing of the failed create was stored, and its ids are free for the next one.
    assert await pg.get_instance(wf.pk, "i2") is None
    made = await pg.create_instances(
        wf.pk, wf.version.id, [NewInstance("i2", b"1")], NOW, skip_existing=False
    )
    assert [r.id for r in made] == ["i2"]
    with pytest.raises(InstanceAlreadyExists, match="'i3'"):
        await pg.create_instances(
            wf.pk,
            wf.version.id,
            [NewInstance("i3", b"1"), NewInstance("i3", b"2")],
            NOW,
            skip_existing=False,
        )
    assert await pg.get_instance(wf.pk, "i3") is None


@pytest.fixture
async def relayed_pg(pg_database: str) -> AsyncIterator[tuple[CommitCutter, PostgresStorage]]:
    """A store reaching its database through a ``CommitCutter``; an outage fails a write
    after half a second rather than the default two minutes."""
    cutter = CommitCutter(_port(pg_database))
    port = await cutter.start()
    host = pg_database.split("@", 1)[1].split("/", 1)[0]
    pg = PostgresStorage(pg_database.replace(host, f"127.0.0.1:{port}"), retry_for=0.5)
    await pg.open()
    try:
        yield cutter, pg
    finally:
        cutter.refusing = cutter.down_after_cut = False
        await pg.close()
        await cutter.close()


async def _claimed(pg: PostgresStorage) -> Claim:
    wf = await pg.register_workflow("a", "wf", WorkflowDefinition("C", "m"), NOW)
    await pg.create_instances(
        wf.pk, wf.version.id, [NewInstance("i", b"1")], NOW, skip_existing=False
    )
    (claim,) = await pg.claim_runnable("w", 1, NOW, LEASE, None)
    return claim


async def _flushed(pg: PostgresStorage) -> None:
    """Until the background flush of queued events has ended, written or not."""
    await pg._queued.drain()


async def test_events_a_failed_flush_left_are_written_by_the_claims_next_write(
    relayed_pg: tuple[CommitCutter, PostgresStorage],
) -> None:
    cutter, pg = relayed_pg
    claim = await _claimed(pg)
    cutter.go_down()
    pg.record_progress_nowait(claim, [NewEvent("attempt_started", NOW, None, "do", "x")])
    await _flushed(pg)
    cutter.refusing = False
    done = [NewEvent("step_completed", NOW, b"1", "do", "x")]
    assert await pg.record_progress(claim, done) == "running"
    events = await pg.load_events(claim.instance.pk)
    assert [e.type for e in events] == ["workflow_queued", "attempt_started", "step_completed"]


async def test_a_flush_that_may_have_committed_fails_the_claims_next_write(
    relayed_pg: tuple[CommitCutter, PostgresStorage],
) -> None:
    cutter, pg = relayed_pg
    claim = await _claimed(pg)
    # The flush's COMMIT reaches the server, its answer is lost, and the server cannot be
    # asked whether it committed: written twice or written after, either would be wrong.
    cutter.mode, cutter.down_after_cut = "after", True
    pg.record_progress_nowait(claim, [NewEvent("attempt_started", NOW, None, "do", "x")])
    await _flushed(pg)
    assert cutter.cut == 1
    cutter.refusing = cutter.down_after_cut = False
    with pytest.raises(StorageUnavailable, match="could not be told"):
        await pg.record_progress(claim, [NewEvent("step_completed", NOW, b"1", "do", "x")])
    events = await pg.load_events(claim.instance.pk)
    assert [e.type for e in events] == ["workflow_queued", "attempt_started"]
