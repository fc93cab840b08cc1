"""A deterministic stand-in for a model: plausible proposals built from seeded vocabulary.

Runs, tests and benchmarks use it with no network and no model. The output depends only on
the request's seed and task, so a run replays identically; the word counts are exact, so the
length scoring downstream is predictable.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from lace_engine.llm.base import LLMBadRequest, LLMRequest, LLMResponse
from lace_engine.tokens import estimate_tokens

OFFLINE_PROVIDER = "offline"
OFFLINE_MODEL = "lace-offline-1"

_T = TypeVar("_T")


def _by_words(phrases: Iterable[str]) -> dict[int, tuple[str, ...]]:
    # Grouped by their own word count, so exact-length sentences need no counting afterwards
    # and a miscounted table entry is impossible.
    groups: dict[int, list[str]] = {}
    for phrase in phrases:
        groups.setdefault(len(phrase.split()), []).append(phrase)
    return {n: tuple(v) for n, v in sorted(groups.items())}


# ---------------------------------------------------------------------------------------------
# Vocabulary: immutable tables only.

# Every subject is singular, to agree with the verbs' -s form.
_SUBJECTS = _by_words((
    "the team", "each component", "the design", "this approach", "the process", "every decision",
    "the plan", "the baseline", "each reviewer", "the system", "a checklist", "the roadmap",
    "the document", "each milestone", "the schedule", "the proposal",
    "the proposed approach", "each design decision", "the review process", "a clear baseline",
    "the current plan", "every interface contract", "the delivery team", "a shared vocabulary",
    "the chosen structure", "each open question", "the testing strategy", "a written rationale",
    "the scope of work", "a short feedback loop", "the order of work", "a consistent naming scheme",
    "the list of assumptions", "each stage of review", "the set of constraints",
    "a record of decisions", "the quality of inputs",
))

# (third person singular, base form)
_VERBS: tuple[tuple[str, str], ...] = (
    ("shapes", "shape"), ("clarifies", "clarify"), ("supports", "support"), ("constrains", "constrain"),
    ("informs", "inform"), ("reduces", "reduce"), ("strengthens", "strengthen"), ("defines", "define"),
    ("highlights", "highlight"), ("guides", "guide"), ("simplifies", "simplify"), ("anchors", "anchor"),
    ("frames", "frame"), ("improves", "improve"), ("balances", "balance"), ("exposes", "expose"),
    ("protects", "protect"), ("sharpens", "sharpen"), ("limits", "limit"), ("reveals", "reveal"),
)
_VERBS_S: tuple[str, ...] = tuple(v for v, _ in _VERBS)

_OBJECTS = _by_words((
    "the scope", "later choices", "the trade-offs", "known risks", "the outcome", "shared expectations",
    "the timeline", "team ownership", "the budget", "open questions", "future changes", "the interfaces",
    "the overall scope", "the main trade-offs", "the expected outcomes", "how risks surface",
    "the review criteria", "most practical decisions", "the delivery schedule",
    "the remaining uncertainty", "the working assumptions", "the critical path", "each related task",
    "the boundaries between components", "the cost of change", "how decisions are recorded",
    "the needs of readers", "the quality of results", "the pace of delivery",
    "the way teams collaborate", "the order of priorities",
))

_ADVERBS: tuple[str, ...] = (
    "often", "usually", "quietly", "directly", "steadily", "largely", "clearly", "gradually",
    "consistently", "typically", "naturally", "visibly",
)

_OPENERS = _by_words((
    "Typically,", "Often,", "Here,", "Meanwhile,", "Ideally,", "Consequently,", "Similarly,", "Moreover,",
    "In practice,", "Over time,", "By design,", "In turn,", "For example,", "At first,", "In general,",
    "Above all,", "For this reason,", "As a result,", "In most cases,", "At each stage,",
    "From the outset,", "Just as importantly,", "In the meantime,",
))

_TAILS = _by_words((
    "in practice", "over time", "by default", "at scale", "without delay", "in advance",
    "from day one", "for most readers", "across related sections", "from the start", "at every stage",
    "with modest effort", "under real constraints", "for the long term",
    "without adding needless complexity", "as the work progresses", "while keeping costs predictable",
    "before work moves on", "when requirements change later", "for everyone involved here",
    "so that reviewers can follow", "with fewer surprises later on", "long before it becomes urgent",
    "in a way others can verify", "even when plans change quickly",
))

_CONJUNCTIONS: tuple[str, ...] = ("and", "while", "so", "because", "but", "whereas", "since")

# Lead-ins that turn a clause into a longer, more varied sentence. "{T}" marks the title.
_TITLE_FRAMES: tuple[tuple[str, int], ...] = tuple((f, len(f.split())) for f in (
    "Within {T},", "For {T}, it matters that", "A useful way to approach {T} is to ask how",
    "Nothing about {T} works well unless", "In the case of {T},", "When it comes to {T},",
    "Any account of {T} should recognise that",
))
_PLAIN_FRAMES: tuple[tuple[str, int], ...] = tuple((f, len(f.split())) for f in (
    "This is why", "One practical consequence is that", "In short,", "The central question is whether",
    "Readers should note that", "It follows that", "Experience suggests that", "It is worth noting that",
    "A common finding is that", "Put simply,",
))

_INTROS: tuple[str, ...] = (
    "This section covers {T} and explains why it matters.",
    "This section sets out {T} and the main considerations behind it.",
    "The focus here is {T}, and the choices it involves.",
    "What follows describes {T} and how its parts fit together.",
    "This part of the document is about {T} and what it asks of the reader.",
)

# Exact sentences for budgets too small for a clause.
_TINY = _by_words((
    "Noted.", "Agreed.", "Pending.",
    "Details follow.", "Nothing further.", "Scope confirmed.",
    "More detail follows.", "This stays brief.", "Review is pending.",
    "This section stays brief.", "The details follow later.", "Nothing further is needed.",
    "This section is kept brief.", "Further detail follows in context.", "The rest is covered elsewhere.",
))

_LIST_QUALIFIERS: tuple[str, ...] = (
    "Clear", "Explicit", "Consistent", "Documented", "Measurable", "Shared", "Early", "Regular",
    "Careful", "Visible",
)
_LIST_TOPICS: tuple[str, ...] = (
    "ownership of each component", "criteria for success", "review of open risks",
    "interfaces between teams", "handling of edge cases", "tracking of key metrics",
    "checkpoints for feedback", "assumptions about scope", "records of each decision",
    "agreement on priorities", "testing before release", "communication with stakeholders",
)

_TABLE_ASPECTS: tuple[str, ...] = (
    "Scope", "Interfaces", "Risks", "Testing", "Documentation", "Performance", "Ownership",
    "Schedule", "Budget", "Security", "Tooling", "Support",
)
_TABLE_STAGES: tuple[tuple[str, str], ...] = (
    ("Discovery", "Agreed scope"), ("Design", "Reviewed draft"), ("Build", "Working version"),
    ("Review", "Signed-off plan"), ("Rollout", "Stable release"), ("Follow-up", "Lessons recorded"),
)
_PRIORITIES: tuple[str, ...] = ("High", "Medium", "Low")

_QUOTES: tuple[str, ...] = (
    "Good structure is what lets a long document stay readable.",
    "A decision that is written down can be questioned, improved and trusted.",
    "The simplest plan that meets the goal is usually the one that survives contact with reality.",
    "Clarity about what is out of scope is as valuable as clarity about what is in it.",
    "Every trade-off is easier to accept when its reasons are visible.",
)

_OPENING_TITLES: tuple[tuple[str, str], ...] = (
    ("Background and Context", "Explain the background and context that {p} builds on."),
    ("Introduction", "Introduce {p}, its purpose and the readers it serves."),
    ("Overview", "Give a short overview of {p} so the later sections have a frame."),
    ("Motivation", "Explain the motivation behind {p} and the problem it answers."),
    ("Problem Statement", "State the problem that {p} addresses and why it is worth solving."),
    ("Goals and Scope", "Set out the goals of {p} and what is deliberately left out of scope."),
    ("Purpose and Audience", "Describe the purpose of {p} and the audience it is written for."),
)
_CLOSING_TITLES: tuple[tuple[str, str], ...] = (
    ("Conclusions", "Draw together the conclusions that follow from {p}."),
    ("Summary and Next Steps", "Summarise {p} and list the concrete next steps."),
    ("Future Directions", "Describe how {p} could evolve and what remains to explore."),
    ("Recommendations", "Give the recommendations that follow from {p}."),
    ("Closing Remarks", "Close {p} with the points a reader should remember."),
)
# (title, the phrase an intent uses for it, with an article where English needs one)
_BODY_TITLES: tuple[tuple[str, str], ...] = (
    ("Design Principles", "the design principles"),
    ("Key Concepts", "the key concepts"),
    ("Architecture Overview", "an overview of the architecture"),
    ("Core Requirements", "the core requirements"),
    ("Implementation Approach", "the implementation approach"),
    ("Data and Interfaces", "the data and interfaces"),
    ("Roles and Responsibilities", "the roles and responsibilities"),
    ("Process and Workflow", "the process and workflow"),
    ("Constraints and Assumptions", "the constraints and assumptions"),
    ("Risks and Mitigations", "the main risks and their mitigations"),
    ("Trade-offs Considered", "the trade-offs considered"),
    ("Alternatives Considered", "the alternatives considered"),
    ("Quality and Testing", "quality and testing"),
    ("Performance Considerations", "the performance considerations"),
    ("Security and Privacy", "security and privacy"),
    ("Operational Concerns", "the operational concerns"),
    ("Tooling and Infrastructure", "the tooling and infrastructure"),
    ("Timeline and Milestones", "the timeline and milestones"),
    ("Resourcing and Budget", "resourcing and budget"),
    ("Stakeholder Engagement", "how stakeholders are engaged"),
    ("Worked Example", "a worked example"),
    ("Common Pitfalls", "the common pitfalls"),
    ("Edge Cases", "the edge cases"),
    ("Practical Guidelines", "practical guidelines"),
    ("Measuring Success", "how success is measured"),
    ("Governance and Review", "governance and review"),
    ("Migration Strategy", "the migration strategy"),
    ("Dependencies", "the dependencies"),
    ("Communication Plan", "the communication plan"),
    ("Lessons Learned", "the lessons learned"),
    ("Open Questions", "the open questions"),
    ("Case Study", "a short case study"),
    ("Scalability", "scalability"),
    ("Maintenance and Support", "maintenance and support"),
    ("Documentation Standards", "documentation standards"),
    ("Decision Criteria", "the decision criteria"),
    ("Evaluation Method", "the evaluation method"),
    ("User Experience", "the user experience"),
    ("Cost Analysis", "an analysis of costs"),
    ("Compliance Considerations", "the compliance considerations"),
)
# No pronoun refers back to the phrase, so singular and plural phrases both read correctly.
_BODY_INTENTS: tuple[str, ...] = (
    "Explain {c} in the context of {p}.",
    "Describe {c} for {p}, and why this matters.",
    "Set out {c} for {p} so that later sections can build on this.",
    "Cover {c} for {p}, with concrete examples.",
    "Outline {c} for {p} and the trade-offs involved.",
)
_TITLED_PATTERNS: tuple[tuple[str, str], ...] = (
    ("{t} in Practice", "Show how {p} works in practice, with a concrete walk-through."),
    ("{t} at a Glance", "Give a compact tour of {p} before the detail begins."),
)
_FALLBACK_INTENT = "Cover a further aspect of {p} not addressed elsewhere."

# A clause is "subject [adverb] verb" + object. The prefixes are spelled out once at import (about
# 10k short strings) so that building a clause costs two table look-ups. For each clause length:
# the (prefixes, objects) groups that produce it; adverb and plain prefixes are separate groups
# so that the far more numerous adverb forms do not crowd out the plain ones; listing the plain
# groups twice keeps adverbs to about a third of clauses.
_CLAUSE_SHAPES: dict[int, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = {}
for _s, _subjects in _SUBJECTS.items():
    for _adverbs in ((), (), _ADVERBS):
        _prefixes = tuple(
            f"{subject} {adverb} {verb}" if adverb else f"{subject} {verb}"
            for subject in _subjects for verb in _VERBS_S for adverb in (_adverbs or ("",))
        )
        for _o, _objects in _OBJECTS.items():
            _n = _s + (1 if _adverbs else 0) + 1 + _o
            _CLAUSE_SHAPES[_n] = (*_CLAUSE_SHAPES.get(_n, ()), (_prefixes, _objects))
_CLAUSE_MIN, _CLAUSE_MAX = min(_CLAUSE_SHAPES), max(_CLAUSE_SHAPES)

# For each exact sentence length: the (clauses, opener words, tail words) plans that reach it.
# "No opener" and "no tail" are listed three times each, or nearly every sentence would carry
# both and the prose would read as padded.
_SENTENCE_PLANS: dict[int, tuple[tuple[int, int, int], ...]] = {}
for _clauses in (1, 2):
    for _opener in (0, 0, 0, *_OPENERS):
        for _tail in (0, 0, 0, *_TAILS):
            for _body in range(_clauses * _CLAUSE_MIN, _clauses * _CLAUSE_MAX + 1):
                _n = _body + (_clauses - 1) + _opener + _tail
                _SENTENCE_PLANS[_n] = (*_SENTENCE_PLANS.get(_n, ()), (_clauses, _opener, _tail))
_EXACT_MIN = min(_TINY)
_EXACT_MAX = max(_SENTENCE_PLANS)
assert set(range(_EXACT_MIN, _EXACT_MAX + 1)) <= set(_TINY) | set(_SENTENCE_PLANS)
# Room a sentence must leave so that the rest of a paragraph can still be one full clause.
_RESERVE = _CLAUSE_MIN + 1
# A clause consumes about 20 bits of randomness; 40 leave a wide margin against modulo bias.
_MASK40 = (1 << 40) - 1


class _Gen:
    """One generation's state: a seeded RNG and the title in the forms the templates need."""

    __slots__ = ("bits", "frames", "rnd", "title", "title_words")

    def __init__(self, rng: random.Random, title: str):
        # One getrandbits() call feeds a whole sentence by successive divmods: several times
        # cheaper than a Random.choice per word slot, which dominated the profile.
        self.bits = rng.getrandbits
        self.rnd = rng.random
        self.title = title
        self.title_words = len(title.split())
        # Titles longer than this make the framed sentences unwieldy.
        self.frames: tuple[tuple[str, int], ...] = ()
        if 0 < self.title_words <= 8:
            self.frames = tuple((f.replace("{T}", title), n + self.title_words - 1) for f, n in _TITLE_FRAMES)

    def pick(self, seq: Sequence[_T]) -> _T:
        return seq[int(self.rnd() * len(seq))]

    def between(self, lo: int, hi: int) -> int:
        return lo + int(self.rnd() * (hi - lo + 1))

    @staticmethod
    def clause(words: int, r: int) -> str:
        shapes = _CLAUSE_SHAPES[words]
        prefixes, objects = shapes[r % len(shapes)]
        r //= len(shapes)
        return f"{prefixes[r % len(prefixes)]} {objects[(r // len(prefixes)) % len(objects)]}"

    def exact_sentence(self, words: int) -> str:
        """A sentence of exactly `words` whitespace-separated words (1 <= words <= _EXACT_MAX)."""
        if words <= _CLAUSE_MIN:
            return self.pick(_TINY[max(_EXACT_MIN, words)])
        r = self.bits(160)
        plans = _SENTENCE_PLANS[words]
        clauses, opener, tail = plans[r % len(plans)]
        r //= len(plans)
        body = words - (clauses - 1) - opener - tail
        if clauses == 1:
            text = self.clause(body, r & _MASK40)
            r >>= 40
        else:
            lo, hi = max(_CLAUSE_MIN, body - _CLAUSE_MAX), min(_CLAUSE_MAX, body - _CLAUSE_MIN)
            first = lo + r % (hi - lo + 1)
            r //= hi - lo + 1
            conj = _CONJUNCTIONS[r % len(_CONJUNCTIONS)]
            r //= len(_CONJUNCTIONS)
            second = self.clause(body - first, (r >> 40) & _MASK40)
            text = f"{self.clause(first, r & _MASK40)}, {conj} {second}"
            r >>= 80
        if tail:
            tails = _TAILS[tail]
            text = f"{text} {tails[r % len(tails)]}"
            r //= len(tails)
        if opener:
            openers = _OPENERS[opener]
            return f"{openers[r % len(openers)]} {text}."
        return f"{text[0].upper()}{text[1:]}."

    def natural_sentence(self) -> tuple[str, int]:
        """A sentence of natural, varied length; may mention the title. Returns it with its word count."""
        roll = self.rnd()
        if roll < 0.12 and self.frames:
            frame, n = self.pick(self.frames)
        elif roll < 0.32:
            frame, n = self.pick(_PLAIN_FRAMES)
        else:
            n = self.between(9, 24)
            return self.exact_sentence(n), n
        words = self.between(_CLAUSE_MIN, _CLAUSE_MAX)
        # Every frame starts with a capital, so the sentence needs no re-casing.
        return f"{frame} {self.clause(words, self.bits(48))}.", n + words

    def paragraph(self, words: int, intro: bool) -> str:
        """A paragraph of exactly `words` words; with `intro`, it opens by naming the title."""
        out: list[str] = []
        remaining = words
        if intro and self.title_words:
            first = self.pick(_INTROS).replace("{T}", self.title)
            n = len(first.split())
            if n == remaining or n + _RESERVE <= remaining:
                out.append(first)
                remaining -= n
        while remaining > _EXACT_MAX:
            text, n = self.natural_sentence()
            if n > remaining - _RESERVE:
                n = self.between(9, min(24, remaining - _RESERVE))
                text = self.exact_sentence(n)
            out.append(text)
            remaining -= n
        if remaining > 0:
            out.append(self.exact_sentence(remaining))
        return " ".join(out)

    def bullet_items(self) -> list[str]:
        count = self.between(3, 6)
        items = []
        qualifiers = _sample(self, _LIST_QUALIFIERS, count)
        for qualifier, topic in zip(qualifiers, _sample(self, _LIST_TOPICS, count), strict=True):
            item = f"{qualifier} {topic}"
            if self.rnd() < 0.3:
                item = f"{item} {self.pick(_TAILS[self.between(2, 4)])}"
            items.append(item)
        return items

    def ordered_items(self) -> list[str]:
        items = []
        for _, base in _sample(self, _VERBS, self.between(3, 6)):
            item = f"{base.capitalize()} {self.pick(_OBJECTS[self.between(2, 4)])}"
            if self.rnd() < 0.3:
                item = f"{item} {self.pick(_TAILS[self.between(2, 3)])}"
            items.append(item)
        return items

    def table(self) -> tuple[list[str], list[list[str]]]:
        rows_n = self.between(3, 5)
        if self.rnd() < 0.5:
            rows = [
                [aspect, _cap(self.pick(_OBJECTS[self.between(2, 4)])), self.pick(_PRIORITIES)]
                for aspect in _sample(self, _TABLE_ASPECTS, rows_n)
            ]
            return ["Aspect", "Main consideration", "Priority"], rows
        start = self.between(0, len(_TABLE_STAGES) - rows_n)
        rows = [
            [stage, _cap(self.pick(_OBJECTS[self.between(2, 4)])), outcome]
            for stage, outcome in _TABLE_STAGES[start:start + rows_n]
        ]
        return ["Stage", "Focus", "Outcome"], rows


def _sample(gen: _Gen, seq: Sequence[_T], k: int) -> list[_T]:
    """k distinct elements in random order (a partial Fisher-Yates shuffle)."""
    pool = list(seq)
    k = min(k, len(pool))
    for i in range(k):
        j = i + int(gen.rnd() * (len(pool) - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


def _block(kind: str, *, text: str = "", items: list[str] | None = None,
           header: list[str] | None = None, rows: list[list[str]] | None = None) -> dict[str, Any]:
    # Only the fields the kind uses, as the per-call schema's variant for that kind has them.
    if kind in ("bullet_list", "ordered_list"):
        return {"kind": kind, "items": items or []}
    if kind == "table":
        return {"kind": kind, "table_header": header or [], "table_rows": rows or []}
    return {"kind": kind, "text": text}


def _words(block: dict[str, Any]) -> int:
    n = len(block.get("text", "").split())
    n += sum(len(i.split()) for i in block.get("items", ()))
    n += sum(len(c.split()) for c in block.get("table_header", ()))
    n += sum(len(c.split()) for row in block.get("table_rows", ()) for c in row)
    return n


def _apportion(total: int, weights: Sequence[float], minimum: int) -> list[int]:
    """Splits `total` into integers roughly proportional to `weights` that add up exactly to `total`."""
    n = len(weights)
    floor_total = min(minimum * n, total)
    base = [floor_total // n + (1 if i < floor_total % n else 0) for i in range(n)]
    rest = total - floor_total
    scale = sum(weights)
    shares = [rest * w / scale for w in weights]
    parts = [int(s) for s in shares]
    # Largest remainder, ties broken by position: the sum is exact and the result deterministic.
    order = sorted(range(n), key=lambda i: (parts[i] - shares[i], i))
    for i in order[: rest - sum(parts)]:
        parts[i] += 1
    return [b + p for b, p in zip(base, parts, strict=True)]


def _rng(task: dict[str, Any], seed: int) -> random.Random:
    # Seeding from a string hashes it with SHA-512: stable across processes, unlike hash().
    key = "\x1f".join(
        str(task.get(k, ""))
        for k in ("step", "title", "intent", "target_words", "child_count", "depth", "instruction")
    )
    return random.Random(f"{int(seed)}\x1e{key}")


def _int_field(task: dict[str, Any], name: str, minimum: int) -> int:
    value = task.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) < minimum:
        raise ValueError(f"task[{name!r}] must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _title(task: dict[str, Any]) -> str:
    title = task.get("title", "")
    if not isinstance(title, str):
        raise ValueError(f"task['title'] must be a string, got {type(title).__name__}")
    return " ".join(title.split())


def generate_split(task: dict[str, Any], seed: int) -> dict[str, Any]:
    """A split proposal: task["child_count"] distinct children whose budgets sum to task["target_words"]."""
    total = _int_field(task, "target_words", 0)
    count = _int_field(task, "child_count", 1)
    title = _title(task)
    depth = int(task.get("depth") or 0)
    gen = _Gen(_rng(task, seed), title)
    parent = title or "the document"

    body_needed = count
    opening = closing = titled = None
    if count >= 3 or (depth == 0 and count >= 2):
        opening = gen.pick(_OPENING_TITLES)
        body_needed -= 1
    if count >= 3 and gen.rnd() < 0.8:
        closing = gen.pick(_CLOSING_TITLES)
        body_needed -= 1
    # Titles that embed the parent's would compound down the tree, so only the top level gets one.
    if depth == 0 and body_needed >= 2 and 0 < gen.title_words <= 4 and gen.rnd() < 0.5:
        pattern, intent = gen.pick(_TITLED_PATTERNS)
        titled = (pattern.replace("{t}", title), intent)
        body_needed -= 1

    start = gen.between(0, len(_BODY_INTENTS) - 1)
    plans = [
        (name, _BODY_INTENTS[(start + k) % len(_BODY_INTENTS)].replace("{c}", phrase))
        for k, (name, phrase) in enumerate(_sample(gen, _BODY_TITLES, body_needed))
    ]
    if titled is not None:
        plans.insert(gen.between(0, len(plans)), titled)
    if opening is not None:
        plans.insert(0, opening)
    if closing is not None:
        plans.append(closing)

    # Siblings must be distinct and none may repeat the parent's title; the vocabulary runs out
    # only for very wide splits.
    seen = {title.casefold()}
    chosen: list[tuple[str, str]] = []
    extra = 1
    for name, intent in plans:
        while name.casefold() in seen:
            name, intent = f"Additional Topic {extra}", _FALLBACK_INTENT
            extra += 1
        seen.add(name.casefold())
        chosen.append((name, intent))
    while len(chosen) < count:
        name = f"Additional Topic {extra}"
        extra += 1
        if name.casefold() not in seen:
            seen.add(name.casefold())
            chosen.append((name, _FALLBACK_INTENT))

    budgets = _apportion(total, [0.7 + 0.6 * gen.rnd() for _ in range(count)], 1)
    return {
        "children": [
            {"title": name, "intent": intent.replace("{p}", parent), "target_words": budget}
            for (name, intent), budget in zip(chosen, budgets, strict=True)
        ]
    }


def generate_content(task: dict[str, Any], seed: int) -> dict[str, Any]:
    """A content proposal of exactly task["target_words"] words (at least one) and a one-sentence summary."""
    total = max(1, _int_field(task, "target_words", 0))
    title = _title(task)
    gen = _Gen(_rng(task, seed), title)

    extras: list[dict[str, Any]] = []
    if total >= 150 and gen.rnd() < 0.45:
        if gen.rnd() < 0.6:
            extras.append(_block("bullet_list", items=gen.bullet_items()))
        else:
            extras.append(_block("ordered_list", items=gen.ordered_items()))
    if total >= 300 and gen.rnd() < 0.15:
        header, rows = gen.table()
        extras.append(_block("table", header=header, rows=rows))
    if total >= 200 and gen.rnd() < 0.15:
        extras.append(_block("quote", text=gen.pick(_QUOTES)))
    extra_words = [_words(b) for b in extras]
    # Prose must stay the bulk of a section.
    while extras and sum(extra_words) > total * 0.4:
        extras.pop()
        extra_words.pop()

    prose = total - sum(extra_words)
    paragraphs = 1 if prose < 60 else max(1, min(prose // 40, round(prose / (70 + 60 * gen.rnd()))))
    sizes = _apportion(prose, [0.75 + 0.5 * gen.rnd() for _ in range(paragraphs)], 1)
    blocks = [_block("paragraph", text=gen.paragraph(n, intro=(i == 0))) for i, n in enumerate(sizes)]
    for extra in extras:
        blocks.insert(gen.between(1, len(blocks)), extra)

    summary = (f"Covers {title or 'the topic'}, with attention to "
               f"{gen.pick(_OBJECTS[3])} and {gen.pick(_OBJECTS[4])}.")
    _cite(blocks, task)
    return {"blocks": blocks, "summary": summary}


def _cite(blocks: list[dict[str, Any]], task: dict[str, Any]) -> None:
    """With task["citable"] numbered passages, paragraph j cites passage (j mod citable) + 1 and
    every other block cites none: deterministic, and every number is one the prompt gave."""
    citable = task.get("citable") or 0
    if not isinstance(citable, int) or citable <= 0:
        return
    paragraphs = 0
    for block in blocks:
        if block["kind"] == "paragraph":
            block["cites"] = [paragraphs % citable + 1]
            paragraphs += 1
        else:
            block["cites"] = []


class OfflineProvider:
    """A deterministic in-process provider: output depends only on request.seed and request.task."""

    def __init__(self, latency_ms: float = 0):
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        self._latency_s = latency_ms / 1000.0

    @property
    def name(self) -> str:
        return OFFLINE_PROVIDER

    @property
    def model(self) -> str:
        return OFFLINE_MODEL

    @property
    def latency_ms(self) -> float:
        """The simulated latency added to every call."""
        return self._latency_s * 1000.0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Answers from the seeded generators; raises LLMBadRequest when the task facts are unusable."""
        started = time.perf_counter()
        task = request.task
        step = str(task.get("step") or request.step)
        prompt_tokens = estimate_tokens(request.system + request.user)
        try:
            if step == "split":
                data = generate_split(task, request.seed)
            elif step == "write":
                data = generate_content(task, request.seed)
            else:
                raise ValueError(f"unknown step {step!r}; expected 'split' or 'write'")
        except ValueError as exc:
            raise LLMBadRequest(str(exc), provider=self.name, model=self.model,
                                prompt_tokens=prompt_tokens) from exc
        if self._latency_s > 0:
            await asyncio.sleep(self._latency_s)
        return LLMResponse(
            data=data,
            provider=self.name,
            model=self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=estimate_tokens(json.dumps(data)),
            latency_ms=int((time.perf_counter() - started) * 1000),
            finish_reason="stop",
        )

    async def aclose(self) -> None:
        """Nothing to release."""
