"""Turns an uploaded source into plain text and splits it into passages. Pure: bytes in, text out.

Passages are the unit of retrieval, prompting and citation: long enough to carry a claim with
its context, short enough that several fit a prompt beside everything else.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from lace_engine.errors import InvalidArgument

MEDIA_TYPES = ("text/markdown", "text/plain", "text/html", "application/pdf")
MAX_SOURCE_BYTES = 10 * 1024 * 1024
MAX_PDF_PAGES = 500
MAX_SOURCE_CHARS = 2_000_000
MAX_TITLE_CHARS = 300
# A passage grows paragraph by paragraph to at least PASSAGE_MIN_WORDS; a paragraph longer than
# PASSAGE_MAX_WORDS is cut at sentence ends (or, failing those, at a word) into pieces that fit.
PASSAGE_MIN_WORDS = 60
PASSAGE_MAX_WORDS = 160


@dataclass(frozen=True, slots=True)
class PassageSpan:
    ordinal: int
    start: int
    end: int
    text: str


def extract_text(media_type: str, data: bytes) -> str:
    """The source's text, normalized; InvalidArgument (reason INVALID_SOURCE) if it has none or cannot be read."""
    if media_type not in MEDIA_TYPES:
        raise InvalidArgument(f"media_type must be one of {', '.join(MEDIA_TYPES)}, not {media_type!r}",
                              reason="UNSUPPORTED_MEDIA_TYPE", metadata={"field": "media_type"})
    if not data:
        raise _invalid("the source is empty")
    if len(data) > MAX_SOURCE_BYTES:
        raise InvalidArgument(f"the source is {len(data)} bytes; at most {MAX_SOURCE_BYTES} are accepted",
                              reason="SOURCE_TOO_LARGE", metadata={"limit_bytes": str(MAX_SOURCE_BYTES)})
    if media_type == "application/pdf":
        text = _pdf_text(data)
    else:
        try:
            decoded = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _invalid(f"the source is not valid UTF-8 text (byte {exc.start})") from None
        text = _html_text(decoded) if media_type == "text/html" else decoded
    text = normalize(text)
    if not text.strip():
        raise _invalid("the source has no text")
    if len(text) > MAX_SOURCE_CHARS:
        raise InvalidArgument(f"the source's text has {len(text)} characters; at most {MAX_SOURCE_CHARS} are "
                              "accepted", reason="SOURCE_TOO_LARGE", metadata={"limit_chars": str(MAX_SOURCE_CHARS)})
    return text


def normalize(text: str) -> str:
    """One newline convention, no trailing spaces, no control characters, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]", " ", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_passages(text: str) -> list[PassageSpan]:
    """Consecutive passages covering every paragraph of `text`; text[start:end] is each one's text."""
    pieces: list[tuple[int, int]] = []
    for para in re.finditer(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", text, re.DOTALL):
        pieces.extend(_cut(text, para.start(), para.end()))
    spans: list[PassageSpan] = []
    start = end = -1
    words = 0
    for s, e in pieces:
        n = len(text[s:e].split())
        if start >= 0 and (words >= PASSAGE_MIN_WORDS or words + n > PASSAGE_MAX_WORDS):
            spans.append(PassageSpan(len(spans), start, end, text[start:end]))
            start = -1
        if start < 0:
            start, words = s, 0
        end, words = e, words + n
    if start >= 0:
        spans.append(PassageSpan(len(spans), start, end, text[start:end]))
    return spans


def _cut(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as pieces of at most PASSAGE_MAX_WORDS words, cut after sentences where possible."""
    out: list[tuple[int, int]] = []
    while len(text[start:end].split()) > PASSAGE_MAX_WORDS:
        word_ends = [m.end() for m in re.finditer(r"\S+", text[start:end])][:PASSAGE_MAX_WORDS]
        limit = start + word_ends[-1]
        sentence_ends = [start + m.end() for m in re.finditer(r"[.!?][\"')\]]?(?=\s)", text[start:limit])]
        cut = sentence_ends[-1] if sentence_ends and sentence_ends[-1] > start + word_ends[PASSAGE_MIN_WORDS // 2] \
            else limit
        out.append((start, cut))
        start = cut + (len(text[cut:end]) - len(text[cut:end].lstrip()))
    if start < end:
        out.append((start, end))
    return out


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise _invalid("the PDF is encrypted; upload an unencrypted copy")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise InvalidArgument(f"the PDF has {len(reader.pages)} pages; at most {MAX_PDF_PAGES} are accepted",
                                  reason="SOURCE_TOO_LARGE", metadata={"limit_pages": str(MAX_PDF_PAGES)})
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # pypdf reports a malformed file through several exception types.
        raise _invalid(f"the PDF cannot be read: {exc}") from None
    return "\n\n".join(p.strip() for p in pages if p.strip())


class _TextOfHtml(HTMLParser):
    # Elements whose end starts a new paragraph, and whose text is never content.
    BLOCKS = frozenset({"p", "div", "section", "article", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6",
                        "blockquote", "pre", "table", "tr", "br", "hr", "header", "footer", "main", "dd", "dt"})
    SKIP = frozenset({"script", "style", "noscript", "template", "head", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def _html_text(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(lines)


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_SOURCE", metadata={"field": "content"})
