"""API shapes of supply–demand docking (供需对接). Types are checked here; the rules live in needs.py."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from datatong.apitypes import UtcDateTime


class NeedIn(BaseModel):
    title: str = Field(max_length=300, description="需求名称，如“全市新生儿出生登记信息”")
    description: str = Field(max_length=8000, description="需求描述：需要什么数据、范围、时效")
    items: list[str] = Field(max_length=200, description="所需数据项名称（每项不超过 200 字）")
    purpose_kind: str = Field(
        max_length=32,
        description="用途：administrative_basis 行政依据 / work_reference 工作参考 / "
        "verification 数据校核 / collaboration 业务协同 / other 其他",
    )
    purpose: str = Field(max_length=4000, description="用途说明")


class RouteIn(BaseModel):
    department_code: str = Field(max_length=32, description="分派给的部门代码（可能的数据提供部门）")
    reason: str | None = Field(default=None, max_length=2000, description="分派说明（可选）")


class AnswerIn(BaseModel):
    answer: str = Field(max_length=16, description="will_publish 将编目发布 / cannot 无法提供")
    text: str | None = Field(
        default=None, max_length=4000, description="编目发布计划，或无法提供的理由（答复 cannot 时必填）"
    )
    entry_id: int | None = Field(
        default=None,
        description="本部门对应的信息资源（答复 will_publish 时可选；已发布的则需求随即关闭）",
    )


class CloseIn(BaseModel):
    entry_id: int | None = Field(default=None, description="满足需求的已发布信息资源（可选）")
    reason: str | None = Field(default=None, max_length=2000, description="关闭说明（可选）")


class NeedOut(BaseModel):
    id: int
    title: str = Field(description="需求名称")
    description: str = Field(description="需求描述")
    items: list[str] = Field(description="所需数据项")
    purpose_kind: str = Field(description="用途类别")
    purpose_label: str = Field(description="用途类别（中文）")
    purpose: str = Field(description="用途说明")
    status: str = Field(description="状态：open / routed / will_publish / cannot / closed")
    status_label: str = Field(description="状态（中文）：待分派 / 待部门答复 / 将编目发布 / 无法提供 / 已关闭")
    consumer_code: str = Field(description="提出需求的部门代码")
    consumer_name: str = Field(description="提出需求的部门名称")
    routed_to_code: str | None = Field(description="被分派的部门代码")
    routed_to_name: str | None = Field(description="被分派的部门名称")
    routed_at: UtcDateTime | None = Field(description="分派时间")
    due_at: date | None = Field(description="答复期限（工作日计算）")
    due_provisional: bool = Field(
        False, description="期限按周末暂估：所跨年份尚未导入节假日安排（DATATONG_CALENDAR_FALLBACK=weekends）"
    )
    overdue: bool = Field(description="已分派且超过答复期限仍未答复")
    answer: str | None = Field(description="答复内容：编目发布计划或无法提供的理由")
    answered_at: UtcDateTime | None = Field(description="答复时间")
    entry_id: int | None = Field(description="关联的信息资源")
    entry_code: str | None = Field(None, description="关联信息资源的代码（已发布的）")
    entry_name: str | None = Field(None, description="关联信息资源的名称（已发布的）")
    closed_at: UtcDateTime | None = Field(description="关闭时间")
    created_at: UtcDateTime = Field(description="提出时间")
    updated_at: UtcDateTime = Field(description="最后变更时间")


class NeedEventOut(BaseModel):
    action: str = Field(description="操作：post / route / answer / close")
    label: str = Field(description="操作（中文）")
    actor: str = Field(description="操作人")
    actor_department: str | None = Field(description="操作人所在部门代码")
    from_status: str | None
    to_status: str | None
    reason: str | None = Field(description="理由或说明")
    occurred_at: str = Field(description="时间（UTC，ISO-8601）")


class NeedDetail(NeedOut):
    history: list[NeedEventOut] = Field(description="流转记录（取自审计日志）")
