"""Signed checkpoints: the platform key's signature over the chain's (seq, hash).

A hash chain alone shows an edit in the middle, but not a chain rewritten from some
point on, nor a cut tail; a signature made with a key outside the database shows both.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, insert, select, text

from datatong.audit.models import AuditCheckpoint
from datatong.audit.service import iso_now
from datatong.keys import signing_key


def message(seq: int, digest: str, signed_at: str) -> bytes:
    return f"datatong-audit-checkpoint/v1\n{seq}\n{digest}\n{signed_at}".encode()


def last_checkpointed(conn: Connection) -> int:
    return int(conn.execute(select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq.desc()).limit(1)).scalar() or 0)


def make_checkpoint(conn: Connection, key_dir: Path) -> int | None:
    """Sign the committed tip unless it is already signed; returns the signed seq.

    Reads the tip without locking it: the tip row only ever holds a committed
    (seq, hash) pair, so the signature is over a state that exists."""
    seq, digest = conn.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
    if seq == 0 or last_checkpointed(conn) >= seq:
        return None
    key = signing_key(key_dir)
    signed_at = iso_now()
    conn.execute(
        insert(AuditCheckpoint).values(
            seq=seq,
            hash=digest,
            signed_at=signed_at,
            key_id=key.kid,
            signature=key.sign(message(seq, digest, signed_at)),
        )
    )
    return int(seq)
