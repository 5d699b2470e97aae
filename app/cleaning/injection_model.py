"""The learned prompt-injection detector: a logistic regression over character 1–4-grams and word 1–2-grams
(TF-IDF, scikit-learn), fitted on Refinery's own exemplars (app/cleaning/exemplars.py: attacks in English and
Chinese by category, and benign texts that share their words) the first time it is needed (about two
seconds). It reads text the way people write it: other verbs and nouns, words in between, questions, Chinese
without spaces, where fixed patterns see only the phrasings they list.

A text is cut into sentences (and the whole of it, when short); code (``` fences, `inline`) is left out, since
text that quotes code is not an instruction to the model. A sentence is scored only when it holds one of the
words every kind of attack needs (instructions, rules, prompt, mode, ignore, pretend, 指令, 规则, 忽略…): most
sentences of ordinary data do not, so the model runs on few of them, and a sentence with none of those words
cannot be flagged by the model however unusual it is. The evidence is the highest-scoring sentence, its score,
and the attack exemplar nearest to it (cosine similarity in the same features), whose category names the
decision."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from app.cleaning.exemplars import ATTACKS, BENIGN
from app.cleaning.pii import CODE

# words (English, matched on word boundaries) and Chinese terms an attack sentence holds at least one of
_EN_CUES = (
    r"instruct\w*|directions?|directives?|guid(?:ance|elines?)|rules?|orders?|commands?|prompts?|constraints?|"
    r"polic(?:y|ies)|restrict\w*|filter\w*|limit\w*|guardrails?|modes?|access|programm\w*|configur\w*|set ?up|"
    r"preamble|system|hidden|secret|initial|first|ethic\w*|moral\w*|censor\w*|uncensored|jailbr\w*|DAN|persona|"
    r"character|role-?play\w*|pretend\w*|act as|play|become|instead|never ?mind|ignore|disregard|forget|override|"
    r"bypass|skip|abandon|discard|neglect|obey\w*|disobey\w*|comply|only|regardless|whatever|"
    r"pwned|hacked|task|assignment|above|earlier|previous|prior|before"
)
_ZH_CUES = (
    "指令|指示|规则|规定|提示|设定|要求|限制|约束|政策|模式|过滤|审查|道德|扮演|越狱|忽略|无视|忘记|忘掉|别管|不要理会|"
    "不用管|跳过|抛开|放弃|遵守|不再|权限|系统|隐藏|原话|原文|原样|原封不动|逐字|只回复|只回答|一律|无论|不论|不管|直接输出|"
    "别回答|不要回答|别翻译|不要翻译|别总结|命令|准则|任务|之前|先前|上面|以上|前面|开头|一开始|最初|说明|身份|变成|"
    "当作|作废|取消"
)
CUES = re.compile(rf"\b(?:{_EN_CUES})\b|{_ZH_CUES}", re.IGNORECASE)
SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")
MAX_CHARS = 20_000  # of one text: an injection hides early or is repeated; the rest is not scored
WHOLE_UP_TO = 400  # texts this short are also scored whole (an attack spread over two sentences)


@dataclass(frozen=True)
class Finding:
    score: float
    category: str
    sentence: str
    exemplar: str
    similarity: float


class Detector:
    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_union

        attacks = [(text, category) for category, texts in ATTACKS.items() for text in texts]
        self.vectorizer = make_union(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True),
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
        )
        features = self.vectorizer.fit_transform([t for t, _c in attacks] + BENIGN)
        labels = [1] * len(attacks) + [0] * len(BENIGN)
        # attacks are rare in real data: a benign exemplar weighs twice what balancing the classes would give it
        weights = {0: 2 * len(attacks) / len(BENIGN), 1: 1.0}
        self.model = LogisticRegression(C=30.0, max_iter=5000, class_weight=weights).fit(features, labels)
        self.attacks = attacks
        self.attack_features = features[: len(attacks)]

    def sentences(self, text: str) -> list[str]:
        prose = CODE.sub(" ", text[:MAX_CHARS]) if "`" in text else text[:MAX_CHARS]
        parts = [m.group().strip() for m in SENTENCE.finditer(prose)]
        if len(prose) <= WHOLE_UP_TO and len(parts) > 1:
            parts.append(prose.strip())
        return [p for p in parts if p and CUES.search(p)]

    def find(self, texts: list[str], threshold: float) -> list[Finding | None]:
        """For each text, its highest-scoring sentence when that reaches the threshold, else None."""
        owners: list[int] = []
        candidates: list[str] = []
        for k, text in enumerate(texts):
            for sentence in self.sentences(text):
                owners.append(k)
                candidates.append(sentence)
        out: list[Finding | None] = [None] * len(texts)
        if not candidates:
            return out
        features = self.vectorizer.transform(candidates)
        scores = self.model.predict_proba(features)[:, 1]
        best: dict[int, int] = {}
        for row, (owner, score) in enumerate(zip(owners, scores, strict=True)):
            if score >= threshold and (owner not in best or score > scores[best[owner]]):
                best[owner] = row
        if not best:
            return out
        rows = list(best.values())
        # the union's two parts are each of unit length: halve the dot product for a cosine
        similarity = (features[rows] @ self.attack_features.T).toarray() / 2
        for (owner, row), sims in zip(best.items(), similarity, strict=True):
            nearest = int(sims.argmax())
            text, category = self.attacks[nearest]
            out[owner] = Finding(
                round(float(scores[row]), 3), category, candidates[row], text, round(float(sims[nearest]), 3)
            )
        return out


@functools.cache
def detector() -> Detector:
    """The process's detector, fitted on first use."""
    return Detector()
