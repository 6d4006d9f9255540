"""Chinese full-text search over the catalog.

Text is segmented with jieba (search mode, so "人口基本信息" is indexed as 人口, 基本,
信息, 基本信息 …) and the tokens go to SQLite FTS5 or a PostgreSQL ``tsvector``
(``simple`` configuration: the tokens are already words). The index row is written
by the same session, in the same transaction, as the entry itself, so the two can
never drift.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import jieba
from sqlalchemy import column, table, text
from sqlalchemy.orm import Session

from datatong.db import is_sqlite

jieba.setLogLevel(logging.WARNING)
FTS_TABLE = table("catalog_fts", column("rowid"), column("title"), column("body"))
PG_TABLE = table("catalog_search", column("entry_id"), column("tsv"))
_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=200_000)
def _segment_phrase(phrase: str) -> tuple[str, ...]:
    tokens = []
    for tok in jieba.cut_for_search(phrase):
        tok = tok.strip().lower()
        if tok and _WORD.fullmatch(tok):
            tokens.append(tok)
    return tuple(tokens)


def segment(text_: str | None) -> list[str]:
    """Tokens of a text for the index. Phrases are cached: catalog text repeats a lot
    (item names such as 姓名, 身份证号 occur in thousands of entries)."""
    if not text_:
        return []
    out: list[str] = []
    for phrase in _WORD.findall(text_):
        out.extend(_segment_phrase(phrase))
    return out


def query_tokens(q: str) -> list[str]:
    """Tokens of a user query (precise mode, so a query word is not split further)."""
    out: list[str] = []
    for phrase in _WORD.findall(q or ""):
        for tok in jieba.cut(phrase):
            tok = tok.strip().lower()
            if tok and _WORD.fullmatch(tok) and tok not in out:
                out.append(tok)
    return out[:16]


def documents(name: str, provider: str, summary: str, keywords: str | None,
              item_names: Iterable[str]) -> tuple[str, str]:
    """(title tokens, body tokens) as space-separated strings."""
    title = " ".join(segment(name))
    body = " ".join(segment(" ".join([provider, summary or "", keywords or "", *item_names])))
    return title, body


def index_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write index rows {id, title, body}, replacing any earlier ones."""
    if not rows:
        return
    bind = session.get_bind()
    if is_sqlite(bind):
        session.execute(text("DELETE FROM catalog_fts WHERE rowid = :id"), [{"id": r["id"]} for r in rows])
        session.execute(
            text("INSERT INTO catalog_fts(rowid, title, body) VALUES (:id, :title, :body)"), rows
        )
    else:
        session.execute(
            text(
                "INSERT INTO catalog_search(entry_id, tsv) VALUES (:id, "
                "setweight(to_tsvector('simple', :title), 'A') || "
                "setweight(to_tsvector('simple', :body), 'B')) "
                "ON CONFLICT (entry_id) DO UPDATE SET tsv = EXCLUDED.tsv"
            ),
            rows,
        )


def remove(session: Session, entry_id: int) -> None:
    table, key = (("catalog_fts", "rowid") if is_sqlite(session.get_bind())
                  else ("catalog_search", "entry_id"))
    session.execute(text(f"DELETE FROM {table} WHERE {key} = :id"), {"id": entry_id})


def fts_query(tokens: list[str], sqlite: bool) -> str:
    """The MATCH / to_tsquery expression: every token must occur (AND)."""
    if sqlite:
        return " AND ".join('"' + t.replace('"', '""') + '"' for t in tokens)
    return " & ".join("'" + t.replace("'", "''").replace("\\", "") + "'" for t in tokens)
