"""The phrasings the cleaning steps look for: prompt injection and jailbreaks (English and Chinese), scripts and
SQL injection, obscenities and slurs (English and Chinese), and refusal boilerplate."""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.cleaning.pii import code_ranges

# --- decontamination --------------------------------------------------------------------------------------

# the verbs that set aside what came before, what came before, and what a model is told: an override is a verb
# of the first list, then (within a few words) a reference of the second or "your", then a noun of the third
_EN_SET_ASIDE = (
    r"ignore|disregard|forget|override|bypass|skip|abandon|discard|drop|neglect|overlook|scratch|cancel|erase|"
    r"set\s+aside|throw\s+(?:out|away)|pay\s+no\s+attention\s+to|stop\s+(?:following|obeying)|"
    r"do(?:n'?t|\s+not)\s+(?:follow|obey|listen\s+to)|no\s+longer\s+(?:follow|obey)"
)
_EN_BEFORE = r"previous|prior|above|earlier|original|initial|preceding|existing|old|system|developer'?s?|your|all"
_EN_TOLD = (
    r"instructions?|directions?|directives?|guidance|guidelines?|rules|orders|commands|prompts?|context|"
    r"constraints|polic(?:y|ies)|task|programming|training|setup|(?:(?<=system\s)|(?<=developer's\s))messages?"
)
_EN_AFTER = r"above|earlier|before|so\s+far|previously|first"
# phrasings that are a reference to what the model was told all by themselves
_EN_WHAT_YOU_WERE_TOLD = (
    r"(?:what|everything|anything|all)\s+(?:you\s+(?:were|have\s+been|got)|(?:the\s+)?\w+\s+(?:has|have))\s+"
    r"(?:told|given|asked|said|programmed|instructed|configured|set\s+up)|whatever\s+(?:the\s+\w+|you\s+were)\s+(?:told|said|wrote)"
)
_ZH_SET_ASIDE = (
    "忽略|无视|不要理会|不用理会|别管|不用管|不要管|忘记|忘掉|抛开|跳过|不用遵守|不必遵守|不要遵守|放弃|不再执行|"
    "不再遵守|不要再听从|撤销|停止执行"
)
_ZH_TOLD = "指令|指示|规则|规定|提示|设定|要求|限制|约束|任务|命令|准则|系统消息|一切"

INJECTION_PATTERNS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    "injection": [
        (
            "ignore previous instructions",
            re.compile(
                rf"\b(?:{_EN_SET_ASIDE})\b[^.;!?\n]{{0,40}}?(?:\b(?:{_EN_BEFORE})\b[^.;!?\n]{{0,30}}?\b(?:{_EN_TOLD})\b|"
                rf"\b(?:{_EN_TOLD})\b[^.;!?\n]{{0,20}}?\b(?:{_EN_AFTER})\b|\b(?:{_EN_WHAT_YOU_WERE_TOLD})\b)",
                re.I,
            ),
        ),
        ("new instructions follow", re.compile(r"\bnew\s+instructions?\s*:", re.I)),
        ("忽略之前的指令", re.compile(rf"(?:{_ZH_SET_ASIDE})[^。！？；\n]{{0,14}}?(?:{_ZH_TOLD})")),
    ],
    "jailbreak": [
        # DAN beside Chinese characters too (they count as word characters, so \b would not see the edge)
        ("DAN / do anything now", re.compile(r"(?<![A-Za-z0-9])DAN(?![A-Za-z0-9]|[ -]?\d)|\b(?i:do anything now)\b")),
        (
            "developer or god mode",
            re.compile(
                r"\b(?:developer|god|jailbreak|unrestricted|debug|admin|sudo|maintenance|root)\s+(?:mode|access)\b"
                r"[^.\n]{0,60}\b(?:no|without|off|disabled|suspended|lifted|removed|ignore|don'?t\s+apply|not\s+apply|"
                r"unlimited|any\s+kind|anything)\b|"
                r"\b(?:jailbreak|unrestricted)\s+mode\b|\b(?:developer|god)\s+mode\s*:?\s+(?:enabled|activated|on(?=\s*[.;:!,]|\s*$))",
                re.I,
            ),
        ),
        (
            "开发者模式",
            re.compile(
                r"(?:开发者|管理员|调试|上帝|无限制|越狱|最高)(?:模式|权限)[^。！？\n]{0,20}"
                r"(?:限制|过滤|政策|约束|安全|规则|审查|任何内容|任何问题)|(?:越狱|无限制)模式"
            ),
        ),
        (
            "role-play without rules",
            re.compile(
                r"\b(?:pretend|act|imagine|roleplay|role-play|play|you\s+are|you're|become|answer\s+as|respond\s+as|"
                r"simulate)\b[^.\n]{0,60}\b(?:no|without|free\s+from|released\s+from|broken?\s+(?:out\s+of|free\s+of)|"
                r"(?:doesn'?t|does\s+not|don'?t)\s+care\s+about|ignores?)\s+(?:any\s+|all\s+|the\s+usual\s+|its\s+)?"
                r"(?:restrictions|rules|filters|limits|limitations|guidelines|ethics|ethical|policies|censorship|morals|"
                r"content\s+polic(?:y|ies)|AI\s+limits)",
                re.I,
            ),
        ),
        (
            "扮演没有限制的AI",
            re.compile(
                r"(?:扮演|假装|你是|你就是|你现在是|变成|演|身份)[^。！？\n]{0,30}"
                r"(?:没有任何?|不受任何?|摆脱了?|突破了?|不在乎|无视|不需要遵守)[^。！？\n]{0,10}"
                r"(?:限制|规则|约束|准则|过滤|审查|道德|政策|底线)"
            ),
        ),
        ("you are no longer bound", re.compile(r"\bno longer (?:bound|restricted|limited)\b", re.I)),
    ],
    "prompt_extraction": [
        (
            "reveal the system prompt",
            re.compile(
                r"\b(?:reveal|print|show|repeat|output|tell me|what (?:is|are|was|were|does)|what's|share|paste|recite|"
                r"display|copy|leak|give me)\b[^.\n]{0,30}\b(?:your|the)\s+(?:\w+\s+)?"
                r"(?:system\s+(?:prompt|message)|initial\s+(?:prompt|instructions|configuration)|"
                r"hidden\s+(?:prompt|instructions|rules|directives)|pre-?prompt|preamble|setup\s+message|"
                r"secret\s+(?:rules|instructions))",
                re.I,
            ),
        ),
        (
            "what were you told before",
            re.compile(
                r"\b(?:instructions|rules|text|message|prompt)\s+(?:were\s+)?(?:you\s+(?:were\s+)?(?:given|told|received)|"
                r"(?:that\s+)?came\s+before\s+(?:this|my\s+first))",
                re.I,
            ),
        ),
        (
            "输出系统提示词",
            re.compile(
                r"你的?(?:系统|隐藏|初始|最初|原始|背后的?|预设)的?(?:提示|设定|指令|消息|规则)|"
                r"(?:你|开头|一开始|最初)收到的?(?:那段|那些|第一条)?(?:指令|说明|提示|消息)|"
                r"(?:输出|显示|告诉我|重复|打印)(?:你的)?系统(?:提示|消息)"
            ),
        ),
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
    "ignore previous instructions": (
        "ignore",
        "disregard",
        "forget",
        "override",
        "bypass",
        "skip",
        "abandon",
        "discard",
        "drop",
        "neglect",
        "overlook",
        "scratch",
        "cancel",
        "erase",
        "aside",
        "throw",
        "attention",
        "stop",
        "follow",
        "obey",
        "listen",
    ),
    "new instructions follow": ("instruction",),
    "DAN / do anything now": ("dan", "do anything now"),
    "developer or god mode": ("mode", "access"),
    "role-play without rules": (
        "restrictions",
        "rules",
        "filters",
        "limits",
        "guidelines",
        "ethic",
        "policies",
        "censorship",
        "morals",
        "policy",
    ),
    "you are no longer bound": ("no longer",),
    "reveal the system prompt": ("system", "initial", "hidden", "prompt", "preamble", "setup", "secret"),
    "what were you told before": ("you", "came before"),
    "javascript: URL": ("javascript",),
    "UNION SELECT": ("union",),
}


# "the <script> tag", "a <script> element": markup named in prose, as a tutorial does
NAMED_TAG = re.compile(r"\s*(?:tags?|elements?|blocks?|标签|元素)\b", re.I)
QUOTED = frozenset({"script", "sql"})  # the categories whose matches inside code are quoted, not injected
# a prompt that asks for code: its answer's markup and SQL are the code asked for
CODE_REQUEST = re.compile(
    r"\b(?:html|javascript|js|css|code|program|script|snippet|function|sql|query|queries|web\s?page|website|xss|"
    r"injection|database)\b|代码|程序|网页|脚本|函数|查询|数据库",
    re.I,
)


def _quoted(category: str, text: str, match: re.Match[str], code: list[tuple[int, int]]) -> bool:
    """Whether a script or SQL match is code being taught or quoted (inside ``` fences or `inline` code, or a
    tag named in prose) rather than markup or SQL that would run."""
    if category not in QUOTED:
        return False
    if any(a <= match.start() < b for a, b in code):
        return True
    return category == "script" and bool(NAMED_TAG.match(text, text.find(">", match.end()) + 1 or match.end()))


def find_injection(
    text: str, categories: Sequence[str], *, prefilter: bool = True
) -> tuple[str, str, re.Match[str]] | None:
    """The first pattern (category order, then pattern order) that matches: (category, pattern name, match).
    Non-ASCII text is scanned by every pattern: under re.I some letters match others' case forms (ı, ſ, K)
    that lower-casing does not produce. Scripts and SQL inside code, or a tag named in prose ("the <script>
    tag"), are quoted rather than injected and do not count. ``prefilter=False`` scans with every pattern
    (for tests)."""
    lowered = text.lower() if prefilter and text.isascii() else None
    code: list[tuple[int, int]] | None = None
    for category in categories:
        for name, pattern in INJECTION_PATTERNS[category]:
            needs = INJECTION_NEEDS.get(name)
            if lowered is not None and needs and not any(word in lowered for word in needs):
                continue
            for match in pattern.finditer(text):
                if category in QUOTED and code is None:
                    code = code_ranges(text)
                if not _quoted(category, text, match, code or []):
                    return category, name, match
                if category not in QUOTED:
                    break
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
