"""Languages of speech: the codes Whisper knows and how a config's or a data set's spelling maps to one, which
models can transcribe which, and a set's scores per language.

A trial's language is `data.language` (default "en"); an utterance may carry its own (`language` in its dict,
from a data set's, manifest's or table's language column), which wins. Whisper tasks put the language's token
in a multilingual model's labels and tell its decoder the same; an English-only model refuses any other
language before a trial starts (`trainables.assets.check_model_language`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

LANGUAGE_COLUMNS = ("language", "lang", "locale", "language_code")
"""A data set's, manifest's or table's column naming each utterance's language, looked for in this order."""
UNSPACED = frozenset({"zh", "ja", "th", "lo", "my", "km", "bo", "yue"})
"""Languages written without spaces between words: their WER counts whole sentences, so CER is the headline."""
MULTILINGUAL_VOCAB = 51865
"""Whisper's multilingual vocabulary size (English-only models have 51864)."""


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    return dict(LANGUAGES), dict(TO_LANGUAGE_CODE)


def language_code(value: Any, where: str) -> str:
    """Whisper's code for `value`: a code (de), a name in any case (German, as FLEURS's language column has
    it), or a locale (de_de, pt-BR). One-line ValueError naming `where` otherwise."""
    codes, names = _tables()
    raw = " ".join(str(value).split()).lower() if value is not None else ""
    if raw in codes:
        return raw
    if raw in names:
        return names[raw]
    head = re.split(r"[_\-]", raw, maxsplit=1)[0]
    if head in codes:
        return head
    words = [w for w in re.split(r"[\s()]+", raw) if w]
    for word in (words[-1:] + words[:1]) if words else []:  # "Mandarin Chinese", "Nepali (macrolanguage)"
        if word in names:
            return names[word]
    raise ValueError(f"{where}: {value!r} is not a language Whisper knows (give a code such as en, de, fr, "
                     "a name such as German, or a locale such as de_de)")


def headline(language: str) -> str:
    """The error rate that reads as the headline for `language`: cer where words are not spaced, else wer."""
    return "cer" if language in UNSPACED else "wer"


def languages_of(utts: Sequence[dict], default: str) -> list[str]:
    """Each utterance's language: its own, else `default`."""
    return [u.get("language") or default for u in utts]


def per_language(rows: Sequence[dict]) -> dict[str, float]:
    """`wer_<lang>` and `cer_<lang>` of scored rows (evaluate's, each with `language`) when they hold more than
    one language; nothing for a set in one language (its rates are the set's own)."""
    from trainables.blocks.metrics import error_rates

    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r.get("language") or "en", []).append(r)
    if len(by) < 2:
        return {}
    out: dict[str, float] = {}
    for lang, group in sorted(by.items()):
        rates = error_rates([r["reference"] for r in group], [r["hypothesis"] for r in group], language=lang)
        out.update({f"wer_{lang}": rates["wer"], f"cer_{lang}": rates["cer"]})
    return out
