"""API shapes of the exchange calls (query, verification)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from datatong.exchange.service import MAX_PAGE, MAX_SUBJECTS


class FilterIn(BaseModel):
    item: str = Field(max_length=200, description="按哪个信息项筛选（须已授权）")
    op: Literal["eq", "in", "range", "prefix"] = Field("eq", description="eq 等于 / in 属于 / range 区间 / prefix 前缀")
    value: Any = Field(description="eq、prefix：一个值；in：数组（≤1000）；range：[下限, 上限]，任一端可为 null")


class QueryIn(BaseModel):
    items: list[str] | None = Field(None, max_length=500, description="需要的信息项；省略为授权的全部信息项")
    filters: list[FilterIn] = Field(default_factory=list, max_length=20)
    after: Any = Field(None, description="上一页返回的 next，取下一页")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description=f"每页条数（≤{MAX_PAGE}，计入每日数据量配额）")


class QueryOut(BaseModel):
    entry: str
    items: list[str]
    masked_items: list[str] = Field(description="已脱敏的信息项")
    rows: list[dict[str, Any]]
    next: Any = Field(description="下一页游标；null 表示已到末尾")
    grant_id: int | None


class SubjectIn(BaseModel):
    key: str = Field(min_length=1, max_length=100, description="对象标识（如身份证号、统一社会信用代码）")
    claims: dict[str, str | int | float | bool | None] = Field(description="申报值：信息项 → 值")


class VerifyIn(BaseModel):
    subjects: list[SubjectIn] = Field(
        min_length=1, max_length=MAX_SUBJECTS, description=f"每次 1–{MAX_SUBJECTS} 个对象"
    )


class SubjectResult(BaseModel):
    key: str
    found: bool
    items: dict[str, Literal["match", "mismatch", "not_found"]]


class VerifyOut(BaseModel):
    entry: str
    results: list[SubjectResult]
    grant_id: int | None
