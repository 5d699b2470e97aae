"""Words the cleaning pages show for parameters, their choices and the reasons behind decisions."""

from __future__ import annotations

from app.core.i18n import N_

PARAM_LABELS = {
    "nfkc": N_("Unicode NFKC"),
    "whitespace": N_("Tidy whitespace"),
    "control": N_("Remove control characters"),
    "fields": N_("Compare"),
    "threshold": N_("Threshold"),
    "shingle": N_("Shingle size"),
    "num_perm": N_("Permutations"),
    "keep": N_("Keep"),
    "kinds": N_("Find"),
    "style": N_("Then"),
    "categories": N_("Look for"),
    "word_lists": N_("Word lists"),
    "min_words": N_("At least words"),
    "max_words": N_("At most words"),
    "include": N_("Must contain one of (one per line)"),
    "exclude": N_("Must not contain (one per line)"),
    "regex_exclude": N_("Drop when it matches (regular expression)"),
    "require_answer": N_("Require an answer"),
    "max_repetition": N_("Most repetition"),
    "refusals": N_("Drop refusals"),
    "min_answer_ratio": N_("Shortest answer (share of the question)"),
    "languages": N_("Only these languages (one code per line: en, zh…)"),
    "against": N_("Against"),
    "version_id": N_("Eval set"),
    "ngram": N_("Shared words"),
    "judge_id": N_("Judge"),
}

CRITERIA_LABELS = {
    "relevance": N_("Relevance"),
    "clarity": N_("Clarity"),
    "completeness": N_("Completeness"),
    "accuracy": N_("Accuracy"),
}

OPTION_LABELS = {
    "all": N_("the whole record"),
    "prompt": N_("the prompt only"),
    "first": N_("the earliest record"),
    "placeholder": N_("replace with a placeholder"),
    "pseudonym": N_("replace with a consistent pseudonym"),
    "drop": N_("drop the record"),
    "email": N_("e-mail"),
    "phone": N_("phone number"),
    "credit_card": N_("card number"),
    "iban": N_("IBAN"),
    "ip": N_("IP address"),
    "cn_id": N_("Chinese resident ID"),
    "secret": N_("API key or secret"),
    "url_credentials": N_("URL with a password"),
    "injection": N_("prompt injection"),
    "jailbreak": N_("jailbreak"),
    "prompt_extraction": N_("system-prompt extraction"),
    "script": N_("script or HTML"),
    "sql": N_("SQL injection"),
    "test": N_("this version's test split"),
    "validation_and_test": N_("its validation and test splits"),
    "version": N_("another version (an eval set)"),
}

REASON_LABELS = {
    "normalised": N_("normalised"),
    "duplicate": N_("exact duplicate"),
    "near_duplicate": N_("near duplicate"),
    "pii": N_("personal data"),
    "pii_redacted": N_("personal data redacted"),
    "listed_word": N_("listed word"),
    "offensive": N_("offensive"),
    "length": N_("length"),
    "missing_keyword": N_("missing keyword"),
    "excluded_keyword": N_("excluded keyword"),
    "regex": N_("regular expression"),
    "no_answer": N_("no answer"),
    "repetitive": N_("repetitive"),
    "refusal": N_("refusal"),
    "short_answer": N_("short answer"),
    "language": N_("language"),
    "contaminated": N_("in the eval set"),
    "semantic_duplicate": N_("same meaning"),
    "low_score": N_("scored low by the judge"),
    **{k: OPTION_LABELS[k] for k in ("injection", "jailbreak", "prompt_extraction", "script", "sql")},
}
