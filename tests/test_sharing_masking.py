"""脱敏 (issue 4 §5): one masking function, rules per kind, as data."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datatong.sharing.masking import (
    COMPOUND_SURNAMES,
    KINDS,
    RULES,
    STARS,
    MaskRule,
    kind_for_item,
    mask,
    mask_row,
)

# --- rules per kind -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        # 身份证号: first 6 and last 4; the 18/15 shape is public, so it is kept.
        ("id_card", "110101199001011234", "110101********1234"),
        ("id_card", "11010119900101123x", "110101********123X"),
        ("id_card", "110101 19900101 1234", "110101********1234"),
        ("id_card", "110101900101123", "110101*****1123"),  # old 15-digit card
        ("id_card", "E12345678", "****5678"),  # another 证件 (passport): last 4 only
        ("id_card", "1234", "****"),
        # 手机号: first 3 and last 4.
        ("phone", "13812345678", "138****5678"),
        ("phone", "138 1234 5678", "138****5678"),
        ("phone", "+86 138-1234-5678", "+86138****5678"),
        # 固定电话: area code and last 4, the local number's length hidden.
        ("phone", "010-12345678", "010-****5678"),
        ("phone", "01012345678", "010-****5678"),  # 010 is a three-digit area code
        ("phone", "020-8765432", "020-****5432"),
        ("phone", "0755-87654321", "0755-****4321"),
        ("phone", "(0571)87654321转8001", "0571-****4321"),  # extension dropped
        ("phone", "87654321", "****4321"),
        ("phone", "12345", "****"),
        # 姓名: the surname, then a fixed ** whatever the given name's length.
        ("name", "张三", "张**"),
        ("name", "张三丰", "张**"),
        ("name", "欧阳娜娜", "欧阳**"),
        ("name", "司马相如", "司马**"),
        ("name", "诸葛亮", "诸葛**"),
        ("name", "上官婉儿", "上官**"),
        ("name", "欧阳", "欧**"),  # two characters: 欧 is the surname, 阳 the name
        ("name", "买买提·艾力", "买买提·**"),
        ("name", "阿沛•阿旺晋美", "阿沛·**"),  # other dot characters are read as ·
        ("name", " 李 四 ", "李**"),
        # 地址: up to and including the district / county level.
        ("address", "北京市朝阳区建国路88号", "北京市朝阳区****"),
        ("address", "广东省深圳市南山区科技园南区1栋", "广东省深圳市南山区****"),
        ("address", "上海市浦东新区世纪大道1号", "上海市浦东新区****"),
        ("address", "内蒙古自治区鄂尔多斯市准格尔旗薛家湾镇", "内蒙古自治区鄂尔多斯市准格尔旗****"),
        ("address", "浙江省杭州市淳安县千岛湖镇", "浙江省杭州市淳安县****"),
        ("address", "江苏省苏州市昆山市玉山镇", "江苏省苏州市昆山市****"),  # county-level city
        ("address", "哈尔滨市道里区中央大街", "哈尔滨市道里区****"),
        ("address", "朝阳区建国路88号", "朝阳区****"),
        ("address", "北京市朝阳区", "北京市朝阳区"),  # nothing below the district
        # No administrative level recognised: masked fully, never kept.
        ("address", "建国路88号", "****"),
        ("address", "幸福小区3号楼", "****"),  # a 小区 is not a district
        ("address", "沃尔玛超市3楼", "****"),  # nor is a 超市 a city
        ("address", "北京市朝阳区农贸市场", "北京市朝阳区****"),
        ("address", "北京朝阳门外大街1号", "****"),
        # 自由文本: fully, length hidden.
        ("text", "申请人于2025年曾有欠税记录", "****"),
        ("text", "x", "****"),
        ("bank_card", "6222 0212 3456 7890 123", "622202****0123"),
        ("bank_card", "6222021234567890", "622202****7890"),
        ("email", "zhangsan@example.com", "z***@example.com"),
        ("email", "not-an-email", "****"),
        ("none", "北京市朝阳区建国路88号", "北京市朝阳区建国路88号"),
    ],
)
def test_rules(kind: str, value: str, expected: str) -> None:
    assert mask(kind, value) == expected


def test_none_empty_and_non_strings() -> None:
    for kind in KINDS:
        assert mask(kind, None) is None
        assert mask(kind, "") == ""
        assert mask(kind, "   ") == "   "
    assert mask("id_card", 110101199001011234) == "110101********1234"
    assert mask("phone", 13812345678) == "138****5678"
    assert mask("text", 42) == "****"
    assert mask("bank_card", Decimal("6222021234567890")) == "622202****7890"
    assert mask("none", 7) == "7"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        mask("tattoo", "x")


def test_rule_table_is_data_and_can_be_overridden() -> None:
    assert set(KINDS) == {"id_card", "phone", "name", "address", "text", "bank_card", "email", "none"}
    for kind, rule in RULES.items():
        assert rule.kind == kind and rule.label and rule.description
    # A later admin layer passes its own table, e.g. names masked fully.
    custom = {**RULES, "name": MaskRule("name", "姓名", "全部隐藏", lambda v: STARS)}
    assert mask("name", "张三", rules=custom) == "****"
    assert mask("name", "张三") == "张**"
    assert mask_row({"姓名": "张三"}, ["姓名"], rules=custom) == {"姓名": "****"}


# --- kinds from item names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("身份证号", "id_card"),
        ("公民身份号码", "id_card"),
        ("证件号码", "id_card"),
        ("法定代表人身份证号", "id_card"),  # id card wins over the person
        ("手机号", "phone"),
        ("联系电话", "phone"),
        ("联系人电话", "phone"),  # phone wins over 联系人
        ("办公电话", "phone"),
        ("姓名", "name"),
        ("申请人姓名", "name"),
        ("法定代表人", "name"),
        ("联系人", "name"),
        ("地址", "address"),
        ("家庭住址", "address"),
        ("住所", "address"),
        ("经营场所", "address"),
        ("电子邮件地址", "email"),  # not an address
        ("银行账号", "bank_card"),
        ("备注", "text"),
        ("情况说明", "text"),
        ("统一社会信用代码", "none"),
        ("企业名称", "none"),
        ("登记日期", "none"),
    ],
)
def test_kind_for_item(name: str, kind: str) -> None:
    assert kind_for_item(name) == kind


# --- rows ---------------------------------------------------------------------------------

ROW: dict[str, Any] = {
    "企业名称": "北京某某科技有限公司",
    "统一社会信用代码": "91110105MA0000000X",
    "法定代表人": "欧阳娜娜",
    "法定代表人身份证号": "110101199001011234",
    "联系电话": "13812345678",
    "住所": "北京市朝阳区建国路88号",
    "注册资本": 1000,
    "备注": None,
}


def test_mask_row_masks_only_the_named_items() -> None:
    masked = mask_row(ROW, ["法定代表人", "法定代表人身份证号", "联系电话", "住所", "备注"])
    assert masked == {
        "企业名称": "北京某某科技有限公司",
        "统一社会信用代码": "91110105MA0000000X",
        "法定代表人": "欧阳**",
        "法定代表人身份证号": "110101********1234",
        "联系电话": "138****5678",
        "住所": "北京市朝阳区****",
        "注册资本": 1000,
        "备注": None,
    }
    assert ROW["法定代表人"] == "欧阳娜娜"  # the input row is not changed


def test_mask_row_with_explicit_kinds_and_unknown_items() -> None:
    masked = mask_row(
        ROW,
        ["企业名称", "注册资本", "统一社会信用代码", "不存在的数据项"],
        kinds={"统一社会信用代码": "none", "企业名称": "name"},
    )
    assert masked["企业名称"] == "北**"  # kind given explicitly
    assert masked["统一社会信用代码"] == "91110105MA0000000X"  # explicit "none" leaves it clear
    # Masked but no kind could be guessed: masked fully rather than passed in clear.
    assert masked["注册资本"] == "****"
    assert "不存在的数据项" not in masked
    assert mask_row(ROW, []) == ROW


# --- properties ---------------------------------------------------------------------------

PROPS = hsettings(max_examples=300, deadline=None)
digits = st.text(alphabet="0123456789", min_size=1)
id18 = st.builds(
    lambda d, c: d + c, st.text(alphabet="0123456789", min_size=17, max_size=17), st.sampled_from("0123456789X")
)
id15 = st.text(alphabet="0123456789", min_size=15, max_size=15)
mobile = st.text(alphabet="0123456789", min_size=10, max_size=10).map(lambda s: "1" + s)
han = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)


@PROPS
@given(id18)
def test_prop_id18_hides_the_middle(value: str) -> None:
    out = mask("id_card", value)
    assert out is not None and len(out) == 18
    assert out[:6] == value[:6] and out[-4:] == value[-4:]
    assert out[6:14] == "*" * 8
    if value.isdigit() and value[0] != "0":
        assert mask("id_card", int(value)) == out  # the same card stored as a number


@PROPS
@given(id15)
def test_prop_id15_hides_the_middle(value: str) -> None:
    out = mask("id_card", value)
    assert out == value[:6] + "*****" + value[-4:]


@PROPS
@given(mobile)
def test_prop_mobile_keeps_3_and_4(value: str) -> None:
    out = mask("phone", value)
    assert out == value[:3] + "****" + value[-4:]


@PROPS
@given(st.text(min_size=1))
def test_prop_text_hides_everything_including_length(value: str) -> None:
    out = mask("text", value)
    assert out in (STARS, value)  # value itself only when blank or already all stars
    if value.strip() and set(value) != {"*"}:
        assert out == STARS


@PROPS
@given(han, st.text(alphabet=han, min_size=1, max_size=4))
def test_prop_name_keeps_the_surname_only(surname: str, given_name: str) -> None:
    name = surname + given_name
    out = mask("name", name)
    assert out is not None
    kept = out.removesuffix("**")
    assert name.startswith(kept)
    assert kept in (name[0], name[:2], name[:4])
    if len(kept) > 1:
        assert kept in COMPOUND_SURNAMES
    # The given name's length does not show.
    assert len(out) == len(kept) + 2


@PROPS
@given(st.sampled_from(KINDS), st.one_of(st.text(), digits, st.integers().map(str), id18, mobile))
def test_prop_idempotent(kind: str, value: str) -> None:
    once = mask(kind, value)
    assert mask(kind, once) == once


@PROPS
@given(st.sampled_from([k for k in KINDS if k not in ("none", "address")]), st.text(min_size=1))
def test_prop_something_is_always_hidden(kind: str, value: str) -> None:
    # (An address made only of 省/市/区 levels is kept whole: nothing lies below them.)
    out = mask(kind, value)
    assert out is not None
    # A masked value always shows some mask unless it was blank or already masked.
    if value.strip() and set(value) != {"*"}:
        assert "*" in out


@PROPS
@given(
    st.text(alphabet=han, min_size=2, max_size=6),
    st.sampled_from(["省", "自治区"]),
    st.text(alphabet=han, min_size=1, max_size=4),
    st.text(alphabet="0123456789" + "路街号楼室", min_size=1, max_size=20),
)
def test_prop_address_hides_below_the_district(province: str, suffix: str, district: str, rest: str) -> None:
    # Fixed structure: <province><suffix><city>市<district>区<street...>.
    assume(not re.search(r"[省市区县旗镇乡村号路街自治州地区盟]", province + district))
    assume(not re.search(r"[小社园校景厂宅片营新林特]", district[-1]))
    value = f"{province}{suffix}某某市{district}区{rest}"
    out = mask("address", value)
    assert out == f"{province}{suffix}某某市{district}区" + STARS


@PROPS
@given(
    st.dictionaries(st.sampled_from(list(ROW) + ["其他"]), st.one_of(st.none(), st.integers(), st.text())),
    st.sets(st.sampled_from(list(ROW))),
)
def test_prop_mask_row_touches_only_masked_items(row: dict[str, Any], items: set[str]) -> None:
    out = mask_row(row, items)
    assert out.keys() == row.keys()
    for key, value in row.items():
        if key not in items or value is None:
            assert out[key] == value
        else:
            assert isinstance(out[key], str)
