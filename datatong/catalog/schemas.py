"""API shapes of the catalog. Types are checked here; the rules live in service.py."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from datatong.apitypes import UtcDateTime


class ItemIn(BaseModel):
    name: str = Field(max_length=200, description="信息项名称")
    code: str | None = Field(default=None, max_length=64, description="信息项代码")
    data_type: str = Field(max_length=2, description="数据类型 C/N/Y/D/T/L/M/G/B/I/F")
    length: int | None = Field(default=None, ge=1, le=1_000_000, description="长度")
    description: str | None = Field(default=None, max_length=2000)
    sensitivity: str = Field(default="internal", max_length=16, description="public/internal/sensitive/personal")
    is_authoritative: bool = Field(default=False, description="本部门是否为权威来源")


class EntryIn(BaseModel):
    """Everything an officer states about an information resource (编制指南 fields)."""

    name: str = Field(max_length=300, description="信息资源名称")
    class_code: str = Field(max_length=32, description="信息资源分类代码（类/项/目/细目）")
    provider_code: str | None = Field(
        default=None, max_length=32, description="提供方代码；默认是当前用户所在部门，仅平台管理员可代其他部门编目"
    )
    provider_unit: str | None = Field(default=None, max_length=200, description="提供方内部部门")
    summary: str = Field(max_length=4000, description="摘要")
    keywords: str | None = Field(default=None, max_length=500, description="关键字，逗号分隔")
    format_category: str = Field(max_length=32, description="信息资源格式分类")
    format_type: str | None = Field(default=None, max_length=64, description="格式类型，如 xlsx")
    share_type: str = Field(max_length=16, description="unconditional/conditional/none")
    share_condition: str | None = Field(default=None, max_length=4000)
    no_share_basis: str | None = Field(default=None, max_length=4000, description="不予共享依据")
    share_method: str | None = Field(default=None, max_length=16)
    share_subtype: str | None = Field(default=None, max_length=16)
    is_open: bool = False
    open_condition: str | None = Field(default=None, max_length=4000)
    update_cycle: str = Field(max_length=16)
    release_date: date | None = None
    related_codes: str | None = Field(default=None, max_length=500)
    source_system: str | None = Field(default=None, max_length=200)
    online_url: str | None = Field(default=None, max_length=500)
    service_info: str | None = Field(default=None, max_length=4000)
    metadata_maintainer: str | None = Field(default=None, max_length=200)
    code: str | None = Field(
        default=None,
        max_length=80,
        description="已有的信息资源代码（仅导入时使用，如 GB/T 21063.5 标识符）；留空则自动生成",
    )
    items: list[ItemIn] = Field(default_factory=list, max_length=2000)


class EntryCreate(EntryIn):
    reason: str | None = Field(default=None, max_length=2000, description="编目说明")


class EntryUpdate(EntryIn):
    reason: str = Field(max_length=2000, description="修改原因（必填）")


class ReasonIn(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class ReviewIn(BaseModel):
    decision: str = Field(description="approve 或 reject")
    reason: str | None = Field(default=None, max_length=2000, description="驳回时必填")


class ItemOut(ItemIn):
    model_config = ConfigDict(from_attributes=True)
    id: int
    data_type_label: str = ""
    sensitivity_label: str = ""


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str
    class_code: str
    class_name: str
    catalog_type: str
    provider_code: str
    provider_name: str
    provider_unit: str | None
    summary: str
    keywords: str | None
    format_category: str
    format_type: str | None
    share_type: str
    share_condition: str | None
    no_share_basis: str | None
    share_method: str | None
    share_subtype: str | None
    is_open: bool
    open_condition: str | None
    update_cycle: str
    release_date: date | None
    related_codes: str | None
    source_system: str | None
    online_url: str | None
    service_info: str | None
    metadata_maintainer: str | None
    metadata_updated_at: date | None
    status: str
    status_label: str
    version: int
    created_at: UtcDateTime
    modified_at: UtcDateTime
    items: list[ItemOut]
    items_changed_at: UtcDateTime | None = Field(None, description="报告数据项变更的时间")
    update_due_at: date | None = Field(None, description="数据项变更后更新目录的截止日期（15 个工作日）")
    update_overdue: bool = Field(False, description="已超过目录更新期限")


class EntrySummary(BaseModel):
    id: int
    code: str
    name: str
    summary: str
    provider_code: str
    provider_name: str
    class_code: str
    share_type: str
    update_cycle: str
    format_category: str
    is_open: bool
    status: str
    modified_at: UtcDateTime
    update_due_at: date | None = Field(None, description="数据项变更后更新目录的截止日期（仅待更新列表）")


class FacetValue(BaseModel):
    value: str
    label: str
    count: int


class SearchOut(BaseModel):
    total: int
    results: list[EntrySummary]
    next_cursor: str | None
    facets: dict[str, list[FacetValue]]


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    version: int
    action: str
    status: str
    actor_name: str
    reason: str | None
    changes: list[dict[str, Any]]
    created_at: UtcDateTime


class ClassIn(BaseModel):
    code: str = Field(max_length=32, description="完整分类代码，如 101 或 101001")
    name: str = Field(max_length=100)
    description: str | None = Field(default=None, max_length=2000)


class ClassUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=2000)


class ClassOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    code: str
    name: str
    level: int
    parent_id: int | None
    description: str | None


class ItemChangeIn(BaseModel):
    note: str = Field(min_length=1, max_length=2000, description="数据项如何变化（新增、删除、改名、改类型……）")
