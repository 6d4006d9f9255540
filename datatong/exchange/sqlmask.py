"""Masking (脱敏) as PostgreSQL expressions: the bulk export's fast path masks inside the
database, so rows stream out of ``COPY`` without a Python loop over them.

Each expression gives EXACTLY what ``datatong.sharing.masking.mask(kind, value, rules)``
gives for the text of a value — tests/test_exchange_sqlmask.py runs them on a real
PostgreSQL against ``mask`` for many generated values. A rule this module cannot
reproduce (an admin's rule of a shape it does not know) makes ``mask_sql`` return None, and
the export takes the Python path instead: the fast path never masks differently.

Expressions are SQL text built from a value expression (a quoted column compiled by
SQLAlchemy) and constant patterns of this module (no value of a request is ever put into
this text; those are bound parameters). Character classes that Python's ``re`` defines by
Unicode (``\\s``, ``\\d``) are spelled out code point by code point, so the database's
locale does not matter.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from functools import cache

from datatong.sharing import masking

STARS = masking.STARS


def lit(text: str) -> str:
    """A SQL string literal of one of this module's constants (standard_conforming_strings:
    only the quote is special)."""
    if "\x00" in text:
        raise ValueError("NUL in a SQL literal")
    return "'" + text.replace("'", "''") + "'"


def _escape(code: int) -> str:
    """One character for a PostgreSQL regex bracket expression: ASCII letters and digits
    as they are, everything else as ``\\uXXXX`` / ``\\UXXXXXXXX`` (no locale, no quoting)."""
    ch = chr(code)
    if ch.isascii() and ch.isalnum():
        return ch
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _ranges(codes: Iterable[int]) -> str:
    out: list[str] = []
    run: list[int] = []
    for code in sorted(set(codes)):
        if run and code == run[-1] + 1:
            run.append(code)
            continue
        if run:
            out.append(_escape(run[0]) if len(run) == 1 else f"{_escape(run[0])}-{_escape(run[-1])}")
        run = [code]
    if run:
        out.append(_escape(run[0]) if len(run) == 1 else f"{_escape(run[0])}-{_escape(run[-1])}")
    return "".join(out)


@cache
def whitespace() -> str:
    """Python's whitespace (``str.isspace``, the same set as ``re``'s ``\\s``), for a bracket."""
    return _ranges(c for c in range(0x3001) if chr(c).isspace())


@cache
def digits() -> str:
    """Python ``re``'s ``\\d`` for str patterns: every Unicode decimal digit (Nd)."""
    return _ranges(c for c in range(0x110000) if unicodedata.category(chr(c)) == "Nd")


def chars(text: str) -> str:
    return _ranges(ord(c) for c in text)


def _over(value: str, compact: str, body: str) -> str:
    """``body`` evaluated once over ``c`` = ``compact`` (a correlated scalar subquery: the
    compacted value is computed once, not in every branch). ``OFFSET 0`` keeps PostgreSQL
    from flattening the subqueries, which would copy each expression into every use of it
    (the address rule would cost 30 times more)."""
    return f"(SELECT {body} FROM (SELECT {compact} AS c OFFSET 0) AS _m)"


def _strip_all(value: str, extra: str = "", plus: str = "") -> str:
    return f"regexp_replace({value}, {lit('[' + whitespace() + chars(extra) + ']' + plus)}, '', 'g')"


# ---------------------------------------------------------------- built-in rules


def _id_card(v: str) -> str:
    compact = _strip_all(v, "-")
    body = (
        f"CASE WHEN length(c) = 18 AND c ~ {lit('^[0-9*]{17}[0-9Xx*]$')} "
        f"THEN left(c, 6) || '********' || upper(right(c, 4)) "
        f"WHEN length(c) = 15 AND c ~ {lit('^[0-9*]{15}$')} THEN left(c, 6) || '*****' || right(c, 4) "
        f"WHEN length(c) >= 8 THEN {lit(STARS)} || right(c, 4) ELSE {lit(STARS)} END"
    )
    return _over(v, compact, body)


_LANDLINE = r"^(?:\+?86)?(0(?:10|2[0-9]|[3-9][0-9]{2}))([0-9*]{5,8})((?:转|ext\.?|[#xX])[0-9*]+)?$"


def _phone(v: str) -> str:
    compact = _strip_all(v, "-()（）")
    mobile = lit(r"^(\+?86)?1[0-9*]{10}$")
    body = (
        f"CASE WHEN c ~ {mobile} "
        f"THEN (CASE WHEN length(c) > 11 THEN '+86' ELSE '' END) || left(right(c, 11), 3) || '****' || right(c, 4) "
        f"WHEN m IS NOT NULL THEN m[1] || '-' || {lit(STARS)} || right(m[2], 4) "
        f"WHEN length(c) >= 7 THEN {lit(STARS)} || right(c, 4) ELSE {lit(STARS)} END"
    )
    matched = f"SELECT c, regexp_match(c, {lit(_LANDLINE)}) AS m FROM (SELECT {compact} AS c OFFSET 0) AS _c OFFSET 0"
    return f"(SELECT {body} FROM ({matched}) AS _m)"


_DOTS = "·•・‧．.\u2027\u00b7"


def _name(v: str) -> str:
    compact = _strip_all(v, plus="+")
    dots = chars(_DOTS)
    first = f"(regexp_match(c, {lit('^[^' + dots + ']*')}))[1]"
    whens = [
        f"WHEN c ~ {lit('[' + dots + ']')} THEN (CASE WHEN {first} = '' THEN {lit(masking.NAME_STARS)} "
        f"ELSE {first} || {lit('·' + masking.NAME_STARS)} END)"
    ]
    # masking.py tries the longest surnames first (爱新觉罗 before the two-character ones).
    for size in sorted({len(s) for s in masking.COMPOUND_SURNAMES}, reverse=True):
        names = ", ".join(lit(s) for s in sorted(s for s in masking.COMPOUND_SURNAMES if len(s) == size))
        whens.append(
            f"WHEN length(c) > {size} AND left(c, {size}) IN ({names}) "
            f"THEN left(c, {size}) || {lit(masking.NAME_STARS)}"
        )
    body = "CASE " + " ".join(whens) + f" ELSE left(c, 1) || {lit(masking.NAME_STARS)} END"
    return _over(v, compact, body)


def _address_patterns() -> tuple[str, str, str]:
    """masking._ADDRESS, one level at a time. Python matches the three optional groups in
    turn, each with its shortest (lazy) match, never backtracking into an earlier one (all
    are optional and nothing follows). Province and district matches can only end at their
    first 省/区 (县/旗/市) — the place characters exclude them — while a city may end at a
    盟 or 州 or at a later 市: a non-greedy PostgreSQL RE finds the same shortest match."""
    place = "[^" + chars("省市区县旗镇乡村号路街") + digits() + chars("*") + whitespace() + "]"
    city_word = "(?<![超夜集菜门])市(?!场)"
    district_word = "(?<![小社园校景厂宅片营])区"
    province = f"^{place}{{2,8}}?(?:省|自治区|特别行政区)"
    city = f"^{place}{{1,10}}?(?:自治州|地区|盟|{city_word})"
    district = f"^{place}{{1,10}}?(?:自治县|自治旗|新区|林区|特区|{district_word}|县|旗|{city_word})"
    return province, city, district


def _address(v: str) -> str:
    """Province, then city after it, then district after both: one subquery level each
    (the compacted value is computed twice, which costs less than another level)."""
    province, city, district = _address_patterns()
    compact = _strip_all(v, plus="+")
    return (
        f"(SELECT CASE WHEN k = '' THEN {lit(STARS)} WHEN length(c) > length(k) THEN k || {lit(STARS)} ELSE k END "
        f"FROM (SELECT c, pq || coalesce((regexp_match(substr(c, length(pq) + 1), {lit(district)}))[1], '') AS k "
        f"FROM (SELECT c, p || coalesce((regexp_match(substr(c, length(p) + 1), {lit(city)}))[1], '') AS pq "
        f"FROM (SELECT {compact} AS c, coalesce((regexp_match({compact}, {lit(province)}))[1], '') AS p "
        f"OFFSET 0) AS _a OFFSET 0) AS _b OFFSET 0) AS _e)"
    )


def _text(v: str) -> str:
    return lit(STARS)


def _bank_card(v: str) -> str:
    compact = _strip_all(v, "-")
    body = (
        f"CASE WHEN c ~ {lit('^[0-9*]{12,}$')} THEN left(c, 6) || {lit(STARS)} || right(c, 4) "
        f"WHEN length(c) >= 8 THEN {lit(STARS)} || right(c, 4) ELSE {lit(STARS)} END"
    )
    return _over(v, compact, body)


def _email(v: str) -> str:
    ws = whitespace()
    stripped = f"regexp_replace({v}, {lit('^[' + ws + ']+|[' + ws + ']+$')}, '', 'g')"
    return (
        f"(SELECT CASE WHEN d IS NULL OR d = '' OR length(s) = length(d) + 1 THEN {lit(STARS)} "
        f"ELSE left(s, 1) || '***@' || d END "
        f"FROM (SELECT s, (regexp_match(s, {lit('@([^@]*)$')}))[1] AS d "
        f"FROM (SELECT {stripped} AS s OFFSET 0) AS _s OFFSET 0) AS _m)"
    )


BUILT_IN: dict[str, Callable[[str], str]] = {
    "id_card": _id_card,
    "phone": _phone,
    "name": _name,
    "address": _address,
    "text": _text,
    "bank_card": _bank_card,
    "email": _email,
}


# ---------------------------------------------------------------- the admin's overrides


def _keep(head: int, tail: int) -> Callable[[str], str]:
    def sql(v: str) -> str:
        right = f" || right({v}, {tail})" if tail else ""
        kept = f"left({v}, {head}) || {lit(STARS)}{right}"
        return f"(CASE WHEN length({v}) <= {head + tail} THEN {lit(STARS)} ELSE {kept} END)"

    return sql


def rule_sql(kind: str, rule: masking.MaskRule) -> Callable[[str], str] | None:
    """The SQL of ``rule`` (the rule of ``kind`` in force), or None when it is not one this
    module knows: built-in, keep N+M, full or none (policy.py's modes)."""
    apply = rule.apply
    if kind in BUILT_IN and apply is masking.RULES[kind].apply:
        return BUILT_IN[kind]
    if apply is masking._full:
        return _text
    if apply is masking._no_mask:
        return lambda v: v
    if getattr(apply, "__qualname__", "") == "_keep.<locals>.apply" and apply.__closure__:
        cells = dict(zip(apply.__code__.co_freevars, (c.cell_contents for c in apply.__closure__), strict=True))
        head, tail = cells.get("head"), cells.get("tail")
        if isinstance(head, int) and isinstance(tail, int) and head >= 0 and tail >= 0:
            return _keep(head, tail)
    return None


def mask_sql(kind: str, value: str, rules: Mapping[str, masking.MaskRule]) -> str | None:
    """SQL giving ``masking.mask(kind, <value>, rules)`` for the text expression ``value``
    (NULL stays NULL; blank or all-``*`` text stays as it is), or None (use Python)."""
    rule = rules.get(kind)
    if rule is None:
        return None
    sql = rule_sql(kind, rule)
    if sql is None:
        return None
    blank = lit("^[" + whitespace() + "]*$")
    return (
        f"(CASE WHEN {value} IS NULL THEN NULL WHEN {value} ~ {blank} OR {value} ~ '^[*]+$' THEN {value} "
        f"ELSE {sql(value)} END)"
    )
