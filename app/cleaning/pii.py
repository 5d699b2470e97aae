"""Finding personal data and secrets in text: patterns, each confirmed by a check where the format has one
(Luhn for cards, mod 97 for IBANs, the ISO 7064 checksum of the 18-digit Chinese resident ID, octet ranges for
IPv4, and for IPv4 not a version: a dotted quad after "version", "v", "build", 版本 is a version number). Text
inside code (``` fences or `inline`) is not searched for e-mails, IPs or phone numbers: there they are usually
syntax (``git@host:repo``, ``0.0.0.0``) rather than someone's data."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("email", "phone", "credit_card", "iban", "ip", "cn_id", "secret", "url_credentials")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
    "ip": "<IP>",
    "cn_id": "<ID_NUMBER>",
    "secret": "<SECRET>",
    "url_credentials": "<URL_WITH_PASSWORD>",
    "name": "<NAME>",
}
CODE_SENSITIVE = {"email", "ip", "phone"}

# the edges are ASCII: an address written straight after Chinese text (请联系li@example.com) still counts
EMAIL = re.compile(
    r"(?<![A-Za-z0-9_.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![A-Za-z0-9_-])"
)
# mainland-China mobile numbers (optionally +86), and international numbers written with a leading +
CN_MOBILE = re.compile(r"(?<![\d+])(?:\+?86[\s-]?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)")
INTL_PHONE = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?!\d)")
# North-American style numbers written with separators: (415) 555-0100, 415-555-0100
NANP_PHONE = re.compile(r"(?<![\w-])(?:\(\d{3}\)\s?|\d{3}[.-])\d{3}[.-]\d{4}(?![\w-])")
CARD = re.compile(r"(?<![\d.,+])(?:\d[ -]?){12,18}\d(?![\d]|[.,]\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")  # a sentence's full stop may follow
IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![:\w])")
CN_ID = re.compile(
    r"(?<![\dA-Za-z])[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])"
)
SECRETS = re.compile(
    r"(?<![\w-])(?:"
    r"AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style keys
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----"
    r")"
)
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]{1,15}://[^\s/:@]{1,64}:[^\s/@]{1,128}@[^\s/]+", re.IGNORECASE)
# what a dotted quad after these words is: a version or build number, not an address
VERSION_BEFORE = re.compile(
    r"(?:\b(?:versions?|ver|release[sd]?|build|firmware|kernel|update|upgrade|patch|install(?:ed)?)\b\.?\s*[:#]?\s*"
    r"|\bv|版本号?\s*[:：]?\s*|固件\s*|(?:安|先|升级到|更新到)装?\s*)$",
    re.IGNORECASE,
)
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    text: str


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_ok(raw: str) -> bool:
    value = raw.replace(" ", "")
    if not 15 <= len(value) <= 34:
        return False
    moved = value[4:] + value[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CN_ID_CHECK = "10X98765432"


def cn_id_ok(value: str) -> bool:
    total = sum(int(d) * w for d, w in zip(value[:17], CN_ID_WEIGHTS, strict=True))
    return CN_ID_CHECK[total % 11] == value[17].upper()


def _ipv4_ok(value: str) -> bool:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_loopback or str(address).startswith("255."))


def code_ranges(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in CODE.finditer(text)] if "`" in text else []


SECRET_MARKS = ("AKIA", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza", "-----BEGIN")


def _could_hold(text: str) -> set[str]:
    """The detectors that can match this text at all, from what each needs and a few fast substring counts:
    most texts hold no '@', few digits and none of the secrets' prefixes, and a pattern that cannot match
    need not scan. Every condition here is necessary for its pattern (tests compare with scanning all)."""
    # \d matches every Unicode digit (fullwidth, Arabic-Indic…): count those the same way outside ASCII
    digits = sum(map(text.count, "0123456789")) if text.isascii() else len(DIGIT.findall(text))
    possible = set()
    if "://" in text and "@" in text:
        possible.add("url_credentials")
    if any(mark in text for mark in SECRET_MARKS):
        possible.add("secret")
    if "@" in text:
        possible.add("email")
    if digits >= 17:  # the 18th may be an X
        possible.add("cn_id")
    if digits >= 2:
        possible.add("iban")
    if digits >= 7:
        possible.add("phone")
    if digits >= 13:
        possible.add("credit_card")
    if digits >= 4 and text.count(".") >= 3:
        possible.add("ipv4")
    if text.count(":") >= 7:
        possible.add("ipv6")
    return possible


def find(
    text: str,
    kinds: tuple[str, ...] | frozenset[str] = frozenset(KINDS),
    names: Sequence[tuple[int, int]] = (),
    *,
    prefilter: bool = True,
) -> list[Span]:
    """Non-overlapping spans of the chosen kinds, in order; the first detector to claim a range wins (secrets
    and credentials first, so that a key is not half-read as a phone number; people's names, found by an NER
    model and given as character ranges, last). ``prefilter=False`` scans with every pattern (for tests)."""
    scan = _could_hold(text) if prefilter else {*KINDS, "ipv4", "ipv6"}
    code = code_ranges(text)
    found: list[Span] = []

    def taken(start: int, end: int) -> bool:
        return any(s.start < end and start < s.end for s in found)

    def in_code(start: int) -> bool:
        return any(a <= start < b for a, b in code)

    def add(kind: str, start: int, end: int) -> None:
        if kind in kinds and not taken(start, end) and not (kind in CODE_SENSITIVE and in_code(start)):
            found.append(Span(kind, start, end, text[start:end]))

    for m in URL_CREDENTIALS.finditer(text) if "url_credentials" in scan else ():
        add("url_credentials", m.start(), m.end())
    for m in SECRETS.finditer(text) if "secret" in scan else ():
        add("secret", m.start(), m.end())
    for m in EMAIL.finditer(text) if "email" in scan else ():
        add("email", m.start(), m.end())
    for m in CN_ID.finditer(text) if "cn_id" in scan else ():
        if cn_id_ok(m.group()):
            add("cn_id", m.start(), m.end())
    for m in IBAN.finditer(text) if "iban" in scan else ():
        if iban_ok(m.group()):
            add("iban", m.start(), m.end())
    for pattern in (CN_MOBILE, INTL_PHONE, NANP_PHONE) if "phone" in scan else ():
        for m in pattern.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 7 <= len(digits) <= 15:
                add("phone", m.start(), m.end())
    for m in CARD.finditer(text) if "credit_card" in scan else ():
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1:
            add("credit_card", m.start(), m.end())
    for m in IPV4.finditer(text) if "ipv4" in scan else ():
        if _ipv4_ok(m.group()) and not VERSION_BEFORE.search(text, max(0, m.start() - 16), m.start()):
            add("ip", m.start(), m.end())
    for m in IPV6.finditer(text) if "ipv6" in scan else ():
        add("ip", m.start(), m.end())
    for start, end in names:
        if not taken(start, end):
            found.append(Span("name", start, end, text[start:end]))
    return sorted(found, key=lambda s: s.start)


def pseudonym(span: Span, salt: str) -> str:
    """The same value always gets the same stand-in (within one cleaning), so conversations stay coherent."""
    digest = hashlib.blake2b(f"{salt}:{span.kind}:{span.text}".encode(), digest_size=4).hexdigest()
    return f"<{span.kind.upper()}_{digest}>"


def redact(text: str, spans: list[Span], *, style: str, salt: str = "") -> str:
    out, last = [], 0
    for span in spans:
        out.append(text[last : span.start])
        out.append(pseudonym(span, salt) if style == "pseudonym" else PLACEHOLDERS[span.kind])
        last = span.end
    out.append(text[last:])
    return "".join(out)
