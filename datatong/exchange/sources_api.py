"""HTTP API of data sources (/api/v1/exchange/sources): connect, test, upload, change."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, File, Query, UploadFile
from sqlalchemy.orm import Session

from datatong.exchange import sources
from datatong.exchange.models import SOURCE_KINDS, DataSource
from datatong.exchange.schemas import SourceFieldOut, SourceIn, SourceOut, SourcePatch, SourceTestOut, TestError
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(prefix="/api/v1/exchange/sources", tags=["数据源 data sources"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)


def source_out(source: DataSource) -> SourceOut:
    entry = source.entry
    key_item = next((f.item_name for f in source.fields if f.column == source.key_column), None)
    return SourceOut(
        id=source.id,
        entry_id=entry.id,
        entry_code=entry.code,
        entry_name=entry.name,
        provider_code=entry.provider_code,
        kind=source.kind,
        kind_label=SOURCE_KINDS.get(source.kind, source.kind),
        url=source.url,
        has_password=source.secret_sealed is not None,
        table_name=source.table_name,
        key_item=key_item,
        key_column=source.key_column,
        fields=[SourceFieldOut(item=f.item_name, column=f.column) for f in source.fields],
        change_column=source.change_column,
        change_kind=source.change_kind,
        options=json.loads(source.options) if source.options else None,
        rows=source.rows,
        status=source.status,
        last_tested_at=source.last_tested_at,
        last_error=source.last_error,
        enabled=source.enabled,
        created_by=source.created_by,
        created_at=source.created_at,
        updated_at=source.updated_at,
    )


@router.post("", response_model=SourceOut, status_code=201, summary="为已发布的信息资源配置数据源")
def create_source(
    body: SourceIn, session: Session = Db, settings: Settings = Conf, principal: Principal = Who
) -> SourceOut:
    return source_out(sources.create_source(session, settings, principal, **body.model_dump()))


@router.get("", response_model=list[SourceOut], summary="数据源列表（本部门的；平台管理员看全部）")
def list_sources(
    entry_id: int | None = Query(None, ge=1, le=2**63 - 1, description="只看该信息资源的数据源"),
    session: Session = Db,
    principal: Principal = Who,
) -> list[SourceOut]:
    return [source_out(s) for s in sources.list_sources(session, principal, entry_id)]


@router.get("/{source_id}", response_model=SourceOut, summary="数据源详情（不含密码）")
def get_source(source_id: int, session: Session = Db, principal: Principal = Who) -> SourceOut:
    return source_out(sources.get_source(session, principal, source_id))


@router.patch("/{source_id}", response_model=SourceOut, summary="修改数据源")
def update_source(
    source_id: int,
    body: SourcePatch,
    session: Session = Db,
    settings: Settings = Conf,
    principal: Principal = Who,
) -> SourceOut:
    changes = body.model_dump(exclude_unset=True)
    return source_out(sources.update_source(session, settings, principal, source_id, **changes))


@router.delete("/{source_id}", status_code=204, summary="删除数据源")
def delete_source(source_id: int, session: Session = Db, principal: Principal = Who) -> None:
    sources.delete_source(session, principal, source_id)


@router.post("/{source_id}/test", response_model=SourceTestOut, summary="测试连接：连通、账号、表和每个映射列")
def test_source(
    source_id: int, session: Session = Db, settings: Settings = Conf, principal: Principal = Who
) -> SourceTestOut:
    result = sources.test_source(session, settings, principal, source_id)
    return SourceTestOut(
        ok=result.ok,
        status=result.status,
        error=TestError(**result.error) if result.error else None,
        tested_at=result.tested_at,
    )


@router.post("/{source_id}/file", response_model=SourceOut, summary="上传数据文件（CSV 或 .xlsx，整体替换）")
def upload_file(
    source_id: int,
    file: UploadFile = File(description="首行为信息项名称或代码；CSV 为 UTF-8（可带 BOM）或 GBK"),
    session: Session = Db,
    settings: Settings = Conf,
    principal: Principal = Who,
) -> SourceOut:
    source = sources.load_file(session, settings, principal, source_id, file.filename or "upload.csv", file.file)
    return source_out(source)
