"""Python SDK of the Datatong exchange (HTTPX).

    from datatong.client import Client

    with Client("https://datatong.example.gov.cn", client_id="mz-jiuzhu", client_secret="…",
                system="社会救助信息系统", operator="张三", purpose="verification", case="MZ2026-0001") as dt:
        for row in dt.query("101-GA-000001", items=["身份证号", "姓名"], filters=[("姓名", "prefix", "张")]):
            ...
        results = dt.verify("101-GA-000001", [("110101199003071234", {"姓名": "张三", "婚姻状况": "已婚"})])
        dt.last_receipt  # the signed receipt (电子凭证) of the last response; dt.check_receipt() verifies it

It fetches and renews the token (user password or client credentials), sends the request
context headers on every call, follows query pages, and keeps each response's receipt.
Errors are raised as :class:`DatatongError` with the platform's code and messages.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx


class DatatongError(Exception):
    """An error answer of the platform: ``status``, ``code``, ``message`` (Chinese), ``message_en``."""

    def __init__(self, status: int, code: str, message: str, message_en: str) -> None:
        super().__init__(f"{status} {code}: {message_en}")
        self.status, self.code, self.message, self.message_en = status, code, message, message_en


@dataclass
class Receipt:
    """What a response was, bound by the platform's signature (verify with :meth:`Client.check_receipt`)."""

    header: str
    body: bytes


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        system: str,
        operator: str,
        purpose: str,
        case: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not ((username and password) or (client_id and client_secret)):
            raise ValueError("give username + password or client_id + client_secret")
        self._credentials = (username, password, client_id, client_secret)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)
        self._token: str | None = None
        self._token_until = 0.0
        self.context = {"system": system, "operator": operator, "purpose": purpose, "case": case}
        self.last_receipt: Receipt | None = None
        self.last_export_id: str | None = None  # X-Datatong-Export of the last export response

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _auth(self) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._token_until:
            username, password, client_id, secret = self._credentials
            if client_id:
                r = self._http.post("/api/v1/auth/client-token", json={"client_id": client_id, "client_secret": secret})
            else:
                r = self._http.post("/api/v1/auth/token", json={"username": username, "password": password})
            data = self._json(r)
            self._token = str(data["access_token"])
            self._token_until = time.monotonic() + max(30, int(data.get("expires_in", 300)) - 30)
        return {"Authorization": f"Bearer {self._token}"}

    def _headers(self) -> dict[str, str]:
        c = self.context
        return {
            **self._auth(),
            "X-Datatong-System": quote(c["system"]),
            "X-Datatong-Operator": quote(c["operator"]),
            "X-Datatong-Purpose": c["purpose"],
            "X-Datatong-Case": quote(c["case"]),
        }

    @staticmethod
    def _json(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise DatatongError(r.status_code, "http_error", r.text[:200], r.text[:200]) from None
            raise DatatongError(r.status_code, err.get("code", ""), err.get("message", ""), err.get("message_en", ""))
        return r.json()

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        r = self._http.post(path, json=body, headers=self._headers())
        data = self._json(r)
        if "X-Datatong-Receipt" in r.headers:
            self.last_receipt = Receipt(r.headers["X-Datatong-Receipt"], r.content)
        return data

    # ------------------------------------------------------------------ exchange calls

    def query_page(
        self,
        entry: str,
        *,
        items: Sequence[str] | None = None,
        filters: Iterable[tuple[str, str, Any]] = (),
        after: Any = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page: ``{"rows": […], "next": cursor or None, "items": …, "masked_items": …}``."""
        body = {
            "items": list(items) if items else None,
            "filters": [{"item": i, "op": op, "value": v} for i, op, v in filters],
            "after": after,
            "limit": limit,
        }
        return dict(self._post(f"/api/v1/exchange/entries/{quote(entry, safe='')}/query", body))

    def query(
        self,
        entry: str,
        *,
        items: Sequence[str] | None = None,
        filters: Iterable[tuple[str, str, Any]] = (),
        after: Any = None,
        limit: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every row, page after page (pass ``after`` to resume where an earlier run stopped)."""
        filters = list(filters)
        while True:
            page = self.query_page(entry, items=items, filters=filters, after=after, limit=limit)
            yield from page["rows"]
            after = page["next"]
            if after is None:
                return

    def verify(self, entry: str, subjects: Iterable[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """查询核验: ``[(key, {item: claimed value})]`` → per subject
        ``{"key", "found", "items": {item: "match" | "mismatch" | "not_found"}}``."""
        body = {"subjects": [{"key": k, "claims": dict(c)} for k, c in subjects]}
        return list(self._post(f"/api/v1/exchange/entries/{quote(entry, safe='')}/verify", body)["results"])

    # ------------------------------------------------------------------ subscriptions

    def subscribe(
        self, entry: str, *, mode: str = "feed", url: str | None = None, items: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Subscribe to ``entry``'s changes (``mode`` "feed" to pull, "webhook" to be sent
        them at ``url``). A webhook subscription's ``secret`` is in this answer only."""
        body = {"entry": entry, "mode": mode, "url": url, "items": list(items) if items else None}
        return dict(self._post("/api/v1/exchange/subscriptions", body))

    def subscriptions(self) -> list[dict[str, Any]]:
        """The subscriptions of the caller's department."""
        r = self._http.get("/api/v1/exchange/subscriptions", headers=self._headers())
        return list(self._json(r))

    def changes_page(self, subscription_id: int, *, after: int | None = None, limit: int = 500) -> dict[str, Any]:
        """One pull: ``{"changes": [{"id", "offset", "op", "row"}], "next": offset}``.
        Passing ``after`` acknowledges every change up to it."""
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after is not None else {})
        r = self._http.get(
            f"/api/v1/exchange/subscriptions/{subscription_id}/changes", params=params, headers=self._headers()
        )
        data = self._json(r)
        self.last_receipt = Receipt(r.headers["X-Datatong-Receipt"], r.content)
        return dict(data)

    def changes(self, subscription_id: int, *, after: int | None = None, limit: int = 500) -> Iterator[dict[str, Any]]:
        """Every change available now, in order, acknowledging each page as the next is
        asked for. Drop a change whose ``id`` you have applied before (delivery is at
        least once)."""
        while True:
            page = self.changes_page(subscription_id, after=after, limit=limit)
            yield from page["changes"]
            if not page["changes"]:
                return
            after = page["next"]

    def replay(self, subscription_id: int, offset: int) -> dict[str, Any]:
        """Deliver again everything after ``offset`` (e.g. a dead letter's first offset − 1)."""
        return dict(self._post(f"/api/v1/exchange/subscriptions/{subscription_id}/replay", {"offset": offset}))

    # ------------------------------------------------------------------ receipts

    def jwks(self) -> dict[str, Any]:
        return dict(self._json(self._http.get("/.well-known/datatong-keys")))

    def check_receipt(self, receipt: Receipt | None = None, jwks: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Verify a receipt (default: the last one) against the platform's published keys;
        returns its claims or raises."""
        from datatong.exchange.receipts import verify_receipt

        receipt = receipt or self.last_receipt
        if receipt is None:
            raise ValueError("no receipt yet")
        claims = verify_receipt(receipt.header, receipt.body, dict(jwks or self.jwks()))
        return claims.as_dict()

    # ------------------------------------------------------------------ bulk export

    def export(
        self,
        entry: str,
        path: str | os.PathLike[str],
        format: str = "csv",  # noqa: A002 - the platform's parameter name
        items: Sequence[str] | None = None,
        *,
        after: str | None = None,
        retries: int = 5,
        verify: bool = False,
    ) -> int | None:
        """批量导出: stream the rows of ``entry`` into the file ``path`` (``csv``, ``jsonl``
        or ``parquet``) and return the number of rows written (None for Parquet).

        Only complete rows reach the file. When the connection breaks, CSV and JSON Lines
        resume after the last complete row (its key is the first column) — the file ends
        with every row exactly once; Parquet (one file, its footer last) and exports whose
        key item is granted only masked start again. Gives up after ``retries`` breaks in a
        row without progress. Pass ``after`` to start after a key of an earlier run.

        ``last_export_id`` names the export (its signed manifest: :meth:`manifest`); with
        ``verify=True`` the bytes of the last response are checked against the manifest's
        SHA-256 and signature (DatatongError ``exchange.manifest_mismatch`` otherwise)."""
        url = f"/api/v1/exchange/entries/{quote(entry, safe='')}/export"
        rows, last_key, failures = 0, after, 0
        header_written = False
        with open(path, "wb") as out:
            while True:
                params: list[tuple[str, str | int | float | bool | None]] = [
                    ("format", format),
                    *[("items", i) for i in items or []],
                ]
                if last_key is not None:
                    params.append(("after", str(last_key)))
                before = rows
                try:
                    with self._http.stream("GET", url, params=params, headers=self._headers()) as r:
                        if r.status_code >= 400:
                            r.read()
                            self._json(r)
                        self.last_export_id = r.headers.get("X-Datatong-Export")
                        digest = hashlib.sha256()
                        restart = format == "parquet" or r.headers.get("X-Datatong-Resume", "restart") == "restart"
                        if restart:
                            out.seek(0)
                            out.truncate()
                            for chunk in r.iter_bytes():
                                digest.update(chunk)
                                out.write(chunk)
                            out.flush()
                            if verify:
                                self._verify_export(digest.hexdigest())
                            return None if format == "parquet" else _count_rows(path, format)
                        pending = b""
                        expect_header = format == "csv"
                        for chunk in r.iter_bytes():
                            digest.update(chunk)
                            pending += chunk
                            ends = _row_ends(pending, csv_quotes=format == "csv")
                            if not ends:
                                continue
                            start = 0
                            if expect_header:
                                start = ends.pop(0)
                                expect_header = False
                                if not header_written:
                                    out.write(pending[:start])
                                    header_written = True
                            if ends:
                                out.write(pending[start : ends[-1]])
                                rows += len(ends)
                                last = pending[(ends[-2] if len(ends) > 1 else start) : ends[-1]]
                                last_key = _first_value(last, format)
                                start = ends[-1]
                            pending = pending[start:]
                        if pending.strip():  # a last row without its line end
                            out.write(pending)
                            rows += 1
                        if verify:
                            self._verify_export(digest.hexdigest())
                        return rows
                except httpx.TransportError:
                    failures = 0 if rows > before else failures + 1
                    if failures > retries:
                        raise
                    out.flush()
                    time.sleep(min(0.2 * 2**failures, 5.0))

    def manifest(self, export_id: str) -> dict[str, Any]:
        """The signed manifest of a finished export (rows, bytes, SHA-256, items, grant, …)."""
        r = self._http.get(f"/api/v1/exchange/exports/{quote(export_id, safe='')}/manifest", headers=self._auth())
        return dict(self._json(r))

    def _verify_export(self, sha256: str) -> dict[str, Any]:
        from datatong.exchange.receipts import verify_manifest

        if self.last_export_id is None:
            raise DatatongError(0, "exchange.manifest_missing", "导出应答中没有导出编号", "The export has no export id")
        doc = verify_manifest(self.manifest(self.last_export_id), self.jwks())
        if doc.get("sha256") != sha256:
            raise DatatongError(
                0,
                "exchange.manifest_mismatch",
                "收到的内容与导出清单的 SHA-256 不符",
                "The bytes received do not match the export manifest's SHA-256",
            )
        return doc


def _row_ends(data: bytes, *, csv_quotes: bool) -> list[int]:
    """Offsets just after each complete row of ``data``: a line end outside quotes (CSV
    quotes by doubling; JSON Lines never has a raw line end inside a row). UTF-8 never
    has the bytes of ``"`` or a line end inside another character."""
    ends: list[int] = []
    pos = quotes = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return ends
        if csv_quotes:
            quotes += data.count(b'"', pos, nl)
        if quotes % 2 == 0:
            ends.append(nl + 1)
            quotes = 0
        pos = nl + 1


def _first_value(row: bytes, format: str) -> str:  # noqa: A002
    """The key (the first column) of one complete row."""
    text = row.decode("utf-8-sig")
    if format == "csv":
        return next(csv.reader(io.StringIO(text)))[0]
    value = next(iter(json.loads(text).values()))
    return str(value)


def _count_rows(path: str | os.PathLike[str], format: str) -> int:  # noqa: A002
    with open(path, "rb") as f:
        data = f.read()
    rows = len(_row_ends(data, csv_quotes=format == "csv"))
    return rows - 1 if format == "csv" and rows else rows
