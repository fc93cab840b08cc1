"""`python -m lace_engine.export.typst_pdf EPOCH`: Typst source on stdin, the PDF on stdout.

Run as a subprocess by the exporter so that a long or stuck compile can be killed and never holds the
server's event loop or its GIL. Only Typst's embedded fonts are used, so every machine makes the same
PDF, and EPOCH (seconds, as SOURCE_DATE_EPOCH) is the document's creation date.
"""

from __future__ import annotations

import sys

import typst


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m lace_engine.export.typst_pdf EPOCH < document.typ > document.pdf", file=sys.stderr)
        return 2
    source = sys.stdin.buffer.read()
    try:
        pdf = typst.compile(source, format="pdf", ignore_system_fonts=True, timestamp=int(argv[0]))
    except Exception as exc:  # typst raises its own error types for bad input
        print(f"typst: {exc}", file=sys.stderr)
        return 1
    if not isinstance(pdf, bytes):
        print("typst returned no PDF", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(pdf)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
