"""API shapes of the audit trail. Types only; scope and filters live in query.py."""

from __future__ import annotations

from pydantic import BaseModel, Field

from datatong.audit import labels
from datatong.audit.models import AuditRecord


class AuditRecordOut(BaseModel):
    """One record exactly as stored (and hashed), plus Chinese labels of its codes."""

    seq: int = Field(description="序号（链上位置）")
    occurred_at: str = Field(description="发生时间，ISO-8601 UTC，如 2026-11-22T01:36:28.123456Z")
    occurred_at_local: str = Field(description="发生时间（北京时间）")
    actor_kind: str = Field(description="user/client/node/anonymous/system")
    actor_kind_label: str
    actor: str = Field(description="用户名或应用编号")
    actor_department: str | None = Field(description="操作者所在部门代码")
    action: str = Field(description="操作代码，如 catalog.entry.update")
    action_label: str = Field(description="操作名称；未知操作为其代码")
    resource: str | None = Field(description="资源，如信息资源代码或 user:ga_officer")
    subject_department: str | None = Field(description="数据或资源所属部门代码")
    items: str | None = Field(description="涉及的信息项，逗号分隔")
    purpose: str | None = Field(description="用途")
    grant_id: int | None = Field(description="共享授权编号")
    rows: int | None = Field(description="行数")
    outcome: str = Field(description="allowed/refused")
    outcome_label: str = Field(description="允许/拒绝")
    reason: str | None = Field(description="拒绝原因代码")
    request_id: str | None
    client_addr: str | None
    detail: str | None = Field(description="详情 JSON 文本（与哈希计算时一致）")
    alg: str = Field(description="哈希算法 sha256/sm3")
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        return cls(
            **{name: getattr(record, name) for name in _STORED},
            occurred_at_local=labels.local_time(record.occurred_at),
            actor_kind_label=labels.actor_kind_label(record.actor_kind),
            action_label=labels.action_label(record.action),
            outcome_label=labels.outcome_label(record.outcome),
        )


_STORED = tuple(c.name for c in AuditRecord.__table__.columns)


class AuditPage(BaseModel):
    items: list[AuditRecordOut]
    next_cursor: str | None = Field(description="下一页游标；为空表示没有更多记录")
