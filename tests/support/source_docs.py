"""The example sources of the README (examples/sources): a Markdown note and a PDF report on the
helpers' brief, grid-scale energy storage. The PDF was written by tests/support/pdf.text_pdf."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sources"
MARKDOWN = (EXAMPLES / "storage-notes.md").read_text(encoding="utf-8")


def pdf_bytes() -> bytes:
    return (EXAMPLES / "siting-and-policy.pdf").read_bytes()
