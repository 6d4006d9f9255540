"""The hash chain: which fields are hashed, in which order, with which algorithm.

A record's hash is ``H(prev_hash ␞ f1 ␟ f2 ␟ … ␟ fn)`` over the fields of ``FIELDS``
as text (NULL written as ␕, NAK). Writers strip the three separator characters from
values, so a record whose text holds one has been edited outside the platform; the
verifier checks the separator count, which makes the encoding unambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes

FIELDS = (
    "seq",
    "occurred_at",
    "actor_kind",
    "actor",
    "actor_department",
    "action",
    "resource",
    "subject_department",
    "items",
    "purpose",
    "grant_id",
    "rows",
    "outcome",
    "reason",
    "request_id",
    "client_addr",
    "detail",
    "alg",
)
RS, US, NULL = "\x1e", "\x1f", "\x15"
_SEPARATORS = str.maketrans("", "", RS + US + NULL + "\x00")
ALGORITHMS = ("sha256", "sm3")


def _sm3(data: bytes) -> str:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize().hex()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


HASHERS: dict[str, Callable[[bytes], str]] = {"sha256": _sha256, "sm3": _sm3}


def clean(value: Any) -> Any:
    """What a writer stores: text without separators or NUL (PostgreSQL refuses NUL)."""
    if isinstance(value, str):
        return value.translate(_SEPARATORS)
    return value


def canonical(values: Sequence[Any]) -> str:
    return US.join(NULL if v is None else str(v) for v in values)


def record_hash(alg: str, prev_hash: str, values: Sequence[Any]) -> str:
    """``values`` in the order of FIELDS (the last one is ``alg``)."""
    return HASHERS[alg]((prev_hash + RS + canonical(values)).encode())


def well_formed(values: Sequence[Any]) -> bool:
    """False when a stored value carries a separator (only an outside edit can do that)."""
    return canonical(values).count(US) == len(FIELDS) - 1 and not any(
        isinstance(v, str) and (RS in v or NULL in v) for v in values
    )
