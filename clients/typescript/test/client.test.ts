/**
 * The TypeScript client against a real LACE server over native gRPC (HTTP/2, connect-node).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import {
  CompileFormat,
  createLaceClients,
  isTerminalEvent,
  RunState,
  watch,
} from "../src/index.js";
import type { Artifact, LaceClients, RunClient, RunEvent, StreamRunResponse } from "../src/index.js";
import { startLaceServer } from "./server.js";
import type { LaceServer } from "./server.js";

let server: LaceServer;
let sessions: Http2SessionManager;
let clients: LaceClients;

async function createArtifact(targetWords: number, title = "Tidal energy"): Promise<Artifact> {
  const { artifact } = await clients.artifacts.createArtifact({
    artifact: { title, brief: "A report on tidal energy for coastal planners.", targetWords },
    requestId: randomUUID(),
  });
  assert.ok(artifact?.id, "CreateArtifact returns the artifact with its id");
  return artifact;
}

async function startRun(artifactId: string): Promise<string> {
  const { run } = await clients.runs.startRun({ artifactId, requestId: randomUUID() });
  assert.ok(run?.id, "StartRun returns the run with its id");
  return run.id;
}

/** Reads the raw StreamRun stream (no client-side dedupe) until it ends, or `limit` events. */
async function readStream(runId: string, cursor: bigint, limit = Infinity): Promise<RunEvent[]> {
  const abort = new AbortController();
  const events: RunEvent[] = [];
  try {
    for await (const response of clients.runs.streamRun({ runId, cursor }, { signal: abort.signal })) {
      events.push(...response.events);
      if (events.length >= limit) {
        abort.abort(); // disconnect mid-stream, like a client losing its connection
        break;
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  }
  return events.slice(0, limit);
}

function seqs(events: readonly RunEvent[]): number[] {
  return events.map((event) => Number(event.seq));
}

function oneTo(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

describe("LACE TypeScript client over gRPC", { timeout: 180_000 }, () => {
  before(async () => {
    // Slow the offline model down a little so that runs are still live while we watch them.
    server = await startLaceServer({ env: { LACE_OFFLINE_LATENCY_MS: "40" } });
    sessions = new Http2SessionManager(server.baseUrl);
    // connect-node v2's gRPC transport always speaks HTTP/2 (no httpVersion option); the explicit
    // session manager lets us close the connection when the suite ends.
    clients = createLaceClients(createGrpcTransport({ baseUrl: server.baseUrl, sessionManager: sessions }));
  });

  after(async () => {
    sessions?.abort();
    await server?.stop();
  });

  test("creates an artifact, runs it, and streams every event exactly once (seq 1..N)", async () => {
    const artifact = await createArtifact(2500);
    const runId = await startRun(artifact.id);

    const events = await readStream(runId, 0n);
    const n = events.length;
    assert.ok(n > 5, `a run has many events, got ${n}`);
    assert.deepEqual(seqs(events), oneTo(n));
    assert.ok(events.every((event) => event.runId === runId));
    const last = events.at(-1);
    assert.ok(last && isTerminalEvent(last));
    assert.equal(last.payload.case, "runStateChanged");
    assert.equal(last.payload.value.toState, RunState.COMPLETED);
    const kinds = new Set(events.map((event) => event.payload.case));
    for (const kind of ["nodeSplit", "blocksApplied", "llmCallCompleted", "validationReported"] as const) {
      assert.ok(kinds.has(kind), `the run emits ${kind}`);
    }

    const { run } = await clients.runs.getRun({ runId });
    assert.equal(run?.state, RunState.COMPLETED);
    assert.equal(run?.headSeq, BigInt(n));
    assert.ok((run?.nodesWritten ?? 0) >= 2);

    // The watch() helper yields the same history, and a cursor at the end of a finished run ends at once.
    assert.deepEqual(seqs(await collect(watch(clients.runs, runId))), oneTo(n));
    assert.deepEqual(await readStream(runId, BigInt(n)), []);

    const { content, mediaType } = await clients.artifacts.compileArtifact({
      artifactId: artifact.id,
      format: CompileFormat.HTML,
    });
    assert.equal(mediaType, "text/html");
    assert.match(content, /data-block-id="[0-9a-f-]{36}"/);
  });

  test("reconnecting mid-stream with the cursor misses nothing and repeats nothing", async () => {
    const artifact = await createArtifact(6000, "Offshore wind");
    const runId = await startRun(artifact.id);

    const k = 7;
    const first = await readStream(runId, 0n, k);
    assert.deepEqual(seqs(first), oneTo(k));
    const { run: live } = await clients.runs.getRun({ runId });
    assert.ok(live && !TERMINAL.has(live.state), "the run is still live when we reconnect");

    const rest = await readStream(runId, BigInt(k));
    assert.equal(Number(rest[0]?.seq), k + 1, "the second stream starts right after the cursor");
    const all = [...first, ...rest];
    assert.deepEqual(seqs(all), oneTo(all.length));
    const last = all.at(-1);
    assert.ok(last && isTerminalEvent(last));

    // Same with watch(): stop after k events, resume from its cursor.
    const head: RunEvent[] = [];
    for await (const event of watch(clients.runs, runId)) {
      head.push(event);
      if (head.length === k) break;
    }
    const tail = await collect(watch(clients.runs, runId, head.at(-1)?.seq ?? 0n));
    assert.deepEqual(seqs([...head, ...tail]), oneTo(all.length));
  });

  test("watch() reconnects after UNAVAILABLE and never yields a seq twice", async () => {
    const artifact = await createArtifact(4000, "Heat pumps");
    const runId = await startRun(artifact.id);

    // A RunClient whose first stream breaks with UNAVAILABLE after 5 events, and whose later
    // streams replay from 3 events before the cursor, as a misbehaving server or proxy might.
    const cursors: bigint[] = [];
    const flaky: RunClient = {
      ...clients.runs,
      streamRun(request, options) {
        const cursor = BigInt(request.cursor ?? 0n);
        cursors.push(cursor);
        const attempt = cursors.length;
        const replayFrom = cursor > 3n ? cursor - 3n : 0n;
        const upstream = clients.runs.streamRun({ runId: request.runId ?? "", cursor: replayFrom }, options);
        return (async function* (): AsyncGenerator<StreamRunResponse> {
          let sent = 0;
          for await (const response of upstream) {
            for (const event of response.events) {
              if (attempt === 1 && sent === 5) throw new ConnectError("connection reset", Code.Unavailable);
              sent += 1;
              yield { ...response, events: [event] };
            }
          }
        })();
      },
    };
    const reconnects: bigint[] = [];
    const events = await collect(
      watch(flaky, runId, 0n, { initialBackoffMs: 10, onReconnect: (_err, cursor) => reconnects.push(cursor) }),
    );
    assert.deepEqual(reconnects, [5n]);
    assert.deepEqual(cursors, [0n, 5n]);
    assert.deepEqual(seqs(events), oneTo(events.length));
    const last = events.at(-1);
    assert.ok(last && isTerminalEvent(last));
  });

  test("pause and resume a run, cancel another, as seen in the stream", async () => {
    const artifact = await createArtifact(6000, "Battery recycling");
    const runId = await startRun(artifact.id);

    const seen: RunEvent[] = [];
    const states: RunState[] = [];
    let pauseSent = false;
    for await (const event of watch(clients.runs, runId)) {
      seen.push(event);
      if (event.payload.case === "llmCallCompleted" && states.length === 2 && !pauseSent) {
        // PENDING, RUNNING so far: pause after the first LLM call, once. A client behind the run
        // (a busy machine) may see a second call completed before the PAUSING event; pausing again
        // then finds the run PAUSED already, which PauseRun refuses.
        pauseSent = true;
        const { run } = await clients.runs.pauseRun({ runId, requestId: randomUUID() });
        assert.ok(run && [RunState.PAUSING, RunState.PAUSED].includes(run.state));
      }
      if (event.payload.case !== "runStateChanged") continue;
      states.push(event.payload.value.toState);
      if (event.payload.value.toState === RunState.PAUSED) {
        const { run: paused } = await clients.runs.getRun({ runId });
        assert.equal(paused?.state, RunState.PAUSED);
        const { run } = await clients.runs.resumeRun({ runId, requestId: randomUUID() });
        assert.ok(run && [RunState.PENDING, RunState.RUNNING].includes(run.state));
      }
    }
    assert.deepEqual(seqs(seen), oneTo(seen.length));
    assert.deepEqual(states, [
      RunState.PENDING, RunState.RUNNING, RunState.PAUSING, RunState.PAUSED,
      RunState.PENDING, RunState.RUNNING, RunState.COMPLETED,
    ]);

    // A second run of a finished artifact has nothing left to write, so cancel a run of a new one.
    const second = await startRun((await createArtifact(6000, "Flywheels")).id);
    const events: RunEvent[] = [];
    let cancelled = false;
    for await (const event of watch(clients.runs, second)) {
      events.push(event);
      if (event.payload.case === "blocksApplied" && !cancelled) {
        cancelled = true;
        const { run } = await clients.runs.cancelRun({ runId: second, requestId: randomUUID() });
        assert.ok(run && [RunState.CANCELLING, RunState.CANCELLED].includes(run.state));
      }
    }
    assert.deepEqual(seqs(events), oneTo(events.length));
    const last = events.at(-1);
    assert.ok(last?.payload.case === "runStateChanged" && last.payload.value.toState === RunState.CANCELLED);
    await assert.rejects(clients.runs.cancelRun({ runId: second }), (err: unknown) => {
      assert.equal(ConnectError.from(err).code, Code.FailedPrecondition);
      return true;
    });
  });

  test("watch() does not retry NOT_FOUND", async () => {
    await assert.rejects(collect(watch(clients.runs, randomUUID(), 0n, { initialBackoffMs: 1 })), (err: unknown) => {
      assert.equal(ConnectError.from(err).code, Code.NotFound);
      return true;
    });
  });
});

const TERMINAL = new Set([RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED]);
