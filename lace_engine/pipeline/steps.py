"""The step kinds of a run as data: how each is asked for, bounded, prompted, parsed and planned.

The orchestrator and the context builder look a step up in STEPS instead of branching on its
kind, so adding a kind is one object here. Every method is a pure function of its arguments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from lace_engine.domain import Block, Node, RunOptions, StepKind
from lace_engine.pipeline import apply
from lace_engine.pipeline.apply import Mutation, Provenance, Rejection
from lace_engine.pipeline.proposal_schema import CallSchema, content_schema, split_schema
from lace_engine.pipeline.proposals import ProposalFormatError, parse_content, parse_split

SPLIT_SYSTEM = """\
You are a careful planner of long-form documents. A document grows as a tree of sections; \
you plan one section at a time by dividing it into subsections that writers fill in later.

Answer ONLY with one JSON object matching the given schema and nothing else: a "children" array \
whose entries each have a "title" (a short heading naming what that subsection is about), an \
"intent" and "target_words".

Rules:
- Propose exactly child_count children (child_count is in the TASK line at the end of the message).
- Their target_words must add up to the section's target_words; a total more than 10% off is rejected.
- Every title must be non-empty, distinct from the other titles you propose, and must not \
repeat a heading already covered elsewhere in the document.
- Each intent says in one or two sentences what that subsection must cover, so that together \
the subsections cover this section's intent without overlapping each other or other sections.
- Never invent ids or cross-references; answer with titles, intents and word budgets only.
- Follow the brief, the style and the instruction, if any. When feedback on a rejected \
previous answer is given, fix every point it raises.
- The TASK line at the end restates the task as JSON; it is authoritative."""

WRITE_SYSTEM = """\
You are a careful writer of long-form documents. A document grows as a tree of sections; \
you write the content of one section, knowing where it sits and what the sections around it cover.

Answer ONLY with one JSON object matching the given schema and nothing else: a "blocks" array \
and a "summary".

Rules:
- Write about target_words words (target_words is in the TASK line at the end of the message); \
words inside code blocks do not count.
- Allowed block kinds: paragraph, heading, bullet_list, ordered_list, code, quote, table. \
Give every field; leave unused ones empty ("", [] or 0).
- paragraph, heading and quote use text; bullet_list and ordered_list use items, one string \
per item; code uses text and language; table uses table_header and table_rows, every row \
with as many cells as the header.
- heading_level is 1 or 2, relative to this section: 1 is a subheading directly under the \
section's own title. Use headings sparingly.
- Do not repeat the section's title as a heading; it is rendered for you. Do not repeat \
headings already covered elsewhere in the document.
- Stay within this section's intent: do not cover what the other sections cover, and do not \
introduce or conclude the whole document unless the intent asks for it.
- summary: one or two sentences on what this section says, for the writers of later sections.
- Never invent ids or cross-references to sections that are not listed.
- Follow the brief, the style and the instruction, if any. When feedback on a rejected \
previous answer is given, fix every point it raises.
- The TASK line at the end restates the task as JSON; it is authoritative."""


class Step(ABC):
    """One step kind; `child_count` is the strategy's (0 for a write)."""

    kind: StepKind
    system_prompt: str

    # Whether the step's prompt offers source passages to cite.
    cites: bool = False

    @abstractmethod
    def call_schema(self, node: Node, child_count: int, content_style: str, citable: int = 0) -> CallSchema:
        """The JSON schema and output-token budget of this step's call for `node`, whose prompt
        numbered `citable` passages."""

    def task(self, node: Node, child_count: int) -> dict[str, Any]:
        """The fields this step adds to the prompt's TASK line."""
        return {}

    def node_lines(self, node: Node, child_count: int) -> list[str]:
        """The lines this step adds to the prompt's "This section" part."""
        return []

    @abstractmethod
    def directive(self, title: str, node: Node, child_count: int) -> str:
        """The closing sentence that asks for the answer."""

    def plan(self, node: Node, data: Any, *, existing: Sequence[Block], options: RunOptions,
             provenance: Provenance, citable: Sequence[UUID] = ()) -> Mutation | Rejection:
        """Parses the model's decoded answer and lets Apply plan it; a Rejection says why not."""
        try:
            return self._plan(node, data, existing, options, provenance, citable)
        except ProposalFormatError as exc:
            return Rejection(tuple(exc.errors))

    @abstractmethod
    def _plan(self, node: Node, data: Any, existing: Sequence[Block], options: RunOptions,
              provenance: Provenance, citable: Sequence[UUID]) -> Mutation | Rejection:
        """Apply's plan of the parsed answer; raises ProposalFormatError when it cannot be parsed."""


class SplitStep(Step):
    """Divides a section into `child_count` planned subsections."""

    kind = StepKind.SPLIT
    system_prompt = SPLIT_SYSTEM

    def call_schema(self, node: Node, child_count: int, content_style: str, citable: int = 0) -> CallSchema:
        return split_schema(child_count, node.target_words)

    def task(self, node: Node, child_count: int) -> dict[str, Any]:
        return {"child_count": child_count}

    def node_lines(self, node: Node, child_count: int) -> list[str]:
        return [f"Subsections to propose: {child_count}"]

    def directive(self, title: str, node: Node, child_count: int) -> str:
        return (f'Propose exactly {child_count} subsections of "{title}" whose target_words add up to '
                f"{node.target_words}. Answer with the JSON object only.")

    def _plan(self, node: Node, data: Any, existing: Sequence[Block], options: RunOptions,
              provenance: Provenance, citable: Sequence[UUID]) -> Mutation | Rejection:
        return apply.plan_split(node, parse_split(data), options=options, provenance=provenance)


class WriteStep(Step):
    """Writes a section's content blocks and summary."""

    kind = StepKind.WRITE
    system_prompt = WRITE_SYSTEM
    cites = True

    def call_schema(self, node: Node, child_count: int, content_style: str, citable: int = 0) -> CallSchema:
        return content_schema(node.target_words, style=content_style, citable=citable)

    def directive(self, title: str, node: Node, child_count: int) -> str:
        return (f'Write the content of "{title}": about {node.target_words} words of blocks, and a summary '
                "of one or two sentences. Answer with the JSON object only.")

    def _plan(self, node: Node, data: Any, existing: Sequence[Block], options: RunOptions,
              provenance: Provenance, citable: Sequence[UUID]) -> Mutation | Rejection:
        return apply.plan_content(node, existing, parse_content(data), provenance=provenance, citable=citable)


STEPS: Mapping[StepKind, Step] = {step.kind: step for step in (SplitStep(), WriteStep())}
