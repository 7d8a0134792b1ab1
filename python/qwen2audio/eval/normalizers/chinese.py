"""Chinese text normalization as the official Qwen2-Audio ASR scorer runs it (its cn_tn ``TextNorm``
with every option off): non-standard words (dates, money, phone numbers, fractions, percentages,
numbers with measure words, long digit strings, plain numbers) are read out in Chinese numerals, then
Chinese and ASCII punctuation become spaces. Nothing else changes: no full-width folding, no case
change, fillers stay.

The rewrites reproduce the original's mechanics on purpose, because they show in the WER: each rule
collects its matches first, then replaces the *first occurrence* of each matched string in the
whole text; a year reads digit by digit only when written 19xx/20xx or as two digits starting with
0, 8 or 9; Python's Unicode ``\\d`` accepts full-width digits while ``lstrip('0')`` does not strip a
full-width zero (so "２０２３年" reads 两千零百二十三年).
"""

from __future__ import annotations

import re
import string

_DIGITS = "零一二三四五六七八九"
_LIANG = "两"
_POINT = "点"
# (power of ten, character): 十百千万, then 亿 and beyond in steps of 10^4 (the "mid" numbering system).
_UNITS = [(1, "十"), (2, "百"), (3, "千"), (4, "万")] + [((i + 2) * 4, c) for i, c in enumerate("亿兆京垓秭穰沟涧正载")]

_CN_PUNCTUATION = ("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿"
                   "–—‘’‛“”„‟…‧﹏·〈〉-")
_TO_SPACES = str.maketrans({c: " " for c in _CN_PUNCTUATION + string.punctuation})

_CURRENCY_UNITS = "((亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|)元|(亿|千万|百万|万|千|百|)块|角|毛|分)"
# Measure words after a number. Single characters as a class, plus the two-character units whose
# first character is not itself a measure word; alternation order cannot change what the number
# group captures, which is all the rule uses.
_MEASURE_CHARS = ("匹张座回场尾条个首阙阵网炮顶丘棵只支袭辆挑担颗壳窠曲墙群腔砣客贯扎捆刀令打手罗坡山岭江溪钟队单双对出口头脚板跳枝件贴针"
                  "线管名位身堂课本页家户层丝毫厘分钱两斤铢石钧锱忽寸尺丈里寻常铺程撮勺合升斗盘碗碟叠桶笼盆盒杯斛锅簋篮罐瓶壶卮盏箩箱煲"
                  "啖袋钵年月日季刻时周天秒旬纪岁世更夜春夏秋冬代伏辈丸泡粒幢堆根道面片块")
_MEASURE = f"(?:[{_MEASURE_CHARS}]|[千微][克米])"

_DATE = re.compile(r"\D+((([089]\d|(19|20)\d{2})年)?(\d{1,2}月(\d{1,2}[日号])?)?)")
_MONEY = re.compile(r"\D+((\d+(\.\d+)?)[多余几]?" + _CURRENCY_UNITS + r"(\d" + _CURRENCY_UNITS + r"?)?)")
_MOBILE = re.compile(r"\D((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})\D")
_LANDLINE = re.compile(r"\D((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})\D")
_FRACTION = re.compile(r"(\d+/\d+)")
_PERCENT = re.compile(r"(\d+(\.\d+)?%)")
_MEASURED = re.compile(r"(\d+(\.\d+)?)[多余几]?" + _MEASURE)
_DIGIT_STRING = re.compile(r"(\d{4,32})")
_NUMBER = re.compile(r"(\d+(\.\d+)?)")
_LATIN_TWO_LATIN = re.compile(r"(([a-zA-Z]+)二([a-zA-Z]+))")


def _spell(digits: str, with_units: bool) -> list[tuple[str, int]]:
    """Symbols for an integer string: ('d', digit) and ('u', power)."""
    if not with_units or len(digits) <= 1:
        return [("d", int(c)) for c in digits]

    def place(text: str) -> list[tuple[str, int]]:
        significant = text.lstrip("0")
        if not significant:
            return []
        if len(significant) == 1:
            lead = [("d", 0)] if len(text) != len(significant) else []
            return lead + [("d", int(significant))]
        power = max(p for p, _ in _UNITS if p < len(significant))
        return place(text[:-power]) + [("u", power)] + place(significant[-power:])

    return place(digits)


def number_to_chinese(number: str, with_units: bool = True, liang: bool = True) -> str:
    """A decimal number string in Chinese numerals: "2019" -> 二千零一十九 with units (两千零一十九 with liang),
    二零一九 without; a leading 一十 reads 十."""
    parts = number.split(".")
    if len(parts) > 2:
        raise ValueError(f"a number with more than one decimal point: {number!r}")
    symbols = _spell(parts[0], with_units)
    if len(parts) == 2 and parts[1]:
        symbols += [("p", 0)] + [("d", int(c)) for c in parts[1]]
    names = {power: char for power, char in _UNITS}
    out = []
    for i, (kind, value) in enumerate(symbols):
        if kind == "u":
            out.append(names[value])
        elif kind == "p":
            out.append(_POINT)
        else:
            char = _DIGITS[value]
            if liang and value == 2:
                following = symbols[i + 1] if i + 1 < len(symbols) else None
                preceding = symbols[i - 1] if i > 0 else None
                # 两 before 百/千/万/... at the start or right after a unit other than 十
                if (following is not None and following[0] == "u" and following[1] != 1
                        and (preceding is None or (preceding[0] == "u" and preceding[1] != 1))):
                    char = _LIANG
            out.append(char)
    result = "".join(out)
    if result.startswith(_POINT):
        return _DIGITS[0] + result
    if len(result) >= 2 and result[1] in "十拾" and result[0] in "一壹":
        result = result[1:]
    return result


def _cardinal(number: str) -> str:
    return number_to_chinese(number)


def _digits(number: str) -> str:
    return number_to_chinese(number, with_units=False, liang=False)


def _date(text: str) -> str:
    rest = text
    year = ""
    pieces = text.strip().split("年", 1)
    if len(pieces) == 2:
        year = _digits(pieces[0]) + "年"
        rest = pieces[1]
    if not rest:
        return year
    pieces = rest.strip().split("月", 1)
    if len(pieces) == 2:
        month, day = _cardinal(pieces[0]) + "月", pieces[1]
    else:
        month, day = "", text
    if day:
        day = _cardinal(day[:-1]) + day[-1]
    return year + month + day


def _money(text: str) -> str:
    for match in _NUMBER.findall(text):
        text = text.replace(match[0], _cardinal(match[0]), 1)
    return text


def _phone(text: str, landline: bool) -> str:
    parts = text.split("-") if landline else text.strip("+").split()
    return "".join(_digits(part) for part in parts)


def _fraction_text(text: str) -> str:
    numerator, denominator = text.split("/")
    return _cardinal(denominator) + "分之" + _cardinal(numerator)


def _rewrite(text: str, pattern: re.Pattern, convert, group: int | None = 0) -> str:
    """All matches first, then each matched string's first occurrence replaced (the original's order)."""
    for match in pattern.findall(text):
        found = match if group is None else match[group]
        text = text.replace(found, convert(found), 1)
    return text


def normalize_non_standard_words(text: str) -> str:
    # the sentinels give the \D-anchored rules a boundary at both ends; stripping them strips any
    # ^/$ the text itself had at its ends, as upstream
    text = "^" + text + "$"
    text = _rewrite(text, _DATE, _date)
    text = _rewrite(text, _MONEY, _money)
    text = _rewrite(text, _MOBILE, lambda s: _phone(s, landline=False))
    text = _rewrite(text, _LANDLINE, lambda s: _phone(s, landline=True))
    text = _rewrite(text, _FRACTION, _fraction_text, group=None)
    text = text.replace("％", "%")
    text = _rewrite(text, _PERCENT, lambda s: "百分之" + _cardinal(s.strip().strip("%")))
    text = _rewrite(text, _MEASURED, _cardinal)
    text = _rewrite(text, _DIGIT_STRING, _digits, group=None)
    text = _rewrite(text, _NUMBER, _cardinal)
    for whole, left, right in _LATIN_TWO_LATIN.findall(text):
        text = text.replace(whole, left + "2" + right, 1)
    return text.lstrip("^").rstrip("$")


class ChineseTextNormalizer:
    """The official scorer's Chinese normalizer (cn_tn.TextNorm with every option off)."""

    def __call__(self, text: str) -> str:
        return normalize_non_standard_words(text).translate(_TO_SPACES)
