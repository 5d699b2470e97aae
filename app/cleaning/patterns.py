"""The phrasings the cleaning steps look for: prompt injection and jailbreaks (English and Chinese), scripts and
SQL injection, obscenities and slurs (English and Chinese), and refusal boilerplate."""

from __future__ import annotations

import re
from collections.abc import Sequence

# --- decontamination --------------------------------------------------------------------------------------

INJECTION_PATTERNS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    "injection": [
        (
            "ignore previous instructions",
            re.compile(
                r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,30}\b(?:all\s+)?(?:the\s+)?"
                r"(?:previous|prior|above|earlier|preceding|system)\s+(?:instructions?|prompts?|rules|directions)",
                re.I,
            ),
        ),
        ("new instructions follow", re.compile(r"\bnew\s+instructions?\s*:", re.I)),
        (
            "忽略之前的指令",
            re.compile(r"(?:忽略|无视|忘记)(?:之前|上面|以上|先前|所有)的?(?:所有)?(?:指令|指示|提示|规则)"),
        ),
    ],
    "jailbreak": [
        ("DAN / do anything now", re.compile(r"\bDAN\b(?![ -]?\d)|\b(?i:do anything now)\b")),
        ("developer or god mode", re.compile(r"\b(?:developer|god|jailbreak|unrestricted)\s+mode\b", re.I)),
        (
            "role-play without rules",
            re.compile(
                r"\b(?:pretend|act|imagine|roleplay|role-play)\b[^.\n]{0,40}\b(?:no|without)\s+(?:any\s+)?"
                r"(?:restrictions|rules|filters|limits|guidelines|ethics)",
                re.I,
            ),
        ),
        ("you are no longer bound", re.compile(r"\bno longer (?:bound|restricted|limited)\b", re.I)),
    ],
    "prompt_extraction": [
        (
            "reveal the system prompt",
            re.compile(
                r"\b(?:reveal|print|show|repeat|output|tell me|what (?:is|are))\b[^.\n]{0,30}\b(?:your|the)\s+"
                r"(?:system\s+prompt|initial\s+instructions|hidden\s+(?:prompt|instructions))",
                re.I,
            ),
        ),
        ("输出系统提示词", re.compile(r"(?:输出|显示|告诉我|重复)(?:你的)?系统提示")),
    ],
    "script": [
        ("<script>", re.compile(r"<\s*script\b", re.I)),
        ("event handler attribute", re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I)),
        ("javascript: URL", re.compile(r"javascript\s*:", re.I)),
        ("<iframe>/<object>/<embed>", re.compile(r"<\s*(?:iframe|object|embed)\b", re.I)),
    ],
    "sql": [
        ("' OR '1'='1", re.compile(r"'\s*or\s*'?\d+'?\s*=\s*'?\d+", re.I)),
        ("UNION SELECT", re.compile(r"\bunion\s+(?:all\s+)?select\b", re.I)),
        ("; DROP TABLE", re.compile(r";\s*drop\s+(?:table|database)\b", re.I)),
        ("comment-terminated quote", re.compile(r"'\s*;?\s*--", re.I)),
    ],
}

# Words a pattern cannot match without (in ASCII text, lower-cased). A pattern that starts with \b gets no
# fast scan from the regex engine, which tries it at every position; checking these words first skips it
# for the texts that cannot match. Patterns not listed are fast already (they start with a literal).
INJECTION_NEEDS: dict[str, tuple[str, ...]] = {
    "ignore previous instructions": ("ignore", "disregard", "forget", "override"),
    "new instructions follow": ("instruction",),
    "DAN / do anything now": ("dan", "do anything now"),
    "developer or god mode": ("mode",),
    "role-play without rules": ("restrictions", "rules", "filters", "limits", "guidelines", "ethics"),
    "you are no longer bound": ("no longer",),
    "reveal the system prompt": ("system", "initial", "hidden"),
    "javascript: URL": ("javascript",),
    "UNION SELECT": ("union",),
}


def find_injection(
    text: str, categories: Sequence[str], *, prefilter: bool = True
) -> tuple[str, str, re.Match[str]] | None:
    """The first pattern (category order, then pattern order) that matches: (category, pattern name, match).
    Non-ASCII text is scanned by every pattern: under re.I some letters match others' case forms (ı, ſ, K)
    that lower-casing does not produce. ``prefilter=False`` scans with every pattern (for tests)."""
    lowered = text.lower() if prefilter and text.isascii() else None
    for category in categories:
        for name, pattern in INJECTION_PATTERNS[category]:
            needs = INJECTION_NEEDS.get(name)
            if lowered is not None and needs and not any(word in lowered for word in needs):
                continue
            match = pattern.search(text)
            if match:
                return category, name, match
    return None


# --- profanity --------------------------------------------------------------------------------------------

EN_WORDS = re.compile(
    r"\b(?:fuck\w*|motherfuck\w*|shit(?:ty|head)?|bitch(?:es)?|cunt|asshole|bastard|dickhead|wank(?:er)?|"
    r"nigg(?:er|a)s?|fag(?:got)?s?|retard(?:ed)?|whore|slut)\b",
    re.I,
)
ZH_WORDS = re.compile(r"他妈的|操你|草泥马|傻逼|傻B|煞笔|王八蛋|狗日的|婊子|贱人|去死吧|滚蛋|妈的|脑残|白痴")

REFUSALS = re.compile(
    r"^\s*(?:as an ai(?: language model)?|i(?:'m| am) (?:sorry|afraid)[, ]+(?:but )?i (?:can(?:no|')t|am unable)|"
    r"i (?:can(?:no|')t|am unable to|won't) (?:help|assist|provide|comply)|作为一个?(?:人工智能|AI)|抱歉，我无法)",
    re.I,
)
