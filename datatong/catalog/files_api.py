"""Catalog files over HTTP: the Excel template, import (xlsx/CSV) and export."""

from __future__ import annotations

from datetime import date
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from datatong.catalog import excel, finder, service, vocab
from datatong.catalog.api import search_params
from datatong.errors import invalid
from datatong.orgs.service import Principal
from datatong.web.deps import get_principal, get_session

router = APIRouter(prefix="/api/v1/catalog", tags=["目录 catalog"])
Db = Depends(get_session)
Who = Depends(get_principal)
MEDIA = {"xlsx": excel.XLSX_MIME, "csv": "text/csv; charset=utf-8"}
EXPORT_FORMATS = tuple(MEDIA)


class ImportOut(BaseModel):
    created: int
    codes: list[str]


def attachment(content: bytes, filename: str, fallback: str, media_type: str) -> Response:
    """A download; the Chinese name goes in filename* (RFC 5987), with an ASCII
    fallback for clients that do not read it."""
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"
    return Response(content, media_type=media_type, headers={"Content-Disposition": disposition})


@router.get(
    "/template.xlsx",
    response_class=Response,
    summary="下载目录编制模板（xlsx）",
    responses={200: {"content": {excel.XLSX_MIME: {}}}},
)
def template() -> Response:
    return attachment(excel.write_template(), "目录编制模板.xlsx", "catalog-template.xlsx", excel.XLSX_MIME)


@router.post(
    "/import",
    response_model=ImportOut,
    status_code=201,
    summary="导入目录（xlsx 模板或 CSV；全部成功或全部不导入，逐行报告错误）",
)
def import_entries(
    file: UploadFile = File(..., description="目录编制模板 .xlsx 或 .csv"),
    session: Session = Db,
    principal: Principal = Who,
) -> ImportOut:
    service.require_editor(principal)  # refuse before reading the upload
    if file.size is not None and file.size > excel.MAX_BYTES:
        raise excel.too_large()
    # One byte over the limit is enough for import_file to refuse the file.
    data = file.file.read(excel.MAX_BYTES + 1)
    report = excel.import_file(session, principal, data, file.filename or "")
    return ImportOut(created=report.created, codes=report.codes)


def _output_format(params: finder.SearchParams, output: str | None) -> str:
    """``format`` is also the search filter on 信息资源格式分类; xlsx/csv are no
    format category, so they name the file format (``output`` wins when given)."""
    if params.format in EXPORT_FORMATS:
        fmt, params.format = params.format, None
        return output or fmt
    if params.format and params.format not in vocab.FORMAT_CATEGORIES:
        raise invalid(
            "export.format_invalid",
            "format 须为 xlsx 或 csv（或信息资源格式分类代码）",
            "format must be xlsx or csv (or a format category)",
            "format",
        )
    return output or "xlsx"


@router.get(
    "/export",
    response_class=Response,
    summary="导出检索结果（xlsx 或 csv，与模板同样的列，可再导入）",
    responses={200: {"content": {excel.XLSX_MIME: {}, "text/csv": {}}}},
)
def export_entries(
    request: Request,
    params: finder.SearchParams = Depends(search_params),
    output: str | None = Query(None, pattern="^(xlsx|csv)$", description="文件格式，优先于 format"),
    session: Session = Db,
    principal: Principal = Who,
) -> Response:
    fmt = _output_format(params, output)
    found = finder.entries_for_export(session, principal, params, request.app.state.settings.anonymous_catalog)
    content = excel.export_entries(found, fmt, principal)
    stamp = date.today().strftime("%Y%m%d")
    return attachment(content, f"信息资源目录-{stamp}.{fmt}", f"catalog-{stamp}.{fmt}", MEDIA[fmt])
