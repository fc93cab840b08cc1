"""Client subcommands of the `lace` command: create, start, watch, compile, ... over lace_client.

Each command returns an exit code: 0 on success, 2 when a call failed (printed as
`lace: <message> (<REASON>)` on stderr); `watch` returns 1 when the run failed or
was cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import json_format, timestamp_pb2
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lace.v1 import artifact_pb2, run_pb2
from lace_client.client import DEFAULT_TARGET, TEXT_FORMATS, LaceClient
from lace_client.errors import LaceClientError

Command = Callable[[LaceClient, argparse.Namespace], Awaitable[int]]

TERMINAL = (run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED)

_BLOCK_KINDS = {
    "paragraph": artifact_pb2.BLOCK_KIND_PARAGRAPH,
    "heading": artifact_pb2.BLOCK_KIND_HEADING,
    "quote": artifact_pb2.BLOCK_KIND_QUOTE,
    "code": artifact_pb2.BLOCK_KIND_CODE,
}


def quality_line(q: run_pb2.QualityReport) -> str:
    """The quality report in one line, for `lace watch`'s summary."""
    return (f"{q.steps_applied} steps applied ({q.applied_first_attempt} on the first attempt), {q.reasks} re-asks, "
            f"{q.repairs} repairs, {q.calls_at_limit}/{q.calls} calls at the token limit, "
            f"{q.tokens_per_word:.2f} tokens a word, {q.duplicate_headings} duplicate headings, "
            f"{q.repetition:.0%} of 8-grams repeated across sections")


def state_name(state: int) -> str:
    """RUN_STATE_COMPLETED -> COMPLETED."""
    return run_pb2.RunState.Name(state).removeprefix("RUN_STATE_")


def _when(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _fail(err: LaceClientError | OSError) -> int:
    if isinstance(err, LaceClientError):
        print(f"lace: {err.message} ({err.reason or err.code.name})", file=sys.stderr)
    else:
        print(f"lace: {err}", file=sys.stderr)
    return 2


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    """Wraps an async command: connects, runs it, and turns client errors into exit code 2."""

    def run(args: argparse.Namespace) -> int:
        async def main() -> int:
            root = args.ca_cert.read_bytes() if args.ca_cert else None
            if bool(args.client_cert) != bool(args.client_key):
                print("lace: --client-cert and --client-key go together", file=sys.stderr)
                return 2
            chain = args.client_cert.read_bytes() if args.client_cert else None
            key = args.client_key.read_bytes() if args.client_key else None
            async with LaceClient.connect(args.server, token=args.token or None, tls=args.tls,
                                          root_certificates=root, certificate_chain=chain,
                                          private_key=key) as client:
                return await command(client, args)

        try:
            return asyncio.run(main())
        except BrokenPipeError:
            # The reader went away (`lace events ... | head`): stop quietly, like a tool killed
            # by SIGPIPE, and keep the interpreter's final flush from failing a second time.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 128 + 13
        except (LaceClientError, OSError) as err:
            return _fail(err)

    return run


def _print_rows(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Rich table on a terminal; tab-separated lines (with a header) for pipes."""
    console = Console()
    if console.is_terminal:
        table = Table(*headers, box=None, header_style="bold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    for row in (headers, *rows):
        print("\t".join(row))


# Live progress of a run, folded from its events.


@dataclass
class RunProgress:
    """What `lace watch` shows, folded from events so that it moves without polling."""

    run_id: str
    state: int = run_pb2.RUN_STATE_PENDING
    nodes_planned: int = 0
    nodes_written: int = 0
    words: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    # The run's quality report in one line, once its validation report arrived.
    quality: str = ""
    last_seq: int = 0
    reconnects: int = 0
    start: datetime | None = None
    end: datetime | None = None
    titles: dict[str, str] = field(default_factory=dict)

    def title(self, node_id: str) -> str:
        return self.titles.get(node_id) or node_id[:8]

    def elapsed(self) -> float:
        if self.start is None:
            return 0.0
        end = self.end or datetime.now(UTC)
        return max(0.0, (end - self.start).total_seconds())

    def apply(self, event: run_pb2.RunEvent) -> str | None:
        """Folds one event in; returns a line for the notable ones."""
        self.last_seq = event.seq
        kind = event.WhichOneof("payload")
        if kind == "run_state_changed":
            change = event.run_state_changed
            self.state = change.to_state
            if change.to_state == run_pb2.RUN_STATE_RUNNING and self.start is None:
                self.start = event.create_time.ToDatetime(tzinfo=UTC)
            if change.to_state in TERMINAL:
                self.end = event.create_time.ToDatetime(tzinfo=UTC)
            why = f" ({change.reason})" if change.reason else ""
            if change.from_state == run_pb2.RUN_STATE_UNSPECIFIED:
                return f"state {state_name(change.to_state)}{why}"
            return f"state {state_name(change.from_state)} -> {state_name(change.to_state)}{why}"
        if kind == "node_split":
            split = event.node_split
            self.nodes_planned += len(split.children)
            for child in split.children:
                self.titles[child.node_id] = child.title
            return f"planned {len(split.children)} sections under '{self.title(split.node_id)}'"
        if kind == "blocks_applied":
            applied = event.blocks_applied
            self.nodes_written += 1
            self.words += applied.word_count
            return f"wrote '{self.title(applied.node_id)}' ({applied.word_count} words)"
        if kind == "llm_call_completed":
            usage = event.llm_call_completed.usage
            self.llm_calls += 1
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            return None
        if kind == "proposal_rejected":
            rejected = event.proposal_rejected
            then = "retrying" if rejected.will_retry else "giving up"
            first = rejected.errors[0] if rejected.errors else "no reason given"
            return (f"proposal for '{self.title(rejected.node_id)}' rejected "
                    f"(attempt {rejected.attempt}, {then}): {_short(first, 100)}")
        if kind == "node_skipped":
            return f"kept '{self.title(event.node_skipped.node_id)}' as it is: {event.node_skipped.reason}"
        if kind == "validation_reported":
            report = event.validation_reported.report
            verdict = "ok" if report.ok else f"{len(report.problems)} problem(s): {_short('; '.join(report.problems))}"
            self.quality = quality_line(report.quality) if report.HasField("quality") else ""
            return (f"validation {verdict}; {report.actual_words}/{report.target_words} words, "
                    f"length score {report.document_length_score:.0f}")
        if kind == "run_failed":
            return f"run failed: {event.run_failed.reason}"
        if kind == "plan_ready":
            outline = event.plan_ready.outline
            for n in outline:
                self.titles[n.node_id] = n.title
            return f"plan ready for review: {len(outline)} sections (lace outline ARTIFACT; then lace resume RUN)"
        if kind == "outline_edited":
            edited = event.outline_edited
            for n in edited.outline:
                self.titles[n.node_id] = n.title
            what = run_pb2.OutlineEditKind.Name(edited.kind).removeprefix("OUTLINE_EDIT_KIND_").lower()
            return f"outline edited ({what} '{self.title(edited.node_id)}'): {len(edited.outline)} sections"
        if kind == "nodes_marked_stale":
            marked = event.nodes_marked_stale.nodes
            return f"marked {len(marked)} section(s) stale: " + "; ".join(
                f"'{self.title(n.node_id)}'" for n in marked)
        return None  # step and strategy events only move the counters above

    def summary(self) -> str:
        return (f"run {self.run_id} {state_name(self.state)}: {self.nodes_written}/{self.nodes_planned} nodes "
                f"written, {self.words:,} words, {self.prompt_tokens + self.completion_tokens:,} tokens, "
                f"{self.llm_calls} LLM calls, {self.elapsed():.1f} s"
                + (f"\nquality: {self.quality}" if self.quality else ""))

    def __rich__(self) -> RenderableType:
        colours: dict[int, str] = {run_pb2.RUN_STATE_COMPLETED: "green", run_pb2.RUN_STATE_FAILED: "red",
                   run_pb2.RUN_STATE_CANCELLED: "yellow"}
        colour = colours.get(self.state, "cyan")
        table = Table.grid(padding=(0, 2))
        table.add_row(Text("run", style="dim"), Text(self.run_id))
        table.add_row(Text("state", style="dim"), Text(state_name(self.state), style=f"bold {colour}"))
        table.add_row(Text("nodes", style="dim"), Text(f"{self.nodes_written} written / {self.nodes_planned} planned"))
        table.add_row(Text("words", style="dim"), Text(f"{self.words:,}"))
        table.add_row(Text("tokens", style="dim"),
                      Text(f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion "
                           f"({self.llm_calls} calls)"))
        table.add_row(Text("elapsed", style="dim"), Text(f"{self.elapsed():.1f} s"))
        table.add_row(Text("events", style="dim"), Text(f"{self.last_seq}" + (
            f"  ({self.reconnects} reconnects)" if self.reconnects else "")))
        return Group(Text(""), table)


async def watch_run(client: LaceClient, run_id: str, cursor: int = 0) -> int:
    """Shows a run live until it ends or awaits review: 0 when it completed (or awaits review), 1 when it
    failed or was cancelled."""
    stream = sys.stdout
    console = Console(file=stream)
    run = await client.get_run(run_id)
    progress = RunProgress(run_id)
    artifact = (await client.get_artifact(run.artifact_id)).artifact
    progress.titles[artifact.root_node_id] = artifact.title
    if run.HasField("start_time"):
        progress.start = run.start_time.ToDatetime(tzinfo=UTC)
    if cursor > 0:
        # Events up to the cursor are not shown again, but they seed the counters and titles.
        async for event in client.list_events(run_id, page_size=1000):
            if event.seq > cursor:
                break
            progress.apply(event)

    def reconnecting(attempt: int, err: LaceClientError, delay: float) -> None:
        progress.reconnects += 1
        note = f"connection lost ({err.message}); reconnecting in {delay:.1f} s"
        if console.is_terminal:
            console.print(Text(note, style="yellow"))
        else:
            print(note, file=stream, flush=True)

    async def awaits_review() -> bool:
        # History replayed from the cursor may hold a review that is over: ask for the state now.
        return progress.state == run_pb2.RUN_STATE_AWAITING_REVIEW and \
            (await client.get_run(run_id)).state == run_pb2.RUN_STATE_AWAITING_REVIEW

    if console.is_terminal:
        with Live(progress, console=console, refresh_per_second=8):
            async for event in client.watch(run_id, cursor, on_reconnect=reconnecting):
                line = progress.apply(event)
                if line is not None:
                    console.print(Text(f"{time.strftime('%H:%M:%S')}  {line}"))
                if await awaits_review():
                    break  # a person's turn: the stream stays open until the run is resumed
    else:
        async for event in client.watch(run_id, cursor, on_reconnect=reconnecting):
            line = progress.apply(event)
            if line is not None:
                print(f"[{event.seq}] {line}", file=stream, flush=True)
            if await awaits_review():
                break

    final = await client.get_run(run_id)  # the server's totals and state are the ones that count
    progress.state = final.state
    progress.nodes_planned, progress.nodes_written = final.nodes_planned, final.nodes_written
    progress.words = final.words_written
    progress.prompt_tokens, progress.completion_tokens = final.usage.prompt_tokens, final.usage.completion_tokens
    progress.llm_calls = final.llm_calls
    if final.HasField("start_time"):
        progress.start = final.start_time.ToDatetime(tzinfo=UTC)
    if final.HasField("end_time"):
        progress.end = final.end_time.ToDatetime(tzinfo=UTC)
    print(progress.summary() + (f" ({final.failure_reason})" if final.failure_reason else ""),
          file=stream, flush=True)
    return 0 if final.state in (run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_AWAITING_REVIEW) else 1


# Commands


async def _create(client: LaceClient, args: argparse.Namespace) -> int:
    artifact = await client.create_artifact(args.title, args.brief, args.words, style=args.style,
                                            request_id=args.request_id)
    print(artifact.id)
    return 0


async def _artifacts(client: LaceClient, args: argparse.Namespace) -> int:
    rows = [[a.id, _short(a.title, 40), f"{a.word_count}/{a.target_words}", str(a.version),
             a.active_run_id or "-", _when(a.create_time)]
            async for a in client.list_artifacts(filter=args.filter, order_by=args.order_by)]
    _print_rows(["ID", "TITLE", "WORDS", "VERSION", "ACTIVE RUN", "CREATED"], rows)
    return 0


async def _update(client: LaceClient, args: argparse.Namespace) -> int:
    if args.title is None and args.brief is None and args.style is None and args.words is None:
        print("lace update: give at least one of --title, --brief, --style, --words", file=sys.stderr)
        return 2
    artifact = await client.update_artifact(args.artifact_id, title=args.title, brief=args.brief, style=args.style,
                                            target_words=args.words, request_id=args.request_id)
    print(f"artifact {artifact.id}: version {artifact.version}, {artifact.target_words} words planned")
    return 0


async def _fork(client: LaceClient, args: argparse.Namespace) -> int:
    fork = await client.fork_artifact(args.artifact_id, version=args.version, request_id=args.request_id)
    print(fork.id)
    return 0


async def _delete(client: LaceClient, args: argparse.Namespace) -> int:
    await client.delete_artifact(args.artifact_id, allow_missing=args.allow_missing, request_id=args.request_id)
    print(f"artifact {args.artifact_id}: deleted")
    return 0


async def _revert(client: LaceClient, args: argparse.Namespace) -> int:
    block = await client.revert_block(args.block_id, args.version, expected_version=args.expected_version)
    print(f"block {block.id}: version {block.version} has the content of version {args.version}")
    return 0


async def _start(client: LaceClient, args: argparse.Namespace) -> int:
    options = run_pb2.RunOptions(sibling_concurrency=args.sibling_concurrency, leaf_words=args.leaf_words,
                                 max_depth=args.max_depth, max_total_tokens=args.max_total_tokens,
                                 max_llm_calls=args.max_llm_calls, review_plan=args.review_plan)
    if args.max_duration:
        options.max_duration.seconds = args.max_duration
    run = await client.start_run(args.artifact_id, scope_node_id=args.scope, instruction=args.instruction,
                                 options=options, request_id=args.request_id, stale_only=args.stale)
    print(run.id, flush=True)
    print(f"estimate: {run.estimate.llm_calls} LLM calls, at most {run.estimate.total_tokens} tokens "
          "(without re-asks)", file=sys.stderr, flush=True)
    if args.watch:
        return await watch_run(client, run.id)
    return 0


async def _watch(client: LaceClient, args: argparse.Namespace) -> int:
    return await watch_run(client, args.run_id, args.cursor)


async def _runs(client: LaceClient, args: argparse.Namespace) -> int:
    rows = [[r.id, r.artifact_id, state_name(r.state), f"{r.nodes_written}/{r.nodes_planned}",
             str(r.words_written), str(r.usage.prompt_tokens + r.usage.completion_tokens), _when(r.create_time)]
            async for r in client.list_runs(args.artifact, filter=args.filter, order_by=args.order_by)]
    _print_rows(["ID", "ARTIFACT", "STATE", "NODES", "WORDS", "TOKENS", "CREATED"], rows)
    return 0


def _control(action: str) -> Command:
    async def control(client: LaceClient, args: argparse.Namespace) -> int:
        if action == "resume":
            retries = getattr(args, "max_proposal_retries", 0)
            run = await client.resume_run(args.run_id, options=run_pb2.RunOptions(max_proposal_retries=retries))
        else:
            method = {"pause": client.pause_run, "cancel": client.cancel_run}[action]
            run = await method(args.run_id)
        print(f"run {run.id}: {state_name(run.state)}")
        return 0

    return control


def _event_summary(event: run_pb2.RunEvent) -> str:
    kind = event.WhichOneof("payload") or "unknown"
    body = json_format.MessageToDict(getattr(event, kind)) if kind != "unknown" else {}
    return f"{event.seq}\t{_when(event.create_time)}\t{kind}\t{_short(json.dumps(body), 120)}"


async def _events(client: LaceClient, args: argparse.Namespace) -> int:
    types = [run_pb2.RunEventType.Value("RUN_EVENT_TYPE_" + t.upper()) for t in args.type or ()]
    async for event in client.list_events(args.run_id, after_seq=args.after, event_types=types, page_size=1000):
        if args.json:
            print(json.dumps(json_format.MessageToDict(event), separators=(",", ":")))
        else:
            print(_event_summary(event))
    return 0


async def _compile(client: LaceClient, args: argparse.Namespace) -> int:
    binary = args.format not in TEXT_FORMATS
    if binary and args.output is None and sys.stdout.isatty():
        print(f"lace: {args.format} is a binary format; write it to a file with -o FILE "
              f"(or -o - to send it to a pipe)", file=sys.stderr)
        return 2
    doc = await client.compile_document(args.artifact_id, args.format, version=args.version)
    if args.output is None or str(args.output) == "-":
        if binary:
            sys.stdout.buffer.write(doc.data)
            sys.stdout.buffer.flush()
        else:
            content = doc.data.decode("utf-8")
            sys.stdout.write(content if content.endswith("\n") else content + "\n")
    else:
        args.output.write_bytes(doc.data)
        print(f"lace: wrote {args.output} ({len(doc.data):,} bytes)", file=sys.stderr)
    return 0


async def _edit_block(client: LaceClient, args: argparse.Namespace) -> int:
    block = artifact_pb2.Block(kind=_BLOCK_KINDS[args.kind], text=args.text, heading_level=args.level,
                               language=args.language)
    edited = await client.edit_block(args.block_id, block, expected_version=args.expected_version)
    print(f"block {edited.id}: version {edited.version}, pinned")
    return 0


_NODE_STATES = {artifact_pb2.NODE_STATE_PLANNED: "planned", artifact_pb2.NODE_STATE_SPLIT: "split",
                artifact_pb2.NODE_STATE_WRITTEN: "written", artifact_pb2.NODE_STATE_FAILED: "failed"}


async def _outline(client: LaceClient, args: argparse.Namespace) -> int:
    for n in await client.outline(args.artifact_id):
        stale = f"\n{'  ' * n.depth}  stale: {n.stale_reason}" if n.stale_reason else ""
        print(f"{'  ' * n.depth}{n.title}  [{_NODE_STATES.get(n.state, '?')}, {n.target_words} words]  {n.id}{stale}")
    return 0


def _node_line(node: artifact_pb2.Node) -> str:
    return f"node {node.id}: '{node.title}', {node.target_words} words, position {node.ordinal}"


async def _node_update(client: LaceClient, args: argparse.Namespace) -> int:
    if args.title is None and args.intent is None and args.words is None:
        print("lace: give at least one of --title, --intent, --words", file=sys.stderr)
        return 2
    node = await client.update_node(args.node_id, title=args.title, intent=args.intent, target_words=args.words)
    print(_node_line(node))
    return 0


async def _node_create(client: LaceClient, args: argparse.Namespace) -> int:
    node = await client.create_node(args.parent_id, args.title, args.words, intent=args.intent,
                                    position=args.position)
    print(node.id)
    print(_node_line(node), file=sys.stderr)
    return 0


async def _node_delete(client: LaceClient, args: argparse.Namespace) -> int:
    artifact = await client.delete_node(args.node_id)
    print(f"node {args.node_id} deleted; the artifact is now {artifact.target_words} words "
          f"(version {artifact.version})")
    return 0


async def _node_move(client: LaceClient, args: argparse.Namespace) -> int:
    print(_node_line(await client.move_node(args.node_id, parent_id=args.parent or "", position=args.position)))
    return 0


async def _history(client: LaceClient, args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    async for change in client.block_history(args.block_id):
        after = change.after if change.HasField("after") else change.before
        text = after.text or " | ".join(after.items)
        rows.append([str(change.id), artifact_pb2.ChangeOperation.Name(change.operation).removeprefix(
            "CHANGE_OPERATION_"), artifact_pb2.ChangeOrigin.Name(change.origin).removeprefix("CHANGE_ORIGIN_"),
            str(change.after.version) if change.HasField("after") else "-", str(change.artifact_version),
            change.run_id or "-", _when(change.create_time), _short(text, 50)])
    # BLOCK: the block's version after the change (what `lace revert --version` takes); ARTIFACT: the IR's.
    _print_rows(["CHANGE", "OPERATION", "ORIGIN", "BLOCK", "ARTIFACT", "RUN", "TIME", "TEXT"], rows)
    return 0


_MEDIA_TYPES = {".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain", ".text": "text/plain",
                ".html": "text/html", ".htm": "text/html", ".pdf": "application/pdf"}


async def _source_add(client: LaceClient, args: argparse.Namespace) -> int:
    path: Path = args.file
    media_type = args.type or _MEDIA_TYPES.get(path.suffix.lower())
    if media_type is None:
        types = ", ".join(sorted(set(_MEDIA_TYPES.values())))
        print(f"lace: cannot tell the type of {path.name}; give --type ({types})", file=sys.stderr)
        return 2
    data = await asyncio.to_thread(path.read_bytes)
    source = await client.add_source(args.artifact, args.title or path.stem, media_type, data,
                                     request_id=args.request_id)
    print(source.id)
    print(f"lace: {source.title}: {source.char_count:,} characters in {source.passage_count} passages",
          file=sys.stderr)
    return 0


async def _source_list(client: LaceClient, args: argparse.Namespace) -> int:
    rows = [[s.id, s.media_type, str(s.passage_count), f"{s.char_count:,}", _when(s.create_time), _short(s.title, 40)]
            async for s in client.list_sources(args.artifact_id)]
    _print_rows(["SOURCE", "TYPE", "PASSAGES", "CHARS", "ADDED", "TITLE"], rows)
    return 0


async def _source_show(client: LaceClient, args: argparse.Namespace) -> int:
    got = await client.get_source(args.source_id, passages=True)
    print(f"{got.source.title} ({got.source.media_type}, {got.source.passage_count} passages)")
    for p in got.passages:
        print(f"\n[{p.ordinal}] {p.id} chars {p.start_offset}-{p.end_offset}\n{p.text}")
    return 0


async def _source_delete(client: LaceClient, args: argparse.Namespace) -> int:
    source = await client.delete_source(args.source_id)
    print(f"source {source.id} deleted; blocks that cite it keep their references")
    return 0


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the client subcommands (create, start, watch, compile, ...) to the `lace` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("LACE_SERVER", DEFAULT_TARGET),
                        help=f"host:port of the LACE server (env LACE_SERVER; default {DEFAULT_TARGET})")
    common.add_argument("--token", default=os.environ.get("LACE_TOKEN"),
                        help="API key sent as a bearer token (env LACE_TOKEN)")
    common.add_argument("--tls", action="store_true", help="connect over TLS")
    common.add_argument("--ca-cert", type=Path, help="PEM root certificates for TLS (implies --tls)")
    common.add_argument("--client-cert", type=Path, default=os.environ.get("LACE_CLIENT_CERT") or None,
                        help="PEM client certificate for mutual TLS (env LACE_CLIENT_CERT; implies --tls)")
    common.add_argument("--client-key", type=Path, default=os.environ.get("LACE_CLIENT_KEY") or None,
                        help="PEM key of the client certificate (env LACE_CLIENT_KEY)")

    def command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=_runner(func))
        return parser

    p = command("create", _create, "create an artifact from a brief; prints its id")
    p.add_argument("--title", required=True)
    p.add_argument("--brief", required=True, help="what the document must cover")
    p.add_argument("--words", type=int, required=True, help="target length in words")
    p.add_argument("--style", default="", help="optional style guidance")
    p.add_argument("--request-id", help="idempotency key (a fresh one by default)")

    p = command("artifacts", _artifacts, "list artifacts, newest first")
    p.add_argument("--filter", default="", help='AIP-160 filter, e.g. \'create_time > "2026-12-01T00:00:00Z"\'')
    p.add_argument("--order-by", default="", help="create_time or update_time, optionally followed by ' desc'")

    p = command("update", _update, "change an artifact's title, brief, style or length")
    p.add_argument("artifact_id")
    p.add_argument("--title")
    p.add_argument("--brief")
    p.add_argument("--style")
    p.add_argument("--words", type=int, help="target length in words (only before the document is planned)")
    p.add_argument("--request-id", help="idempotency key (a fresh one by default)")

    p = command("fork", _fork, "copy an artifact (now, or as it was at --version) into a new one; prints its id")
    p.add_argument("artifact_id")
    p.add_argument("--version", type=_non_negative, default=0, metavar="N", help="the IR version to copy")
    p.add_argument("--request-id", help="idempotency key (a fresh one by default)")

    p = command("delete", _delete, "delete an artifact with its runs, events, history and sources")
    p.add_argument("artifact_id")
    p.add_argument("--allow-missing", action="store_true", help="succeed when there is no such artifact")
    p.add_argument("--request-id", help="idempotency key (a fresh one by default)")

    p = command("start", _start, "start a run over an artifact; prints the run id")
    p.add_argument("artifact_id")
    p.add_argument("--scope", default="", metavar="NODE_ID", help="regenerate only this subtree")
    p.add_argument("--instruction", default="", help="guidance for a regeneration")
    p.add_argument("--stale", action="store_true",
                   help="rewrite exactly the sections marked stale (see `lace outline`), within --scope if given")
    p.add_argument("--sibling-concurrency", type=_non_negative, default=0, metavar="N",
                   help="sibling sections worked on at once (server default when omitted)")
    p.add_argument("--leaf-words", type=_non_negative, default=0, metavar="N",
                   help="largest section written in one LLM call (server default when omitted)")
    p.add_argument("--max-depth", type=_non_negative, default=0, metavar="N",
                   help="deepest level a split may create (server default when omitted)")
    p.add_argument("--max-total-tokens", type=_non_negative, default=0, metavar="N",
                   help="hard cap on the run's tokens, prompts and answers (none when omitted)")
    p.add_argument("--max-llm-calls", type=_non_negative, default=0, metavar="N",
                   help="hard cap on the run's LLM calls (none when omitted)")
    p.add_argument("--max-duration", type=_non_negative, default=0, metavar="SECONDS",
                   help="hard cap on the run's time since it started (none when omitted)")
    p.add_argument("--request-id", help="idempotency key (a fresh one by default)")
    p.add_argument("--review-plan", action="store_true",
                   help="plan the whole outline first and wait (AWAITING_REVIEW): edit it with `lace node`, then "
                        "`lace resume RUN` writes it")
    p.add_argument("--watch", action="store_true", help="then follow the run live (exit code as `lace watch`)")

    p = command("watch", _watch, "follow a run live; exits 0 when it completes, 1 when it fails or is cancelled")
    p.add_argument("run_id")
    p.add_argument("--cursor", type=_non_negative, default=0, metavar="N", help="start after this event seq")

    p = command("runs", _runs, "list runs, newest first")
    p.add_argument("--artifact", metavar="ID", help="only runs of this artifact")
    p.add_argument("--filter", default="", help="AIP-160 filter, e.g. 'state = RUNNING OR state = PAUSED'")
    p.add_argument("--order-by", default="", help="create_time, optionally followed by ' desc' (the default)")

    for action in ("pause", "resume", "cancel"):
        p = command(action, _control(action), "resume a paused, failed or reviewed run (a failed one goes on from "
                    "where it stopped; one that awaits review writes its outline)" if action == "resume"
                    else f"{action} a run")
        p.add_argument("run_id")
        if action == "resume":
            p.add_argument("--max-proposal-retries", type=_non_negative, default=0, metavar="N",
                           help="re-asks per node from now on (0 keeps the run's own)")

    p = command("events", _events, "print a run's stored events")
    p.add_argument("run_id")
    p.add_argument("--after", type=_non_negative, default=0, metavar="N", help="only events with seq > N")
    p.add_argument("--type", action="append", metavar="TYPE",
                   choices=[v.name.removeprefix("RUN_EVENT_TYPE_").lower()
                            for v in run_pb2.RunEventType.DESCRIPTOR.values if v.number != 0],
                   help="only events of this type (repeatable), e.g. blocks_applied")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("compile", _compile, "render an artifact as Markdown, HTML, JSON, DOCX, ODT, EPUB or PDF")
    p.add_argument("artifact_id")
    p.add_argument("--format", choices=["markdown", "html", "json", "docx", "odt", "epub", "pdf"],
                   default="markdown")
    p.add_argument("--version", type=_non_negative, default=0, metavar="N",
                   help="the document as it was at this IR version (history: `lace history`, run events)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write to FILE instead of stdout (binary formats need it on a terminal; - is stdout)")

    p = command("edit-block", _edit_block, "replace a block's content as a human edit (pins it)")
    p.add_argument("block_id")
    p.add_argument("--text", required=True)
    p.add_argument("--kind", choices=list(_BLOCK_KINDS), default="paragraph")
    p.add_argument("--level", type=int, default=0, help="heading level, for --kind heading")
    p.add_argument("--language", default="", help="language, for --kind code")
    p.add_argument("--expected-version", type=_non_negative, default=0, metavar="N",
                   help="fail with ABORTED unless the block is still at this version")

    p = command("history", _history, "list a block's changes, oldest first")
    p.add_argument("block_id")

    p = command("revert", _revert, "restore a block's content at an earlier version (a human edit: pins it)")
    p.add_argument("block_id")
    p.add_argument("--version", type=int, required=True, metavar="N", help="the version to restore (see history)")
    p.add_argument("--expected-version", type=_non_negative, default=0, metavar="N",
                   help="fail with ABORTED unless the block is still at this version")

    p = command("outline", _outline, "print an artifact's outline: sections with state, budget, id and why a "
                "section is stale")
    p.add_argument("artifact_id")

    node = subparsers.add_parser("node", help="edit the outline (no run active, or its run awaits review)",
                                 description="Outline edits: each a human Apply mutation; budgets follow children.")
    node_actions = node.add_subparsers(dest="node_command", required=True)

    def node_command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        parser = node_actions.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=_runner(func))
        return parser

    p = node_command("update", _node_update, "change a section's title, intent or budget")
    p.add_argument("node_id")
    p.add_argument("--title")
    p.add_argument("--intent")
    p.add_argument("--words", type=_non_negative, metavar="N", help="target words (a section without children)")
    p = node_command("create", _node_create, "add a planned section under PARENT; prints its id")
    p.add_argument("parent_id")
    p.add_argument("--title", required=True)
    p.add_argument("--intent", default="")
    p.add_argument("--words", type=_non_negative, required=True, metavar="N", help="target words")
    p.add_argument("--position", type=_non_negative, metavar="I", help="index among the siblings (default: last)")
    p = node_command("delete", _node_delete, "delete a section and everything under it")
    p.add_argument("node_id")
    p = node_command("move", _node_move, "move a section under another parent and/or to a position")
    p.add_argument("node_id")
    p.add_argument("--parent", metavar="NODE_ID", help="the new parent (default: the same)")
    p.add_argument("--position", type=_non_negative, metavar="I", help="index among the siblings (default: last)")

    source = subparsers.add_parser("source", help="attach documents to write from and cite, list and delete them",
                                   description="Sources of an artifact: Markdown, text, HTML or PDF files.")
    actions = source.add_subparsers(dest="source_command", required=True)

    def source_command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=_runner(func))
        return parser

    p = source_command("add", _source_add, "attach a file to an artifact; prints the source id")
    p.add_argument("file", type=Path)
    p.add_argument("--artifact", required=True, metavar="ID")
    p.add_argument("--title", help="shown in reference lists (the file name by default)")
    p.add_argument("--type", choices=sorted(set(_MEDIA_TYPES.values())), help="media type (from the extension "
                   "by default)")
    p.add_argument("--request-id", help="idempotency key (a fresh one by default)")
    p = source_command("list", _source_list, "list an artifact's sources")
    p.add_argument("artifact_id")
    p = source_command("show", _source_show, "print a source's passages")
    p.add_argument("source_id")
    p = source_command("delete", _source_delete, "delete a source (no longer retrieved; citations still resolve)")
    p.add_argument("source_id")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `lace-client`, for installs of the client without the server."""
    parser = argparse.ArgumentParser(prog="lace-client", description="Client for a LACE server (lace.v1 over gRPC).")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
