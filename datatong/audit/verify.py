"""Verifying the trail: recompute every hash, follow every link, check every signature.

The database builds each record's canonical text (datatong/audit/chain.py) in SQL, so
Python only hashes and compares; long chains are split across processes, each checking
its own range from the stored hash just before it — together exactly the sequential
check, since every link is checked by one of them.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text

from datatong.audit.chain import FIELDS, HASHERS, RS, US
from datatong.audit.checkpoint import message
from datatong.audit.models import GENESIS, AuditCheckpoint
from datatong.db import engine_for, is_sqlite
from datatong.keys import VerifyKey

CHUNK = 20_000
PARALLEL_FROM = 400_000  # records; below this, starting processes costs more than it saves


@dataclass(frozen=True)
class Problem:
    seq: int  # the first record that is wrong or missing
    code: str  # altered | rehashed | missing | malformed | truncated | checkpoint_mismatch | bad_signature
    message: str
    message_en: str


@dataclass
class Report:
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    checkpoints: int = 0
    last_checkpoint: int = 0
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def canonical_sql(sqlite: bool) -> str:
    """SQL for the text that chain.canonical builds in Python (NULL → ␕, ␟ between)."""
    parts = []
    for name in FIELDS:
        col = f'"{name}"' if sqlite else f'"{name}"::text'
        parts.append(f"coalesce({col}, char(21))" if sqlite else f"coalesce({col}, chr(21))")
    return (" || char(31) || " if sqlite else " || chr(31) || ").join(parts)


def _fetch(engine: Engine, lo: int, hi: int) -> Iterator[list[tuple[Any, ...]]]:
    """Yield chunks of (seq, canonical, alg, prev_hash, hash) in seq order.

    Straight from the driver (plain tuples, a server-side cursor on PostgreSQL): at ten
    million rows, building result objects would cost more than hashing."""
    sqlite = is_sqlite(engine)
    sql = f"SELECT seq, {canonical_sql(sqlite)}, alg, prev_hash, hash FROM audit_record " + (
        "WHERE seq >= ? AND seq <= ? ORDER BY seq" if sqlite else "WHERE seq >= %s AND seq <= %s ORDER BY seq"
    )
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        cur = driver.cursor() if sqlite else driver.cursor(name="datatong_audit_verify")
        cur.execute(sql, (lo, hi))
        while True:
            chunk = cur.fetchmany(CHUNK)
            if not chunk:
                break
            yield chunk
        cur.close()
    finally:
        raw.rollback()
        raw.close()


def _stored_hash(engine: Engine, seq: int) -> str | None:
    if seq < 1:
        return GENESIS
    with engine.connect() as conn:
        return conn.execute(text("SELECT hash FROM audit_record WHERE seq = :s"), {"s": seq}).scalar()


def verify_range(
    url: str, lo: int, hi: int, prev: str, signed: dict[int, str], progress: Callable[[int], None] | None = None
) -> tuple[int, int, Problem | None]:
    """Check records lo..hi; returns (records seen, last seq seen, first problem)."""
    engine = engine_for(url)
    expected, seen, fields = lo, 0, len(FIELDS) - 1
    hashers = HASHERS
    for chunk in _fetch(engine, lo, hi):
        for seq, canon, alg, stored_prev, stored in chunk:
            if seq != expected:
                return (
                    seen,
                    expected - 1,
                    Problem(
                        expected, "missing", f"记录 #{expected} 缺失（被删除或改号）", f"Record #{expected} is missing"
                    ),
                )
            if canon.count(US) != fields or RS in canon or alg not in hashers:
                return seen, seq, Problem(seq, "malformed", f"记录 #{seq} 含非法字符", f"Record #{seq} is malformed")
            if stored_prev != prev or hashers[alg]((prev + RS + canon).encode()) != stored:
                return seen, seq, _broken(seq, canon, hashers[alg], prev, stored_prev, stored)
            want = signed.get(seq)
            if want is not None and want != stored:
                return (
                    seen,
                    seq,
                    Problem(
                        seq,
                        "checkpoint_mismatch",
                        f"记录 #{seq} 与签名检查点不符：此前的链被整体重写",
                        f"Record #{seq} differs from its signed checkpoint: the chain up to it was rewritten",
                    ),
                )
            prev, expected, seen = stored, expected + 1, seen + 1
        if progress:
            progress(len(chunk))
    if expected <= hi:
        return (
            seen,
            expected - 1,
            Problem(expected, "missing", f"记录 #{expected} 缺失（被删除或改号）", f"Record #{expected} is missing"),
        )
    return seen, expected - 1, None


def _broken(seq: int, canon: str, hasher: Callable[[bytes], str], prev: str, stored_prev: str, stored: str) -> Problem:
    """Name the record that was changed: when this one still matches its own hash but no
    longer follows the one before, the one before was edited and its hash recomputed."""
    if stored_prev != prev and hasher((stored_prev + RS + canon).encode()) == stored:
        return Problem(
            seq - 1,
            "rehashed",
            f"记录 #{seq - 1} 被改动并重算了哈希（下一条记录 #{seq} 记载的哈希与它不符）",
            f"Record #{seq - 1} was changed and re-hashed (record #{seq} holds its old hash)",
        )
    return Problem(
        seq, "altered", f"记录 #{seq} 的内容与其哈希不符（被修改）", f"Record #{seq} does not match its hash (altered)"
    )


_counter: Any = None


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _worker(args: tuple[str, int, int, str, dict[int, str]]) -> tuple[int, int, Problem | None]:
    url, lo, hi, prev, signed = args

    def tick(n: int) -> None:
        with _counter.get_lock():
            _counter.value += n

    return verify_range(url, lo, hi, prev, signed, tick)


def _check_signatures(checkpoints: list[Any], keys: Mapping[str, VerifyKey]) -> tuple[dict[int, str], Problem | None]:
    signed: dict[int, str] = {}
    for cp in checkpoints:
        key = keys.get(cp.key_id)
        if key is None or not key.verify(cp.signature, message(cp.seq, cp.hash, cp.signed_at)):
            return signed, Problem(
                cp.seq,
                "bad_signature",
                f"检查点 #{cp.seq} 的签名无效或签名密钥未知",
                f"Checkpoint at #{cp.seq} has an invalid signature or an unknown key",
            )
        signed[cp.seq] = cp.hash
    return signed, None


def verify(
    url: str,
    keys: Mapping[str, VerifyKey],
    *,
    start: int = 1,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Verify records from ``start`` to the end and every checkpoint from there on.

    ``progress(done, total)`` is called as records are checked."""
    engine = engine_for(url)
    start = max(1, start)
    with engine.connect() as conn:
        head_seq = int(conn.execute(text("SELECT seq FROM audit_head WHERE id = 1")).scalar() or 0)
        last = int(conn.execute(text("SELECT max(seq) FROM audit_record")).scalar() or 0)
        checkpoints = list(
            conn.execute(
                select(AuditCheckpoint.__table__).where(AuditCheckpoint.seq >= start).order_by(AuditCheckpoint.seq)
            ).all()
        )
    report = Report(first_seq=start, last_seq=last, checkpoints=len(checkpoints))
    report.last_checkpoint = checkpoints[-1].seq if checkpoints else 0
    signed, report.problem = _check_signatures(checkpoints, keys)
    if report.problem:
        return report
    prev = _stored_hash(engine, start - 1)
    if prev is None:
        report.problem = Problem(start - 1, "missing", f"记录 #{start - 1} 缺失", f"Record #{start - 1} is missing")
        return report
    total = max(0, last - start + 1)
    seen, problem = _scan(url, start, last, prev, signed, total, workers, progress)
    report.records = seen
    report.problem = problem or _tail_problem(last, head_seq, report.last_checkpoint)
    if report.problem is None and head_seq - report.last_checkpoint > 0:
        report.warnings.append(f"最后 {head_seq - report.last_checkpoint} 条记录尚未被签名检查点覆盖")
    return report


def _tail_problem(last: int, head_seq: int, last_checkpoint: int) -> Problem | None:
    claimed = max(head_seq, last_checkpoint)
    if claimed > last:
        return Problem(
            last + 1,
            "truncated",
            f"日志尾部被截断：记录 #{last + 1} 至 #{claimed} 不见了",
            f"The tail was cut: records #{last + 1} to #{claimed} are gone",
        )
    return None


def _scan(
    url: str,
    start: int,
    last: int,
    prev: str,
    signed: dict[int, str],
    total: int,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, Problem | None]:
    workers = workers or (2 if total >= PARALLEL_FROM and not url.endswith(":memory:") else 1)
    if workers <= 1 or total < 2:
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        seen, _, problem = verify_range(url, start, last, prev, signed, tick)
        return seen, problem
    return _scan_parallel(url, start, last, prev, signed, total, workers, progress)


def _scan_parallel(
    url: str,
    start: int,
    last: int,
    prev: str,
    signed: dict[int, str],
    total: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, Problem | None]:
    bounds = [start + (total * i) // workers for i in range(workers + 1)]
    bounds[-1] = last + 1
    engine = engine_for(url)
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    jobs = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        before = prev if lo == start else _stored_hash(engine, lo - 1)
        if before is None:  # the record just before this range is gone: let range 1 find it
            before = GENESIS
        part = {s: h for s, h in signed.items() if lo <= s < hi}
        jobs.append((url, lo, hi - 1, before, part))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
        pending = pool.map_async(_worker, jobs)
        while not pending.ready():
            pending.wait(0.25)
            if progress:
                progress(int(counter.value), total)
        results = pending.get()
    if progress:
        progress(int(counter.value), total)
    seen = sum(r[0] for r in results)
    problems = [r[2] for r in results if r[2] is not None]
    return seen, min(problems, key=lambda p: p.seq) if problems else None
