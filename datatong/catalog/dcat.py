"""DCAT-AP 3 export of the catalog as JSON-LD (/api/v1/catalog/dcat.jsonld).

Harvesters of European-style portals and the upper-level node read the catalog
through this document. The ``@context`` is inline, so a consumer never has to
fetch a remote context to expand it.

Mapping of a 信息资源 to a ``dcat:Dataset``:

- ``dct:identifier`` 信息资源代码, ``dct:title`` 名称, ``dct:description`` 摘要,
  ``dcat:keyword`` 关键字 (all ``@language: zh``);
- ``dct:publisher`` the provider as ``foaf:Agent`` (``dct:identifier`` = 提供方代码);
- ``dct:issued`` 发布日期, ``dct:modified`` last change;
- ``dct:accrualPeriodicity`` 更新周期 → EU frequency authority (实时 → UPDATE_CONT,
  不定时 → IRREG);
- ``dcat:theme`` the classification node as ``skos:Concept`` (code + name);
- ``dct:accessRights`` → EU access-right authority: PUBLIC (open to the public),
  RESTRICTED (shared between departments, not open), NON_PUBLIC (不予共享);
- ``dcat:distribution`` format and ``dcat:accessURL`` (在线资源链接, else the entry's API);
- ``dcat:landingPage`` the entry's page ``/catalog/{id}``; ``adms:status`` life cycle
  (ADMS status vocabulary); ``dct:conformsTo`` the entry's data-item schema.

Extension vocabulary ``datatong: <https://datatong.example/ns#>`` for the fields of
《政务信息资源目录编制指南》 that DCAT has no term for:

- on the dataset: ``datatong:catalogType``, ``datatong:classCode``,
  ``datatong:providerUnit``, ``datatong:formatCategory``, ``datatong:formatType``,
  ``datatong:shareType`` (unconditional/conditional/none), ``datatong:shareCondition``,
  ``datatong:shareMethod``, ``datatong:shareSubtype``, ``datatong:isOpen``,
  ``datatong:openCondition``, ``datatong:updateCycle``, ``datatong:relatedCode``,
  ``datatong:sourceSystem``, ``datatong:serviceInfo``, ``datatong:metadataMaintainer``,
  ``datatong:status``, ``datatong:version``; ``datatong:noShareBasis`` only for the
  platform operator (SPEC: only the operator sees why data is not shared);
- on the schema (``dct:conformsTo``, a ``dct:Standard``): ``datatong:items``, an ordered
  ``@list`` of ``datatong:DataItem`` with ``datatong:name``, ``datatong:code``,
  ``datatong:dataType`` (C/N/Y/D/T/L/M/G/B/I/F), ``datatong:length``,
  ``datatong:description``, ``datatong:sensitivity`` and ``datatong:authoritative``.

Paging follows Hydra: the catalog is also a ``hydra:Collection`` with
``hydra:totalItems`` and a ``hydra:PartialCollectionView`` whose ``hydra:next`` is the
URL of the next page (keyset cursor, newest change first).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from datatong.apitypes import UtcDateTime, as_utc
from datatong.catalog import finder, service, vocab
from datatong.catalog.models import CatalogEntry
from datatong.orgs.service import Principal
from datatong.web.deps import get_principal, get_session

router = APIRouter(tags=["互操作 interop"])

NS = "https://datatong.example/ns#"
EU = "http://publications.europa.eu/resource/authority/"
CONTEXT: dict[str, str] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "adms": "http://www.w3.org/ns/adms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "hydra": "http://www.w3.org/ns/hydra/core#",
    "dcatap": "http://data.europa.eu/r5r/",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "datatong": NS,
}
FREQUENCIES = {
    "realtime": "UPDATE_CONT",
    "daily": "DAILY",
    "weekly": "WEEKLY",
    "monthly": "MONTHLY",
    "quarterly": "QUARTERLY",
    "halfyearly": "ANNUAL_2",
    "yearly": "ANNUAL",
    "irregular": "IRREG",
}
ADMS_STATUS = {
    "published": "Completed",
    "pending_revoke": "Completed",
    "revoked": "Withdrawn",
    "draft": "UnderDevelopment",
    "pending_publish": "UnderDevelopment",
    "publish_rejected": "UnderDevelopment",
}
# Formats with an entry in the EU file-type authority; others stay a labelled node.
EU_FILE_TYPES = frozenset(
    [
        "csv",
        "xlsx",
        "xls",
        "json",
        "xml",
        "pdf",
        "zip",
        "shp",
        "geojson",
        "docx",
        "doc",
        "txt",
        "html",
        "jpeg",
        "png",
        "tiff",
        "mp4",
        "rdf",
        "ods",
        "odt",
        "kml",
    ]
)
MEDIA_TYPE = "application/ld+json"
_KEYWORD_SPLIT = re.compile(r"[,，、;；]")


class JsonLdResponse(JSONResponse):
    media_type = MEDIA_TYPE


# Documented by hand: as the route's response_class, JsonLdResponse would also file
# the JSON error answers (4XX) under application/ld+json.
JSONLD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON-LD (DCAT-AP 3)", "content": {MEDIA_TYPE: {"schema": {"type": "object"}}}},
}


# ---------------------------------------------------------------- small helpers


def base_url(request: Request) -> str:
    """Scheme, host and root path of this node, without a trailing slash."""
    return str(request.base_url).rstrip("/")


def split_keywords(text: str | None) -> list[str]:
    """关键字 are comma-separated, typed with ASCII or Chinese commas, 顿号 or semicolons."""
    seen: list[str] = []
    for word in (w.strip() for w in _KEYWORD_SPLIT.split(text or "")):
        if word and word not in seen:
            seen.append(word)
    return seen


def is_web_url(value: str | None) -> bool:
    return bool(value) and urlparse(value or "").scheme in ("http", "https", "ftp")


def entry_api_url(base: str, entry: CatalogEntry) -> str:
    return f"{base}/api/v1/catalog/entries/{entry.id}"


def dataset_uri(base: str, entry: CatalogEntry) -> str:
    """The dataset's URI dereferences to its own DCAT description."""
    return f"{entry_api_url(base, entry)}/dcat.jsonld"


def _zh(text: str) -> dict[str, str]:
    return {"@value": text, "@language": "zh"}


def _typed(value: Any, xsd_type: str) -> dict[str, Any]:
    return {"@value": value, "@type": f"xsd:{xsd_type}"}


def _ref(uri: str) -> dict[str, str]:
    return {"@id": uri}


# ---------------------------------------------------------------- mapping


def access_right(entry: CatalogEntry) -> str:
    if entry.share_type == "none":
        return f"{EU}access-right/NON_PUBLIC"
    return f"{EU}access-right/{'PUBLIC' if entry.is_open else 'RESTRICTED'}"


def frequency(entry: CatalogEntry) -> str:
    return f"{EU}frequency/{FREQUENCIES.get(entry.update_cycle, 'UNKNOWN')}"


def publisher(base: str, entry: CatalogEntry) -> dict[str, Any]:
    return {
        "@id": f"{base}/id/department/{entry.provider_code}",
        "@type": "foaf:Agent",
        "foaf:name": _zh(entry.provider.name),
        "dct:identifier": entry.provider_code,
    }


def theme(base: str, entry: CatalogEntry) -> dict[str, Any]:
    return {
        "@id": f"{base}/id/class/{entry.class_code}",
        "@type": "skos:Concept",
        "skos:notation": entry.class_code,
        "skos:prefLabel": _zh(entry.catalog_class.name),
        "skos:inScheme": _ref(f"{base}/id/class"),
    }


def media_format(entry: CatalogEntry) -> dict[str, Any]:
    kind = (entry.format_type or "").strip().lower()
    if kind in EU_FILE_TYPES:
        return _ref(f"{EU}file-type/{kind.upper()}")
    label = entry.format_type or vocab.label(vocab.FORMAT_CATEGORIES, entry.format_category)
    return {"@type": "dct:MediaTypeOrExtent", "rdfs:label": label}


def distribution(base: str, entry: CatalogEntry) -> dict[str, Any]:
    url = entry.online_url if is_web_url(entry.online_url) else entry_api_url(base, entry)
    node: dict[str, Any] = {
        "@id": f"{dataset_uri(base, entry)}#distribution",
        "@type": "dcat:Distribution",
        "dct:title": _zh(entry.name),
        "dct:format": media_format(entry),
        "dcat:accessURL": _ref(url or ""),
        "adms:status": _ref(f"http://purl.org/adms/status/{ADMS_STATUS.get(entry.status, 'Completed')}"),
        "datatong:formatCategory": entry.format_category,
    }
    if entry.service_info:
        node["dct:description"] = _zh(entry.service_info)
    return node


def item_node(item: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "@type": "datatong:DataItem",
        "datatong:name": _zh(item.name),
        "datatong:dataType": item.data_type,
        "datatong:sensitivity": item.sensitivity,
        "datatong:authoritative": item.is_authoritative,
    }
    if item.code:
        node["datatong:code"] = item.code
    if item.length is not None:
        node["datatong:length"] = _typed(item.length, "integer")
    if item.description:
        node["datatong:description"] = _zh(item.description)
    return node


def schema(base: str, entry: CatalogEntry) -> dict[str, Any]:
    """The data items are the structure the dataset conforms to."""
    return {
        "@id": f"{dataset_uri(base, entry)}#schema",
        "@type": "dct:Standard",
        "dct:title": _zh(f"{entry.name} 信息项"),
        "datatong:items": {"@list": [item_node(i) for i in entry.items]},
    }


# Chinese-catalog fields without a DCAT term: (attribute, extension term).
EXTENSION_FIELDS = [
    ("catalog_type", "catalogType"),
    ("class_code", "classCode"),
    ("provider_unit", "providerUnit"),
    ("format_category", "formatCategory"),
    ("format_type", "formatType"),
    ("share_type", "shareType"),
    ("share_condition", "shareCondition"),
    ("share_method", "shareMethod"),
    ("share_subtype", "shareSubtype"),
    ("is_open", "isOpen"),
    ("open_condition", "openCondition"),
    ("update_cycle", "updateCycle"),
    ("source_system", "sourceSystem"),
    ("service_info", "serviceInfo"),
    ("metadata_maintainer", "metadataMaintainer"),
    ("status", "status"),
    ("version", "version"),
]


def extensions(entry: CatalogEntry, principal: Principal) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, term in EXTENSION_FIELDS:
        value = getattr(entry, attr)
        if value is not None and value != "":
            out[f"datatong:{term}"] = value
    if entry.related_codes:
        out["datatong:relatedCode"] = split_keywords(entry.related_codes)
    # Why data is not shared is for the platform operator only (SPEC §3).
    if principal.is_platform_admin and entry.no_share_basis:
        out["datatong:noShareBasis"] = entry.no_share_basis
    return out


def dataset(base: str, entry: CatalogEntry, principal: Principal) -> dict[str, Any]:
    node: dict[str, Any] = {
        "@id": dataset_uri(base, entry),
        "@type": "dcat:Dataset",
        "dct:identifier": entry.code,
        "dct:title": _zh(entry.name),
        "dct:description": _zh(entry.summary),
        "dcat:keyword": [_zh(k) for k in split_keywords(entry.keywords)],
        "dct:publisher": publisher(base, entry),
        "dcat:contactPoint": {
            "@type": "vcard:Organization",
            "vcard:fn": _zh(entry.metadata_maintainer or entry.provider.name),
        },
        "dct:modified": _typed(as_utc(entry.modified_at).isoformat(), "dateTime"),
        "dct:accrualPeriodicity": _ref(frequency(entry)),
        "dcat:theme": theme(base, entry),
        "dct:accessRights": _ref(access_right(entry)),
        "dct:language": _ref(f"{EU}language/ZHO"),
        "dcat:distribution": [distribution(base, entry)],
        "dcat:landingPage": _ref(f"{base}/catalog/{entry.id}"),
        "adms:status": _ref(f"http://purl.org/adms/status/{ADMS_STATUS.get(entry.status, 'Completed')}"),
        "dct:conformsTo": schema(base, entry),
        **extensions(entry, principal),
    }
    if entry.release_date:
        node["dct:issued"] = _typed(entry.release_date.isoformat(), "date")
    return node


def catalog_document(request: Request, result: finder.SearchResult, principal: Principal) -> dict[str, Any]:
    base = base_url(request)
    return {
        "@context": CONTEXT,
        "@id": f"{base}/api/v1/catalog/dcat.jsonld",
        "@type": ["dcat:Catalog", "hydra:Collection"],
        "dct:title": _zh("数据通 政务信息资源目录"),
        "dct:description": _zh("本平台已发布的政务信息资源目录（DCAT-AP 3）"),
        "dct:publisher": {
            "@id": f"{base}/#platform",
            "@type": "foaf:Agent",
            "foaf:name": _zh("数据通 政务信息资源共享交换平台"),
        },
        "foaf:homepage": _ref(f"{base}/"),
        "dct:language": _ref(f"{EU}language/ZHO"),
        "dcat:themeTaxonomy": {
            "@id": f"{base}/id/class",
            "@type": "skos:ConceptScheme",
            "dct:title": _zh("政务信息资源分类"),
        },
        "hydra:totalItems": result.total,
        "hydra:view": page_view(request, result.next_cursor),
        "dcat:dataset": [dataset(base, e, principal) for e in result.entries],
    }


def page_view(request: Request, next_cursor: str | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "@id": str(request.url),
        "@type": "hydra:PartialCollectionView",
        "hydra:first": _ref(str(request.url.remove_query_params("cursor"))),
    }
    if next_cursor:
        nxt = request.url.remove_query_params("cursor").include_query_params(cursor=next_cursor)
        view["hydra:next"] = _ref(str(nxt))
    return view


# ---------------------------------------------------------------- routes


@router.get(
    "/api/v1/catalog/dcat.jsonld",
    response_class=Response,
    responses=JSONLD_RESPONSES,
    summary="DCAT-AP 3 目录导出（JSON-LD，游标分页）",
)
def catalog_jsonld(
    request: Request,
    limit: int = Query(100, ge=1, le=1000, description="每页条数"),
    cursor: str | None = Query(None, max_length=500, description="上一页 hydra:next 中的游标"),
    modified_since: UtcDateTime | None = Query(
        None, description="只导出此时间之后修改的资源（ISO 8601，无时区视为 UTC）"
    ),
    include_unpublished: bool = Query(False, description="包括调用者可见的未发布资源"),
    session: Session = Depends(get_session),
    principal: Principal = Depends(get_principal),
) -> JsonLdResponse:
    params = finder.SearchParams(
        sort="modified",
        limit=limit,
        cursor=cursor,
        facets=False,
        modified_since=modified_since,
        # A DCAT catalog is what has been published; drafts only on explicit request.
        status=None if include_unpublished else "published",
    )
    anonymous = request.app.state.settings.anonymous_catalog
    result = finder.search(session, principal, params, anonymous)
    return JsonLdResponse(catalog_document(request, result, principal))


@router.get(
    "/api/v1/catalog/entries/{entry_id}/dcat.jsonld",
    response_class=Response,
    responses=JSONLD_RESPONSES,
    summary="单个信息资源的 DCAT-AP 3 描述（JSON-LD）",
)
def entry_jsonld(
    entry_id: int,
    request: Request,
    session: Session = Depends(get_session),
    principal: Principal = Depends(get_principal),
) -> JsonLdResponse:
    anonymous = request.app.state.settings.anonymous_catalog
    entry = service.get_entry(session, principal, entry_id, anonymous)
    return JsonLdResponse({"@context": CONTEXT, **dataset(base_url(request), entry, principal)})
