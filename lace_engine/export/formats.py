"""The compiled formats: media type, file extension and whether the document is bytes. Pure."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    media_type: str
    extension: str
    binary: bool


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("markdown", "text/markdown", "md", False),
    Format("html", "text/html", "html", False),
    Format("json", "application/json", "json", False),
    Format("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx", True),
    Format("odt", "application/vnd.oasis.opendocument.text", "odt", True),
    Format("epub", "application/epub+zip", "epub", True),
    Format("pdf", "application/pdf", "pdf", True),
)}

_MAX_SLUG = 80


def slug(title: str) -> str:
    """The title as a file-name stem: ASCII letters and digits, words joined by hyphens, at most 80."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    stem = ""
    for word in words:
        candidate = f"{stem}-{word}" if stem else word
        if len(candidate) > _MAX_SLUG:
            break
        stem = candidate
    return stem or (words[0][:_MAX_SLUG] if words else "artifact")


def file_name(title: str, fmt: str) -> str:
    """Where to save a compiled document: the title's slug with the format's extension."""
    return f"{slug(title)}.{FORMATS[fmt].extension}"
