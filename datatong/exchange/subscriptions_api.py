"""HTTP API of subscriptions (/api/v1/exchange/subscriptions): subscribe to an entry's
changes by webhook or feed, pull the feed, replay, pause, cancel, see dead letters.

Subscribing and pulling are exchange calls: they need the request context headers
(``X-Datatong-System/Operator/Purpose/Case``) and go through ``authorize``. The feed's
answers carry a signed receipt like query answers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from datatong.exchange import receipts, subscriptions
from datatong.exchange.bus import bus_for
from datatong.exchange.context import RequestContext, exchange_context
from datatong.exchange.models import SUBSCRIPTION_MODES, SUBSCRIPTION_STATUS, Subscription
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(prefix="/api/v1/exchange/subscriptions", tags=["订阅 subscriptions"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)
Ctx = Depends(exchange_context)


class SubscriptionIn(BaseModel):
    entry: str = Field(min_length=1, max_length=64, description="信息资源代码")
    mode: str = Field("webhook", description="webhook 推送 / feed 拉取")
    url: str | None = Field(None, max_length=500, description="推送地址（mode=webhook 时必填）")
    items: list[str] | None = Field(None, max_length=500, description="需要的信息项；省略为授权的全部信息项")


class SubscriptionOut(BaseModel):
    id: int
    entry: str
    mode: str
    mode_label: str
    url: str | None
    items: list[str]
    system: str
    operator: str
    purpose: str
    case: str | None
    status: str
    status_label: str
    position: int = Field(description="已送达（推送）或已确认（拉取）的最后偏移量")
    delivered: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_by: str
    created_at: datetime
    secret: str | None = Field(None, description="推送签名密钥：仅在创建时返回一次")


class ReplayIn(BaseModel):
    offset: int = Field(ge=0, description="从该偏移量之后重新推送（0 为总线保留的全部）")


class DeadLetterOut(BaseModel):
    id: int
    first_offset: int
    last_offset: int
    changes: int
    attempts: int
    error: str | None
    created_at: datetime


class ChangeOut(BaseModel):
    id: str = Field(description="变更标识：重复送达时相同，据此去重")
    offset: int
    op: str
    row: dict[str, Any]


class FeedOut(BaseModel):
    subscription: int
    entry: str
    changes: list[ChangeOut]
    next: int = Field(description="下次以 after=next 拉取（同时确认此前的变更）")
    grant_id: int | None


def _out(session: Session, sub: Subscription, secret: str | None = None) -> SubscriptionOut:
    return SubscriptionOut(
        id=sub.id,
        entry=subscriptions.entry_code_of(session, sub),
        mode=sub.mode,
        mode_label=SUBSCRIPTION_MODES.get(sub.mode, sub.mode),
        url=sub.url,
        items=json.loads(sub.items),
        system=sub.system,
        operator=sub.operator,
        purpose=sub.purpose,
        case=sub.case_no,
        status=sub.status,
        status_label=SUBSCRIPTION_STATUS.get(sub.status, sub.status),
        position=sub.position,
        delivered=sub.delivered,
        attempts=sub.attempts,
        next_attempt_at=sub.next_attempt_at,
        last_error=sub.last_error,
        created_by=sub.created_by,
        created_at=sub.created_at,
        secret=secret,
    )


@router.post("", response_model=SubscriptionOut, status_code=201, summary="订阅信息资源的变更（需持有授权）")
def create(
    body: SubscriptionIn,
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
    ctx: RequestContext = Ctx,
) -> SubscriptionOut:
    sub, secret = subscriptions.create(
        session,
        settings,
        bus_for(settings),
        principal,
        entry_code=body.entry,
        mode=body.mode,
        url=body.url,
        items=body.items,
        ctx=ctx,
    )
    return _out(session, sub, secret)


@router.get("", response_model=list[SubscriptionOut], summary="本部门的订阅（平台管理员：全部）")
def list_subscriptions(
    entry: str | None = Query(None, max_length=64), session: Session = Db, principal: Principal = Who
) -> list[SubscriptionOut]:
    return [_out(session, s) for s in subscriptions.list_for(session, principal, entry)]


@router.get("/{subscription_id}", response_model=SubscriptionOut, summary="订阅详情")
def get(subscription_id: int, session: Session = Db, principal: Principal = Who) -> SubscriptionOut:
    return _out(session, subscriptions.get(session, principal, subscription_id))


@router.delete("/{subscription_id}", response_model=SubscriptionOut, summary="取消订阅")
def cancel(subscription_id: int, session: Session = Db, principal: Principal = Who) -> SubscriptionOut:
    return _out(session, subscriptions.cancel(session, principal, subscription_id))


@router.post("/{subscription_id}/pause", response_model=SubscriptionOut, summary="暂停推送")
def pause(subscription_id: int, session: Session = Db, principal: Principal = Who) -> SubscriptionOut:
    return _out(session, subscriptions.set_paused(session, principal, subscription_id, True))


@router.post("/{subscription_id}/resume", response_model=SubscriptionOut, summary="恢复推送")
def resume(subscription_id: int, session: Session = Db, principal: Principal = Who) -> SubscriptionOut:
    return _out(session, subscriptions.set_paused(session, principal, subscription_id, False))


@router.post("/{subscription_id}/replay", response_model=SubscriptionOut, summary="从指定偏移量重新推送")
def replay(
    subscription_id: int, body: ReplayIn, session: Session = Db, principal: Principal = Who, settings: Settings = Conf
) -> SubscriptionOut:
    return _out(session, subscriptions.replay(session, bus_for(settings), principal, subscription_id, body.offset))


@router.get("/{subscription_id}/dead-letters", response_model=list[DeadLetterOut], summary="死信：多次推送失败的批次")
def dead_letters(subscription_id: int, session: Session = Db, principal: Principal = Who) -> list[DeadLetterOut]:
    return [
        DeadLetterOut(
            id=d.id,
            first_offset=d.first_offset,
            last_offset=d.last_offset,
            changes=d.changes,
            attempts=d.attempts,
            error=d.error,
            created_at=d.created_at,
        )
        for d in subscriptions.dead_letters(session, principal, subscription_id)
    ]


@router.get("/{subscription_id}/changes", response_model=FeedOut, summary="拉取变更（按偏移量，自动脱敏，留痕）")
def changes(
    subscription_id: int,
    request: Request,
    after: int | None = Query(None, ge=0, description="上次返回的 next；省略为上次确认的位置"),
    limit: int = Query(500, ge=1, le=subscriptions.MAX_FEED),
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
    ctx: RequestContext = Ctx,
) -> Response:
    body = subscriptions.feed(
        session, settings, bus_for(settings), principal, subscription_id, after=after, limit=limit, ctx=ctx
    )
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    request_hash = receipts.hash_request(request.method, request.url.path, str(request.url.query), b"")
    receipt = receipts.make_receipt(
        settings.keys_path, request_hash, data, body["grant_id"], principal.department_code or "", body["entry"], ctx
    )
    return Response(data, media_type="application/json", headers={"X-Datatong-Receipt": receipt.header_value()})
