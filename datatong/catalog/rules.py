"""The 编目 rules an entry must satisfy before it is stored.

Kept apart from the service so the Excel importer reports the very same errors,
row by row, as the API and the forms.
"""

from __future__ import annotations

from dataclasses import dataclass

from datatong.catalog import vocab
from datatong.catalog.schemas import EntryIn


@dataclass
class RuleError:
    code: str
    field: str
    message: str
    message_en: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message, "message_en": self.message_en}


def _blank(value: str | None) -> bool:
    return value is None or not str(value).strip()


def check_entry(data: EntryIn) -> list[RuleError]:
    """Every rule violated by ``data`` (empty when it may be stored)."""
    errors: list[RuleError] = []

    def err(code: str, field: str, zh: str, en: str) -> None:
        errors.append(RuleError(code, field, zh, en))

    if _blank(data.name):
        err("catalog.name_required", "name", "请填写信息资源名称", "Resource name is required")
    if _blank(data.summary):
        err("catalog.summary_required", "summary", "请填写摘要", "Summary is required")
    if data.format_category not in vocab.FORMAT_CATEGORIES:
        err(
            "catalog.format_invalid",
            "format_category",
            "信息资源格式须为 " + "/".join(vocab.FORMAT_CATEGORIES.values()),
            "Unknown format category",
        )
    if data.update_cycle not in vocab.UPDATE_CYCLES:
        err(
            "catalog.update_cycle_invalid",
            "update_cycle",
            "更新周期须为 " + "/".join(vocab.UPDATE_CYCLES.values()),
            "Unknown update cycle",
        )
    _check_share(data, err)
    _check_items(data, err)
    return errors


def _check_share(data: EntryIn, err) -> None:  # type: ignore[no-untyped-def]
    if data.share_type not in vocab.SHARE_TYPES:
        err(
            "catalog.share_type_invalid",
            "share_type",
            "共享类型须为 无条件共享/有条件共享/不予共享",
            "Share type must be unconditional, conditional or none",
        )
        return
    if data.share_type == "none" and _blank(data.no_share_basis):
        err(
            "catalog.no_share_basis_required",
            "no_share_basis",
            "不予共享的信息资源必须注明法律、行政法规或党中央、国务院政策依据",
            "A resource that is not shared needs its legal basis",
        )
    if data.share_type == "conditional" and _blank(data.share_condition):
        err(
            "catalog.share_condition_required",
            "share_condition",
            "有条件共享的信息资源必须注明共享条件",
            "A conditionally shared resource needs its conditions",
        )
    if data.share_type != "none":
        if _blank(data.share_method):
            err(
                "catalog.share_method_required",
                "share_method",
                "请选择共享方式（共享平台/邮件/介质）",
                "Share method is required unless the resource is not shared",
            )
        elif data.share_method not in vocab.SHARE_METHODS:
            err(
                "catalog.share_method_invalid",
                "share_method",
                "共享方式须为 共享平台/邮件/介质",
                "Share method must be platform, email or media",
            )
    if data.share_subtype and data.share_subtype not in vocab.SHARE_SUBTYPES:
        err(
            "catalog.share_subtype_invalid",
            "share_subtype",
            "共享方式子类须为 接口/库表/文件",
            "Share sub-type must be interface, table or file",
        )
    if data.is_open and data.share_type == "none":
        err(
            "catalog.open_not_shared",
            "is_open",
            "不予共享的信息资源不能向社会开放",
            "A resource that is not shared cannot be open to the public",
        )


def _check_items(data: EntryIn, err) -> None:  # type: ignore[no-untyped-def]
    if not data.items:
        err("catalog.items_required", "items", "至少需要一个信息项", "At least one data item is required")
        return
    seen: set[str] = set()
    for i, item in enumerate(data.items):
        where = f"items[{i}]"
        label = item.name or f"第{i + 1}项"
        if _blank(item.name):
            err(
                "catalog.item_name_required",
                f"{where}.name",
                f"第 {i + 1} 个信息项缺少名称",
                f"Data item {i + 1} needs a name",
            )
        elif item.name.strip() in seen:
            err(
                "catalog.item_name_duplicate",
                f"{where}.name",
                f"信息项“{item.name}”重复",
                f"Data item '{item.name}' appears twice",
            )
        else:
            seen.add(item.name.strip())
        if item.data_type not in vocab.DATA_TYPES:
            err(
                "catalog.item_type_invalid",
                f"{where}.data_type",
                f"信息项“{label}”的数据类型须为 C/N/Y/D/T/L/M/G/B/I/F 之一",
                f"Data item '{label}' has an unknown data type",
            )
        elif item.data_type in vocab.LENGTH_REQUIRED and not item.length:
            err(
                "catalog.item_length_required",
                f"{where}.length",
                f"信息项“{label}”为{vocab.DATA_TYPES[item.data_type]}，必须填写长度",
                f"Data item '{label}' is of a structured type and needs a length",
            )
        if item.sensitivity not in vocab.SENSITIVITIES:
            err(
                "catalog.item_sensitivity_invalid",
                f"{where}.sensitivity",
                f"信息项“{label}”的敏感级别须为 公开/内部/敏感/个人信息",
                f"Data item '{label}' has an unknown sensitivity",
            )
