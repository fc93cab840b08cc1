"""Renders a Pandoc AST to DOCX, ODT, EPUB or PDF with the pandoc binary of pypandoc-binary.

Every render is a subprocess (`asyncio.create_subprocess_exec`, so the event loop never waits on it),
holds one of `max_concurrent` slots for its whole duration (so a burst of compiles cannot fork a
pandoc each), and is killed when it runs past `timeout_s` or its caller is cancelled. PDF is pandoc's
Typst output compiled by the `typst` package in a second subprocess (`lace_engine.export.typst_pdf`),
with the embedded fonts only. `SOURCE_DATE_EPOCH` (the artifact's update time) fixes every timestamp
pandoc and Typst write, so one IR version gives the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lace_engine.errors import ExportFailed
from lace_engine.pipeline.pandoc_ast import with_span_anchors

log = logging.getLogger(__name__)

# Set and show rules for the PDF, placed after the template's own (pandoc's `header-includes`): ruled
# tables with a bold header row, shaded code blocks, a bar beside quotes, coloured links.
TYPST_STYLE = """\
#set par(justify: true)
#show list: set par(justify: false)
#show enum: set par(justify: false)
#set table(stroke: 0.5pt + luma(170), inset: (x: 7pt, y: 5pt))
#show table.cell: set align(left)
#show table.cell.where(y: 0): set text(weight: "bold")
#show raw.where(block: true): set block(fill: luma(246), stroke: 0.5pt + luma(215), inset: 8pt, radius: 3pt,
  width: 100%)
#show quote.where(block: true): it => block(stroke: (left: 2pt + luma(190)), inset: (left: 10pt, y: 3pt), it.body)
#show link: set text(fill: rgb("#1f4e8c"))
#show heading: set block(above: 1.3em, below: 0.7em)"""

# pandoc's arguments for each binary format: Pandoc AST in on stdin, the document out on stdout.
_PANDOC_TO: dict[str, tuple[str, ...]] = {
    "docx": ("-t", "docx"),
    "odt": ("-t", "odt"),
    # One chapter (XHTML file) per top-level section: nodes of depth 1 are level-2 headers.
    "epub": ("-t", "epub3", "--split-level=2"),
    "pdf": ("-t", "typst", "--standalone", "-V", "papersize=a4", "-V", f"header-includes={TYPST_STYLE}"),
}

BINARY_FORMATS = frozenset(_PANDOC_TO)

# What a failure message quotes of the renderer's stderr, at most.
_STDERR_CHARS = 600


def pandoc_path() -> str:
    """The pandoc binary inside the pypandoc-binary wheel (no system package needed)."""
    try:
        import pypandoc
        path: str = pypandoc.get_pandoc_path()
    except (ImportError, OSError) as exc:
        raise ExportFailed(f"pandoc is not available ({exc}); install the pypandoc-binary package",
                           reason="PANDOC_MISSING") from exc
    return path


@dataclass(frozen=True, slots=True)
class ExportLimits:
    # Renders running at once in this process; more wait for a slot.
    max_concurrent: int = 2
    # Seconds one render (all its subprocesses) may take once it has a slot.
    timeout_s: float = 120.0


class Exporter:
    """Renders Pandoc ASTs to the binary formats, at most `limits.max_concurrent` at a time."""

    def __init__(self, limits: ExportLimits | None = None, *, pandoc: str | None = None):
        self.limits = limits or ExportLimits()
        self._pandoc = pandoc
        self._slots = asyncio.Semaphore(max(1, self.limits.max_concurrent))

    @property
    def pandoc(self) -> str:
        if self._pandoc is None:
            self._pandoc = pandoc_path()
        return self._pandoc

    async def render(self, fmt: str, ast: dict[str, Any], *, source_date_epoch: int) -> bytes:
        """The document in format `fmt` (docx, odt, epub or pdf); ExportFailed when a renderer fails."""
        if fmt not in _PANDOC_TO:
            raise ValueError(f"not a binary format: {fmt!r}")
        if fmt == "odt":  # pandoc's ODT writer drops Div identifiers but makes Span ones bookmarks
            ast = with_span_anchors(ast)
        document = json.dumps(ast, ensure_ascii=False, separators=(",", ":")).encode()
        env = _environment(source_date_epoch)
        async with self._slots:
            try:
                async with asyncio.timeout(self.limits.timeout_s):
                    out = await _run("pandoc", [self.pandoc, "-f", "json", *_PANDOC_TO[fmt], "-o", "-"],
                                     document, env)
                    if fmt == "pdf":
                        out = await _run("typst", [sys.executable, "-m", "lace_engine.export.typst_pdf",
                                                   str(source_date_epoch)], out, env)
            except TimeoutError:
                raise ExportFailed(f"rendering {fmt} took longer than {self.limits.timeout_s:g} s and was stopped",
                                   reason="EXPORT_TIMEOUT", metadata={"format": fmt}) from None
        return out


def _environment(source_date_epoch: int) -> dict[str, str]:
    # A minimal environment: no user data directory (templates, reference documents) changes the
    # output, and the timestamps come from the IR. (Not `--sandbox`: it also stops pandoc reading
    # SOURCE_DATE_EPOCH, dating every document 1970. The AST has no Image or raw elements, so pandoc
    # reads no file either way.)
    env = {"SOURCE_DATE_EPOCH": str(source_date_epoch), "LANG": "C.UTF-8", "PATH": os.environ.get("PATH", "")}
    if "PYTHONPATH" in os.environ:  # the Typst step imports lace_engine like this process does
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


async def _run(what: str, argv: Sequence[str], stdin: bytes, env: dict[str, str]) -> bytes:
    """Runs one renderer to completion; kills it if the caller is cancelled or times out."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env)
    except OSError as exc:
        raise ExportFailed(f"could not start {what} ({argv[0]}): {exc}", reason="EXPORT_FAILED") from exc
    try:
        out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()[-_STDERR_CHARS:] or "no message"
        log.warning("%s exited with %s: %s", what, proc.returncode, message)
        raise ExportFailed(f"{what} failed (exit status {proc.returncode}): {message}",
                           metadata={"renderer": what, "exit_status": str(proc.returncode)})
    return out
