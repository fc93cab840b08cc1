"""A tokenizer-free token estimate, good enough for budgeting prompts."""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    """Estimates BPE tokens as ceil(max(chars / 4, words * 1.3)) for any model, with no downloads.

    English prose averages about 4 characters and 0.75 words per token with the common BPE
    vocabularies, so both terms land near the true count; taking the larger one keeps the
    estimate on the safe side for the texts each term underrates: long runs of short words
    (counted by words) and code, URLs, numbers or non-Latin scripts (counted by characters).
    The estimate is subadditive, estimate(a + b) <= estimate(a) + estimate(b), so summing
    the estimates of parts never underestimates the whole they are joined into.
    """
    if not text:
        return 0
    # Integer arithmetic: ceil(words * 13 / 10) without float rounding surprises.
    by_words = (len(text.split()) * 13 + 9) // 10
    by_chars = math.ceil(len(text) / 4)
    return max(by_words, by_chars)
