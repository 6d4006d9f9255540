"""HTTP API of the inbox (/api/v1/inbox) and of department webhooks
(/api/v1/sharing/webhooks/{department_code}). Rules: notify.py; sending: jobs.py."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Depends, Query
from pydantic import BaseModel, Field, StrictBool
from sqlalchemy.orm import Session

from datatong.apitypes import UtcDateTime
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.sharing import jobs, notify
from datatong.sharing.models import INBOX_KINDS, DepartmentWebhook, InboxMessage, WebhookDelivery
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(tags=["站内消息与 Webhook inbox"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)


class MessageOut(BaseModel):
    id: int
    kind: str = Field(description="消息类型：" + "、".join(f"{k} {v}" for k, v in INBOX_KINDS.items()))
    kind_label: str
    title: str
    body: str | None
    link: str | None = Field(description="相关页面路径，如 /sharing/applications/12")
    application_id: int | None
    grant_id: int | None
    need_id: int | None
    read_at: UtcDateTime | None
    created_at: UtcDateTime


class InboxOut(BaseModel):
    items: list[MessageOut]
    unread: int = Field(description="未读消息数（不受分页与 unread_only 影响）")
    total: int = Field(description="符合条件的消息总数")


class ReadAllOut(BaseModel):
    updated: int = Field(description="本次标为已读的消息数")


def message_out(m: InboxMessage) -> MessageOut:
    return MessageOut.model_validate(
        {
            **{c: getattr(m, c) for c in MessageOut.model_fields if hasattr(m, c)},
            "kind_label": INBOX_KINDS.get(m.kind, m.kind),
        }
    )


@router.get("/api/v1/inbox", response_model=InboxOut, summary="我的站内消息（新到旧）")
def inbox(
    unread_only: bool = Query(False, description="只看未读"),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=10**9),
    session: Session = Db,
    principal: Principal = Who,
) -> InboxOut:
    items, unread, total = notify.list_inbox(session, principal, unread_only=unread_only, limit=limit, offset=offset)
    return InboxOut(items=[message_out(m) for m in items], unread=unread, total=total)


@router.post("/api/v1/inbox/read-all", response_model=ReadAllOut, summary="全部标为已读")
def read_all(session: Session = Db, principal: Principal = Who) -> ReadAllOut:
    return ReadAllOut(updated=notify.mark_all_read(session, principal))


@router.post("/api/v1/inbox/{message_id}/read", response_model=MessageOut, summary="标为已读（仅本人的消息）")
def read(message_id: int, session: Session = Db, principal: Principal = Who) -> MessageOut:
    return message_out(notify.mark_read(session, principal, message_id))


# ---------------------------------------------------------------- department webhooks

WEBHOOKS = "/api/v1/sharing/webhooks/{department_code}"


class WebhookIn(BaseModel):
    url: str = Field(max_length=500, description="接收地址（http:// 或 https://）")
    enabled: StrictBool = Field(default=True, description="是否推送新事件")
    rotate_secret: StrictBool = Field(default=False, description="重新生成签名密钥（旧密钥立即失效）")


class DeliveryOut(BaseModel):
    id: int
    event: str
    status: str = Field(description="pending 待发送 / delivered 已送达 / dead 已放弃")
    attempts: int
    next_attempt_at: UtcDateTime
    last_error: str | None
    created_at: UtcDateTime
    delivered_at: UtcDateTime | None


class WebhookOut(BaseModel):
    department_code: str
    url: str
    enabled: bool
    created_at: UtcDateTime
    updated_at: UtcDateTime
    secret: str | None = Field(
        default=None, description="签名密钥：仅在创建或重新生成时返回一次，请妥善保存（平台只保存加密后的密钥）"
    )
    signature: str = Field(
        default="X-Datatong-Signature: sha256=HMAC-SHA256(secret, timestamp + '.' + body)，"
        "timestamp 为 X-Datatong-Timestamp（Unix 秒）"
    )
    recent_deliveries: list[DeliveryOut] = Field(default_factory=list, description="最近 20 次推送")


class PingOut(BaseModel):
    delivery: DeliveryOut


def webhook_out(session: Session, code: str, hook: DepartmentWebhook, secret: str | None = None) -> WebhookOut:
    deliveries = [
        DeliveryOut.model_validate(d, from_attributes=True)
        for d in notify.recent_deliveries(session, hook.department_id)
    ]
    return WebhookOut(
        department_code=code,
        url=hook.url,
        enabled=hook.enabled,
        created_at=hook.created_at,
        updated_at=hook.updated_at,
        secret=secret,
        recent_deliveries=deliveries,
    )


@router.get(WEBHOOKS, response_model=WebhookOut, summary="部门 Webhook 配置与最近推送（本部门管理员、平台管理员）")
def get_webhook(department_code: str, session: Session = Db, principal: Principal = Who) -> WebhookOut:
    department, hook = notify.get_webhook(session, principal, department_code)
    return webhook_out(session, department.code, hook)


@router.put(WEBHOOKS, response_model=WebhookOut, summary="设置部门 Webhook（创建或轮换时返回一次签名密钥）")
def put_webhook(
    department_code: str,
    body: WebhookIn,
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
) -> WebhookOut:
    department, hook, secret = notify.put_webhook(
        session,
        settings,
        principal,
        department_code,
        url=body.url,
        enabled=body.enabled,
        rotate_secret=body.rotate_secret,
    )
    return webhook_out(session, department.code, hook, secret)


@router.delete(WEBHOOKS, status_code=204, summary="删除部门 Webhook")
def delete_webhook(department_code: str, session: Session = Db, principal: Principal = Who) -> None:
    notify.delete_webhook(session, principal, department_code)


@router.post(
    WEBHOOKS + "/test", response_model=PingOut, status_code=202, summary="发送一次 ping 测试推送（响应后立即发送）"
)
def test_webhook(
    department_code: str,
    background: BackgroundTasks,
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
) -> PingOut:
    _hook, delivery = notify.queue_ping(session, principal, department_code)
    # Committed now and sent after the response: the sender must see the row, and no
    # transaction (on SQLite: the write lock) may stay open across a call to another server.
    session.commit()
    background.add_task(jobs.deliver_one, settings.database_url, settings, delivery.id)
    return PingOut(delivery=_delivery_out(delivery))


def _delivery_out(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut.model_validate(d, from_attributes=True)
