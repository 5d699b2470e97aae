"""Validation codes and the sentence shown for each (translated when displayed, never stored translated).

Codes are machine-readable and the same in every language; parameters fill the sentence.
"""

from __future__ import annotations

from typing import Any

from app.core.i18n import N_, gettext

MESSAGES: dict[str, str] = {
    "encoding": N_("This line is not valid UTF-8; save the file as UTF-8."),
    "invalid_json": N_("Invalid JSON at column %(col)s: %(msg)s."),
    "json_truncated": N_("Invalid JSON (%(msg)s); the rest of the file after this point could not be read."),
    "json_not_array": N_("A .json file must hold an array of records; use JSONL for one record per line."),
    "json_too_deep": N_("The JSON is nested too deeply to read; flatten this record."),
    "json_nan": N_("%(name)s is not valid JSON; write null or a number instead."),
    "json_duplicate_key": N_('The key "%(key)s" appears twice in one object; keep only one.'),
    "json_lone_surrogate": N_("The text contains a lone surrogate escape (such as \\ud800); fix the encoding."),
    "csv_error": N_("CSV error: %(msg)s. Check the quotes on this row; the rest of the file could not be read."),
    "csv_columns": N_("This row has %(got)s columns but the header has %(want)s."),
    "parquet_error": N_("The Parquet file cannot be read (%(msg)s); write it again with a current pyarrow."),
    "not_an_object": N_("Each record must be a JSON object with named fields."),
    "unknown_format": N_("No known record format matches the fields %(fields)s; see the list of formats."),
    "missing_field": N_('The field "%(field)s" is missing; add it to this record.'),
    "wrong_type": N_('The field "%(field)s" must be %(expected)s.'),
    "unknown_role": N_('Message %(index)s has the role "%(role)s"; use one of %(allowed)s.'),
    "empty_content": N_("Message %(index)s (%(role)s) is empty; write its text or remove it."),
    "no_assistant_turn": N_("There is no assistant turn to learn from; add the answer."),
    "roles_out_of_order": N_("Message %(index)s (%(role)s) is out of order: after %(previous)s comes %(expected)s."),
    "empty_text": N_("The text is empty."),
    "record_too_large": N_(
        "This record is larger than %(limit)s bytes, so it was not read; split it, or an administrator can raise "
        "REFINERY_MAX_RECORD_BYTES."
    ),
    "too_long": N_("This record is %(tokens)s tokens but the model's context is %(context)s; shorten it or split it."),
    "media": N_(
        "This record carries %(found)s (%(where)s), but the models trained here read text only; remove the media "
        "or describe it in words. Nothing was imported from this record."
    ),
    "bad_content_part": N_(
        'The content part %(field)s has the keys %(keys)s; a text part is {"type": "text", "text": "…"} '
        '(or "value" in place of "text").'
    ),
    "weight_not_assistant": N_(
        "%(field)s is set on a %(role)s message; a weight decides whether an assistant turn is trained, so set it "
        "on assistant messages only."
    ),
    "unknown_columns": N_(
        "No known record format matches the columns %(fields)s; map them to record fields (for example a question "
        "column to prompt and an answer column to completion) under “Format, columns and splits” on the dataset page, "
        "or with column_mapping in the API."
    ),
    "no_pairs": N_("The responses need at least two different ranks to make a preference pair."),
}


def describe(code: str, params: dict[str, Any] | None = None) -> str:
    template = MESSAGES.get(code)
    if template is None:
        return code
    return gettext(template, **(params or {})) if params else gettext(template)
