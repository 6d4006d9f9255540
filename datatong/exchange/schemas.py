"""API shapes of data sources (/api/v1/exchange/sources). Secrets go in, never out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from datatong.apitypes import UtcDateTime

NAME = Field(max_length=200)


class SourceIn(BaseModel):
    entry_id: int = Field(description="已发布的信息资源 id")
    kind: str = Field(max_length=8, description="sql 外部数据库表/视图 / file 上传文件 / http 上游 JSON 接口")
    url: str | None = Field(
        default=None,
        max_length=500,  # DataSource.url (a password split off a SQL URL leaves it shorter)
        description="sql：SQLAlchemy URL（如 postgresql+psycopg://reader:密码@host/db，密码会被拆出加密保存）；"
        "http：接口地址",
    )
    password: str | None = Field(
        default=None, max_length=500, description="数据库密码或 HTTP 接口令牌（也可写在 URL 中）；加密保存，永不返回"
    )
    table_name: str | None = Field(default=None, max_length=200, description="sql：表或视图名（可带 schema.）")
    key_item: str = Field(max_length=200, description="主键信息项（唯一，用于分页和查询核验）")
    fields: dict[str, str] | None = Field(
        default=None,
        max_length=500,
        description="信息项名称 → 列名（sql）或 JSON 字段（http，可用 a.b 路径）；file：省略则映射全部信息项",
    )
    change_column: str | None = Field(default=None, max_length=200, description="变更跟踪列（可选）")
    change_kind: str | None = Field(
        default=None, max_length=16, description="updated_at 更新时间 / increasing_id 递增编号"
    )
    options: dict[str, Any] | None = Field(
        default=None, description='http：{"records": "data.items", "params": {"信息项": "参数"}, "key_param": "…"}'
    )


class SourcePatch(BaseModel):
    url: str | None = Field(default=None, max_length=500)
    password: str | None = Field(default=None, max_length=500, description="新密码/令牌；空字符串表示清除")
    table_name: str | None = Field(default=None, max_length=200)
    key_item: str | None = Field(default=None, max_length=200)
    fields: dict[str, str] | None = Field(default=None, max_length=500)
    change_column: str | None = Field(default=None, max_length=200)
    change_kind: str | None = Field(default=None, max_length=16)
    options: dict[str, Any] | None = None
    enabled: bool | None = None


class SourceFieldOut(BaseModel):
    item: str
    column: str


class SourceOut(BaseModel):
    id: int
    entry_id: int
    entry_code: str
    entry_name: str
    provider_code: str
    kind: str
    kind_label: str
    url: str | None = Field(description="不含密码")
    has_password: bool
    table_name: str | None
    key_item: str | None
    key_column: str
    fields: list[SourceFieldOut]
    change_column: str | None
    change_kind: str | None
    options: dict[str, Any] | None
    rows: int | None
    status: str
    last_tested_at: UtcDateTime | None
    last_error: str | None
    enabled: bool
    created_by: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


class TestError(BaseModel):
    code: str
    message: str
    message_en: str


class SourceTestOut(BaseModel):
    ok: bool
    status: str
    error: TestError | None
    tested_at: UtcDateTime
