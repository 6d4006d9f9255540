"""API shapes of sharing. Types are checked here; the rules live in service.py."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from datatong.apitypes import UtcDateTime


class ApplicationIn(BaseModel):
    entry_id: int = Field(description="申请的信息资源（有条件共享）")
    purpose_kind: str = Field(
        max_length=32,
        description="用途：administrative_basis 行政依据 / work_reference 工作参考 / "
        "verification 数据校核 / collaboration 业务协同 / other 其他",
    )
    purpose: str = Field(max_length=4000, description="用途说明")
    legal_basis: str = Field(max_length=4000, description="申请依据（法律法规、文件）")
    items: list[str] = Field(max_length=2000, description="所需信息项名称（须为该信息资源的信息项）")
    period_start: date = Field(description="使用期限开始")
    period_end: date = Field(description="使用期限结束")
    rows_per_day: int = Field(ge=1, le=10**9, description="预计每日数据量（条）")
    calls_per_minute: int | None = Field(default=None, ge=1, le=10**6, description="预计每分钟调用次数，默认 60")
    system_name: str | None = Field(default=None, max_length=200, description="使用数据的应用系统名称")
    client_id: str | None = Field(default=None, max_length=64, description="使用数据的应用系统（客户端 ID）")


class SubmitIn(BaseModel):
    accept_commitment: StrictBool = Field(description="签署数据安全承诺（必须为 true）")


class ReasonIn(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class ReviewIn(BaseModel):
    decision: str = Field(description="pass（通过）或 return（退回，须填理由）")
    reason: str | None = Field(default=None, max_length=2000)


class ApprovalIn(BaseModel):
    items: list[str] | None = Field(default=None, max_length=2000, description="同意的信息项（默认为申请的全部）")
    valid_from: date | None = None
    valid_to: date | None = None
    rows_per_day: int | None = Field(default=None, ge=1, le=10**9)
    calls_per_minute: int | None = Field(default=None, ge=1, le=10**6)
    clear_items: list[str] = Field(default_factory=list, max_length=2000, description="不脱敏提供的信息项")


class DecisionIn(ApprovalIn):
    decision: str = Field(description="approve 同意 / partial 部分同意 / reject 不同意")
    reason: str | None = Field(default=None, max_length=2000, description="部分同意、不同意时必填")


class CoordinateIn(ApprovalIn):
    decision: str = Field(description="approve 同意 / partial 部分同意 / uphold 维持不予共享")
    reason: str | None = Field(default=None, max_length=2000, description="部分同意、维持时必填")


class UnconditionalIn(BaseModel):
    entry_id: int
    purpose_kind: str = Field(max_length=32)
    purpose: str | None = Field(default=None, max_length=4000)
    items: list[str] | None = Field(default=None, max_length=2000)
    client_id: str | None = Field(default=None, max_length=64)


class GrantChangeIn(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class RenewIn(BaseModel):
    valid_to: date = Field(description="新的截止日期（须晚于原截止日期）")
    reason: str | None = Field(default=None, max_length=2000)


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    action: str
    from_status: str | None
    to_status: str
    actor_name: str
    reason: str | None
    created_at: UtcDateTime


class ApplicationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    entry_id: int
    entry_code: str
    entry_name: str
    provider_code: str
    consumer_code: str
    system_name: str
    client_app_id: int | None
    purpose_kind: str
    purpose_label: str
    purpose: str
    legal_basis: str
    items: list[str]
    period_start: date
    period_end: date
    rows_per_day: int
    calls_per_minute: int
    commitment_version: str | None
    commitment_at: UtcDateTime | None
    status: str
    status_label: str
    compliance_review: bool
    submitted_at: UtcDateTime | None
    due_at: date | None
    due_provisional: bool = Field(
        False, description="期限按周末暂估：所跨年份尚未导入节假日安排（DATATONG_CALENDAR_FALLBACK=weekends）"
    )
    overdue: bool
    decision_reason: str | None
    decided_at: UtcDateTime | None
    approved_items: list[str] | None
    approved_start: date | None
    approved_end: date | None
    approved_rows_per_day: int | None
    approved_calls_per_minute: int | None
    grant_id: int | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class ApplicationDetail(ApplicationOut):
    history: list[EventOut]


class GrantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    consumer_code: str
    provider_code: str
    client_app_id: int | None
    system_name: str | None
    entry_id: int
    entry_code: str
    items: list[str]
    clear_items: list[str]
    purpose_kind: str
    valid_from: date
    valid_to: date | None
    rows_per_day: int | None
    calls_per_minute: int | None
    status: str
    status_label: str
    status_reason: str | None
    source: str
    application_id: int | None
    created_at: UtcDateTime


class SharingSettings(BaseModel):
    compliance_review: StrictBool = Field(description="提交的申请是否先经平台管理员符合性审查")


class CalendarYearOut(BaseModel):
    year: int
    source: str = Field(description="platform：平台管理员导入；package：chinesecalendar 内置")
    notice: str | None
    imported_by: str | None
    imported_at: UtcDateTime | None


class CalendarDayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    day: date
    is_working: bool
    name: str | None


class CalendarYearDetail(CalendarYearOut):
    days: list[CalendarDayOut]


class CalendarImportIn(BaseModel):
    """One year's holiday arrangement: the days that differ from the plain week."""

    notice: str = Field(min_length=1, max_length=200, description="通知文号或标题")
    holidays: list[dict[str, str] | str] = Field(default_factory=list, description="放假日：日期或 {from,to,name}")
    workdays: list[dict[str, str] | str] = Field(default_factory=list, description="调休上班日")


class CalendarImportOut(CalendarYearDetail):
    due_dates_moved: int = Field(description="因日历变化而重算期限的申请数")


class ApplicationPatch(BaseModel):
    """Changes to a draft; fields left out keep their value."""

    purpose_kind: str | None = Field(default=None, max_length=32)
    purpose: str | None = Field(default=None, max_length=4000)
    legal_basis: str | None = Field(default=None, max_length=4000)
    items: list[str] | None = Field(default=None, max_length=2000)
    period_start: date | None = None
    period_end: date | None = None
    rows_per_day: int | None = Field(default=None, ge=1, le=10**9)
    calls_per_minute: int | None = Field(default=None, ge=1, le=10**6)
    system_name: str | None = Field(default=None, max_length=200)
    client_id: str | None = Field(default=None, max_length=64)


class TransferIn(BaseModel):
    department_code: str = Field(min_length=1, max_length=32, description="接收授权的部门代码")
    system_name: str | None = Field(default=None, max_length=200, description="接收部门的应用系统名称")
    client_id: str | None = Field(default=None, max_length=64, description="接收部门的应用系统（客户端 ID）")
    reason: str | None = Field(default=None, max_length=2000, description="转移理由（必填）")


class CaseIn(BaseModel):
    entry_id: int = Field(description="不予共享的信息资源")
    duty: str = Field(max_length=4000, description="履职需要：哪项职责需要该数据")
    legal_basis: str = Field(max_length=4000, description="法律法规依据")
    items: list[str] = Field(default_factory=list, max_length=2000, description="所需信息项（可选）")


class CaseResolveIn(BaseModel):
    decision: str = Field(description="upheld 维持不予共享 / referred 协调提供方调整共享属性")
    resolution: str | None = Field(default=None, max_length=4000, description="协调意见（必填）")


class CaseOut(BaseModel):
    id: int
    entry_id: int
    entry_code: str
    entry_name: str
    provider_code: str
    consumer_code: str
    duty: str
    legal_basis: str
    items: list[str]
    status: str
    status_label: str
    resolution: str | None
    resolved_at: UtcDateTime | None
    created_at: UtcDateTime
    no_share_basis: str | None = Field(description="不予共享依据：仅平台管理员和提供方可见")


class MaskingRuleOut(BaseModel):
    kind: str
    label: str
    mode: str = Field(description="default 内置规则 / keep 保留首尾 / full 全部遮蔽 / none 不脱敏")
    head: int | None
    tail: int | None
    description: str
    example: str | None = Field(description="示例值脱敏后的样子")


class MaskingRuleIn(BaseModel):
    mode: str = Field(max_length=16)
    head: int | None = Field(default=None, ge=0, le=8)
    tail: int | None = Field(default=None, ge=0, le=8)


class MaskingRulesIn(BaseModel):
    rules: dict[str, MaskingRuleIn] = Field(description="类型 → 规则；未列出的类型恢复内置规则")
