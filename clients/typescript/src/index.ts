/**
 * LACE TypeScript client: typed clients for the lace.v1 services and a reconnecting run watcher.
 *
 * ```ts
 * import { createGrpcTransport } from "@connectrpc/connect-node";
 * import { createLaceClients, watch } from "@lace/client";
 *
 * const { artifacts, runs } = createLaceClients(
 *   createGrpcTransport({ baseUrl: "http://127.0.0.1:50051" }), // gRPC over HTTP/2
 * );
 * for await (const event of watch(runs, runId)) console.log(event.seq, event.payload.case);
 * ```
 *
 * Over TLS: an `https://` baseUrl and `nodeOptions: { ca, cert, key }` (cert and key for mutual TLS);
 * see the README.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Client, Transport } from "@connectrpc/connect";

import { ArtifactService } from "./gen/lace/v1/artifact_service_pb.js";
import { RunState } from "./gen/lace/v1/run_pb.js";
import type { RunEvent } from "./gen/lace/v1/run_pb.js";
import { RunService } from "./gen/lace/v1/run_service_pb.js";
import type { StreamRunResponse } from "./gen/lace/v1/run_service_pb.js";

export * from "./gen/lace/v1/artifact_pb.js";
export * from "./gen/lace/v1/artifact_service_pb.js";
export * from "./gen/lace/v1/run_pb.js";
export * from "./gen/lace/v1/run_service_pb.js";

/** Client of lace.v1.ArtifactService. */
export type ArtifactClient = Client<typeof ArtifactService>;
/** Client of lace.v1.RunService. */
export type RunClient = Client<typeof RunService>;

/** Both LACE service clients over one transport. */
export interface LaceClients {
  readonly artifacts: ArtifactClient;
  readonly runs: RunClient;
}

/**
 * Creates the ArtifactService and RunService clients over `transport` (a gRPC transport from
 * `@connectrpc/connect-node`, or a gRPC-web transport from `@connectrpc/connect-web`).
 */
export function createLaceClients(transport: Transport): LaceClients {
  return {
    artifacts: createClient(ArtifactService, transport),
    runs: createClient(RunService, transport),
  };
}

/** Terminal run states: the stream of a run ends (with OK) after the event that enters one. */
export const TERMINAL_RUN_STATES: ReadonlySet<RunState> = new Set([
  RunState.COMPLETED,
  RunState.FAILED,
  RunState.CANCELLED,
]);

/** True when `event` moves its run into a terminal state. */
export function isTerminalEvent(event: RunEvent): boolean {
  return event.payload.case === "runStateChanged" && TERMINAL_RUN_STATES.has(event.payload.value.toState);
}

/** Options of {@link watch}. */
export interface WatchOptions {
  /** Stops watching: the generator returns quietly once the signal is aborted. */
  readonly signal?: AbortSignal;
  /** Status codes after which the stream is reopened from the cursor. Default: UNAVAILABLE. */
  readonly retryableCodes?: readonly Code[];
  /** Consecutive failed attempts (without any new event) before giving up. Default 8. */
  readonly maxRetries?: number;
  /** First reconnection delay in milliseconds, doubled per failed attempt. Default 250. */
  readonly initialBackoffMs?: number;
  /** Upper bound of the reconnection delay in milliseconds. Default 5000. */
  readonly maxBackoffMs?: number;
  /** Called with every response that carries no events (the server's heartbeats). */
  readonly onHeartbeat?: (response: StreamRunResponse) => void;
  /** Called before each reconnection with the error, the cursor it resumes from and the attempt number. */
  readonly onReconnect?: (error: ConnectError, cursor: bigint, attempt: number) => void;
}

/**
 * Watches a run: yields each of its events with `seq > cursor`, in seq order, exactly once.
 *
 * Replays stored events, then tails live ones. When the stream breaks with a retryable status
 * (UNAVAILABLE by default: server restart, network loss, proxy reset) it reconnects with the
 * last seq it yielded as the cursor, so nothing is missed and nothing is yielded twice, even if
 * a server were to resend events. The generator returns after the run's terminal event (the
 * server then ends the stream with OK), or quietly when `options.signal` is aborted. Other
 * statuses (NOT_FOUND, INVALID_ARGUMENT, ...) are thrown as ConnectError.
 */
export async function* watch(
  runClient: RunClient,
  runId: string,
  cursor: bigint | number = 0n,
  options: WatchOptions = {},
): AsyncGenerator<RunEvent, void, undefined> {
  let last = BigInt(cursor);
  if (last < 0n) throw new ConnectError("cursor must not be negative", Code.InvalidArgument);
  const retryable = new Set(options.retryableCodes ?? [Code.Unavailable]);
  const maxRetries = options.maxRetries ?? 8;
  const initialBackoff = options.initialBackoffMs ?? 250;
  const maxBackoff = options.maxBackoffMs ?? 5000;
  const outer = options.signal;
  let failures = 0;

  while (!outer?.aborted) {
    // One controller per attempt: aborting it cancels the HTTP stream when the consumer stops
    // early (break/return), when the caller's signal fires, or before a reconnection.
    const attempt = new AbortController();
    const forward = (): void => attempt.abort();
    outer?.addEventListener("abort", forward, { once: true });
    try {
      for await (const response of runClient.streamRun({ runId, cursor: last }, { signal: attempt.signal })) {
        if (response.events.length === 0) {
          options.onHeartbeat?.(response);
          continue;
        }
        for (const event of response.events) {
          if (event.seq <= last) continue; // never yield a seq twice
          last = event.seq;
          failures = 0;
          yield event;
          if (outer?.aborted) return;
        }
      }
      return; // the server ended the stream with OK: the run reached its terminal event
    } catch (err) {
      if (outer?.aborted) return;
      const error = ConnectError.from(err);
      if (!retryable.has(error.code) || failures >= maxRetries) throw error;
      failures += 1;
      options.onReconnect?.(error, last, failures);
      await sleep(Math.min(maxBackoff, initialBackoff * 2 ** (failures - 1)), outer);
    } finally {
      outer?.removeEventListener("abort", forward);
      attempt.abort();
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
