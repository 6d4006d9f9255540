"""脱敏 — masking of sensitive data items, one function used everywhere.

``mask(kind, value)`` applies the rule of a kind; ``kind_for_item(name)`` guesses the
kind from a data item's Chinese name; ``mask_row(row, masked_items, kinds)`` masks the
named items of one row and leaves the others untouched.

The rules are data (:data:`RULES`, kind → :class:`MaskRule`) so that a later
admin-configurable layer can pass its own table (``rules=``) overriding or adding kinds.

Length policy: a hidden part is replaced by a *fixed* run of ``*`` that does not depend on
how long the hidden part was, except where the length is public anyway (a 18- or 15-digit
身份证号, an 11-digit 手机号), which keep their standard shape (``110101********1234``,
``138****5678``). So masked output tells nothing about the length of a name, an address,
a free text, a landline's local number or a bank card beyond what the rule keeps.

Other conventions:

* ``None`` stays ``None``; an empty or blank string stays as it is (emptiness is not hidden).
* Non-string values (ints, Decimals, …) are masked as ``str(value)``; the result is a string.
* Masking is idempotent: masking an already masked value gives it back unchanged.
* Values that do not look like their kind are masked harder, never softer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STARS = "****"  # the fixed mask of a hidden part whose length is not public
NAME_STARS = "**"  # the fixed mask of a given name


@dataclass(frozen=True)
class MaskRule:
    kind: str
    label: str  # Chinese label shown to administrators
    description: str  # what the rule keeps, in Chinese
    apply: Callable[[str], str]  # masks a non-empty string


# --- 身份证号 -----------------------------------------------------------------------------

_ID18 = re.compile(r"[0-9*]{17}[0-9Xx*]")
_ID15 = re.compile(r"[0-9*]{15}")
_SEPARATORS = re.compile(r"[\s\-]")


def _mask_id_card(value: str) -> str:
    compact = _SEPARATORS.sub("", value)
    if len(compact) == 18 and _ID18.fullmatch(compact):
        return compact[:6] + "*" * 8 + compact[-4:].upper()
    if len(compact) == 15 and _ID15.fullmatch(compact):
        return compact[:6] + "*" * 5 + compact[-4:]
    # Another kind of 证件号码 (passport, 港澳通行证, …): keep only the last 4 of long ones.
    if len(compact) >= 8:
        return STARS + compact[-4:]
    return STARS


# --- 手机号 / 电话 --------------------------------------------------------------------------

_MOBILE = re.compile(r"(\+?86)?(1[0-9*]{10})")
# Area codes: 010 and 02X have three digits, all others four.
_LANDLINE = re.compile(r"(?:\+?86)?(0(?:10|2[0-9]|[3-9][0-9]{2}))([0-9*]{5,8})((?:转|ext\.?|[#xX])[0-9*]+)?")


def _mask_phone(value: str) -> str:
    compact = re.sub(r"[\s\-()（）]", "", value)
    m = _MOBILE.fullmatch(compact)
    if m:
        prefix = "+86" if m.group(1) else ""
        number = m.group(2)
        return prefix + number[:3] + "****" + number[-4:]
    m = _LANDLINE.fullmatch(compact)
    if m:
        # Keep the area code (a region, like an address's district) and the last 4 digits.
        return m.group(1) + "-" + STARS + m.group(2)[-4:]
    if len(compact) >= 7:
        return STARS + compact[-4:]
    return STARS


# --- 姓名 -----------------------------------------------------------------------------------

# 复姓 common enough to appear in government records.
COMPOUND_SURNAMES: frozenset[str] = frozenset(
    """
    欧阳 司马 诸葛 上官 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 司空 夏侯 令狐 独孤
    端木 轩辕 南宫 西门 呼延 澹台 公羊 钟离 万俟 闻人 赫连 申屠 濮阳 太史 拓跋 百里
    东郭 南门 羊舌 微生 梁丘 左丘 东门 第五 谷梁 宰父 段干 亓官 司寇 巫马 公西 漆雕
    乐正 壤驷 公良 仲孙 叔孙 鲜于 闾丘 单于 子车 颛孙 完颜 纳兰 爱新觉罗
    """.split()  # noqa: SIM905 — a table is easier to read and extend than a list literal
)
_NAME_DOTS = re.compile(r"[·•・‧．.\u2027\u00b7]")


def _mask_name(value: str) -> str:
    name = re.sub(r"\s+", "", value)
    if _NAME_DOTS.search(name):
        # 少数民族 or foreign name written with a dot (买买提·艾力): keep the first part.
        first = _NAME_DOTS.split(name)[0]
        return first + "·" + NAME_STARS if first else NAME_STARS
    for surname in sorted(COMPOUND_SURNAMES, key=len, reverse=True):
        if name.startswith(surname) and len(name) > len(surname):
            return surname + NAME_STARS
    return name[0] + NAME_STARS


# --- 地址 -----------------------------------------------------------------------------------

# A place name: a few characters that are not themselves level words, digits or masks.
# Words that end like a level but are not one (小区, 园区, 超市, 市场, …) are refused, so an
# address that names no province/city/district is masked fully rather than leaked.
_PLACE = r"[^省市区县旗镇乡村号路街\d*\s]"
_CITY_WORD = r"(?<![超夜集菜门])市(?!场)"
_DISTRICT_WORD = r"(?<![小社园校景厂宅片营])区"
_ADDRESS = re.compile(
    rf"(?P<province>{_PLACE}{{2,8}}?(?:省|自治区|特别行政区))?"
    rf"(?P<city>{_PLACE}{{1,10}}?(?:自治州|地区|盟|{_CITY_WORD}))?"
    rf"(?P<district>{_PLACE}{{1,10}}?(?:自治县|自治旗|新区|林区|特区|{_DISTRICT_WORD}|县|旗|{_CITY_WORD}))?"
)


def _mask_address(value: str) -> str:
    compact = re.sub(r"\s+", "", value)
    m = _ADDRESS.match(compact)
    kept = m.group(0) if m else ""
    if not kept:
        return STARS
    # Levels below the district (street, building, room) are hidden behind a fixed mask.
    return kept + STARS if len(compact) > len(kept) else kept


# --- others ---------------------------------------------------------------------------------


def _mask_text(value: str) -> str:
    return STARS


def _mask_bank_card(value: str) -> str:
    compact = re.sub(r"[\s\-]", "", value)
    if re.fullmatch(r"[0-9*]{12,}", compact):
        # The first 6 digits name the issuing bank (BIN); keep them and the last 4.
        return compact[:6] + STARS + compact[-4:]
    if len(compact) >= 8:
        return STARS + compact[-4:]
    return STARS


def _mask_email(value: str) -> str:
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or not domain:
        return STARS
    return local[0] + "***@" + domain


def _no_mask(value: str) -> str:
    return value


RULES: dict[str, MaskRule] = {
    rule.kind: rule
    for rule in (
        MaskRule("id_card", "身份证号", "保留前6位和后4位，其余以*代替（如 110101********1234）", _mask_id_card),
        MaskRule("phone", "电话号码", "手机号保留前3位和后4位；固定电话保留区号和后4位", _mask_phone),
        MaskRule("name", "姓名", "保留姓（含复姓），名以**代替；少数民族姓名保留第一段", _mask_name),
        MaskRule("address", "地址", "保留到区县一级（省/市/区/县/旗），其余以****代替", _mask_address),
        MaskRule("text", "自由文本", "全部以****代替", _mask_text),
        MaskRule("bank_card", "银行卡号", "保留前6位（发卡行）和后4位", _mask_bank_card),
        MaskRule("email", "电子邮箱", "保留用户名首字符和域名", _mask_email),
        MaskRule("none", "不脱敏", "原样提供", _no_mask),
    )
}
KINDS: tuple[str, ...] = tuple(RULES)


def mask(kind: str, value: Any, rules: Mapping[str, MaskRule] | None = None) -> str | None:
    """Mask ``value`` by the rule of ``kind`` (see the module doc for the conventions)."""
    if value is None:
        return None
    table = RULES if rules is None else rules
    try:
        rule = table[kind]
    except KeyError:
        raise ValueError(f"unknown masking kind {kind!r}") from None
    text = value if isinstance(value, str) else str(value)
    if not text.strip() or set(text) == {"*"}:
        return text  # empty, or already fully masked
    return rule.apply(text)


# Keywords of data item names, checked in this order (the first kind that matches wins:
# 法定代表人身份证号 is an id card, 联系人电话 a phone, 电子邮件地址 an email).
ITEM_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("id_card", ("身份证", "公民身份号码", "证件号码", "证件号", "id_card", "idcard")),
    ("bank_card", ("银行卡", "银行账号", "银行账户", "卡号")),
    ("email", ("邮箱", "电子邮件", "邮件地址", "email")),
    ("phone", ("手机", "电话", "联系方式", "传真", "mobile", "phone")),
    ("address", ("地址", "住址", "住所", "经营场所", "居住地", "户籍地", "address")),
    ("name", ("姓名", "法定代表人", "法人代表", "联系人", "负责人")),
    ("text", ("备注", "说明")),
)


def kind_for_item(name: str) -> str:
    """Guess the masking kind of a data item from its name; ``"none"`` when nothing fits."""
    lowered = name.strip().lower()
    for kind, words in ITEM_KEYWORDS:
        if any(w in lowered for w in words):
            return kind
    return "none"


def mask_row(
    row: Mapping[str, Any],
    masked_items: Iterable[str],
    kinds: Mapping[str, str] | None = None,
    rules: Mapping[str, MaskRule] | None = None,
) -> dict[str, Any]:
    """A copy of ``row`` with the items in ``masked_items`` masked, the others untouched.

    An item's kind is ``kinds[item]`` when given (an explicit ``"none"`` leaves it in
    clear), else guessed by :func:`kind_for_item`; an item that must be masked but whose
    kind cannot be guessed is masked fully (``"text"``), never passed in clear.
    """
    out = dict(row)
    for item in set(masked_items):
        if item not in out:
            continue
        if kinds is not None and item in kinds:
            kind = kinds[item]
        else:
            kind = kind_for_item(item)
            if kind == "none":
                kind = "text"
        if kind != "none":
            out[item] = mask(kind, out[item], rules)
    return out


# --- the platform admin's configuration ------------------------------------------------
#
# Per kind, one of: "default" (the built-in rule above), "keep" (keep ``head`` leading and
# ``tail`` trailing characters, the rest a fixed ****), "full" (everything ****) or "none"
# (in clear: only for kinds the city decides are not personal, and audited when set).

MODES = {"default": "内置规则", "keep": "保留首尾字符", "full": "全部遮蔽", "none": "不脱敏"}
MAX_KEEP = 8


class MaskConfigError(ValueError):
    """A configuration that cannot be applied; ``message`` is Chinese, ``message_en`` English."""

    def __init__(self, message: str, message_en: str) -> None:
        super().__init__(message_en)
        self.message = message
        self.message_en = message_en


def _keep(head: int, tail: int) -> Callable[[str], str]:
    def apply(value: str) -> str:
        if len(value) <= head + tail:
            return STARS  # too short to keep anything without showing it all
        return value[:head] + STARS + (value[-tail:] if tail else "")

    return apply


def _full(value: str) -> str:
    return STARS


def validate_config(raw: Any) -> dict[str, dict[str, Any]]:
    """The canonical form of a configuration, or MaskConfigError naming what is wrong."""
    if not isinstance(raw, Mapping):
        raise MaskConfigError("脱敏规则应为对象：{类型: {mode, head, tail}}", "rules must be an object kind → rule")
    out: dict[str, dict[str, Any]] = {}
    for kind, rule in raw.items():
        if kind not in RULES or kind == "none":
            raise MaskConfigError(f"未知的脱敏类型 {kind}", f"unknown masking kind {kind!r}")
        if not isinstance(rule, Mapping) or rule.get("mode") not in MODES:
            raise MaskConfigError(
                f"{RULES[kind].label}：mode 须为 {'/'.join(MODES)}", f"{kind}: mode must be one of {', '.join(MODES)}"
            )
        mode = str(rule["mode"])
        entry: dict[str, Any] = {"mode": mode}
        if mode == "keep":
            head, tail = rule.get("head", 0), rule.get("tail", 0)
            valid = all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_KEEP for n in (head, tail))
            if not valid or head + tail == 0:
                raise MaskConfigError(
                    f"{RULES[kind].label}：保留位数须为 0–{MAX_KEEP} 的整数，且首尾合计至少 1 位",
                    f"{kind}: head and tail must be integers 0–{MAX_KEEP}, together at least 1",
                )
            entry |= {"head": head, "tail": tail}
        out[kind] = entry
    return out


def rules_from_config(config: Mapping[str, Mapping[str, Any]]) -> dict[str, MaskRule]:
    """The rules table with the configured kinds replaced (others keep their built-in rule)."""
    table = dict(RULES)
    for kind, rule in validate_config(config).items():
        base = RULES[kind]
        mode = rule["mode"]
        if mode == "keep":
            desc = f"保留前{rule['head']}位和后{rule['tail']}位，其余以****代替"
            table[kind] = MaskRule(kind, base.label, desc, _keep(rule["head"], rule["tail"]))
        elif mode == "full":
            table[kind] = MaskRule(kind, base.label, "全部以****代替", _full)
        elif mode == "none":
            table[kind] = MaskRule(kind, base.label, "原样提供（平台管理员设置）", _no_mask)
    return table
