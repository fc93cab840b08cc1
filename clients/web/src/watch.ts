/**
 * Reconnecting run watcher (the same contract as `watch` in clients/typescript/src/index.ts): yields
 * each event with `seq > cursor` exactly once, in order; reconnects with its cursor after UNAVAILABLE;
 * returns after the run's terminal event or when the signal is aborted.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Client } from "@connectrpc/connect";

import type { RunEvent } from "./gen/lace/v1/run_pb.js";
import type { RunService, StreamRunResponse } from "./gen/lace/v1/run_service_pb.js";

export type RunClient = Client<typeof RunService>;

export interface WatchOptions {
  readonly signal?: AbortSignal;
  readonly maxRetries?: number;
  readonly onHeartbeat?: (response: StreamRunResponse) => void;
  readonly onReconnect?: (error: ConnectError, cursor: bigint, attempt: number) => void;
  readonly onConnected?: () => void;
}

export async function* watch(
  runs: RunClient,
  runId: string,
  cursor: bigint,
  options: WatchOptions = {},
): AsyncGenerator<RunEvent, void, undefined> {
  let last = cursor;
  let failures = 0;
  const outer = options.signal;
  while (!outer?.aborted) {
    const attempt = new AbortController();
    const forward = (): void => attempt.abort();
    outer?.addEventListener("abort", forward, { once: true });
    try {
      options.onConnected?.();
      for await (const response of runs.streamRun({ runId, cursor: last }, { signal: attempt.signal })) {
        if (response.events.length === 0) options.onHeartbeat?.(response);
        for (const event of response.events) {
          if (event.seq <= last) continue;
          last = event.seq;
          failures = 0;
          yield event;
          if (outer?.aborted) return;
        }
      }
      return;
    } catch (err) {
      if (outer?.aborted) return;
      const error = ConnectError.from(err);
      if (error.code !== Code.Unavailable || failures >= (options.maxRetries ?? 20)) throw error;
      failures += 1;
      options.onReconnect?.(error, last, failures);
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** (failures - 1))));
    } finally {
      outer?.removeEventListener("abort", forward);
      attempt.abort();
    }
  }
}
