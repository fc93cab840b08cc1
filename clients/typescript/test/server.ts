/**
 * Starts a real LACE server (`lace serve`, offline LLM, embedded PostgreSQL in a fresh temporary
 * data directory) on a free port, for the tests.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export interface LaceServer {
  /** "http://127.0.0.1:PORT" ("https://" with LACE_TLS_CERT in `env`), for createGrpcTransport's baseUrl. */
  readonly baseUrl: string;
  readonly port: number;
  /** The server's log (stderr) so far, for failure messages. */
  log(): string;
  /** SIGTERM, wait for a graceful exit, remove the data directory. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /**
   * Extra environment, e.g. { LACE_OFFLINE_LATENCY_MS: "30" } to make runs last longer, or
   * LACE_TLS_CERT, LACE_TLS_KEY (and LACE_TLS_CLIENT_CA) to serve TLS (mutual TLS).
   */
  readonly env?: Readonly<Record<string, string>>;
  readonly readyTimeoutMs?: number;
}

export async function startLaceServer(options: StartOptions = {}): Promise<LaceServer> {
  const lace = process.env["LACE_BIN"] ?? join(REPO_ROOT, ".venv/bin/lace");
  const dataDir = await mkdtemp(join(tmpdir(), "lace-ts-test-"));
  const child = spawn(lace, ["serve", "--listen", "127.0.0.1:0"], {
    cwd: REPO_ROOT,
    env: { ...process.env, LACE_LLM: "offline", LACE_DATA_DIR: dataDir, LACE_LOG_LEVEL: "WARNING", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const stop = async (): Promise<void> => {
    await terminate(child);
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    const port = await waitForReady(child, options.readyTimeoutMs ?? 60_000, () => stderr);
    // The scheme is what tells connect-node to open the HTTP/2 session over TLS.
    const scheme = options.env?.["LACE_TLS_CERT"] ? "https" : "http";
    return { baseUrl: `${scheme}://127.0.0.1:${port}`, port, log: () => stderr, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function waitForReady(child: ChildProcess, timeoutMs: number, log: () => string): Promise<number> {
  return new Promise((resolvePort, reject) => {
    let stdout = "";
    const timer = setTimeout(() => fail(`lace serve not ready after ${timeoutMs} ms`), timeoutMs);
    function fail(message: string): void {
      clearTimeout(timer);
      reject(new Error(`${message}\n--- stdout ---\n${stdout}\n--- stderr ---\n${log()}`));
    }
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      const match = /lace: serving lace\.v1 on [^\s:]+:(\d+)/.exec(stdout);
      if (match?.[1] !== undefined) {
        clearTimeout(timer);
        resolvePort(Number(match[1]));
      }
    });
    child.once("exit", (code, signal) => fail(`lace serve exited early (code ${code}, signal ${signal})`));
    child.once("error", (err) => fail(`could not start lace serve: ${err.message}`));
  });
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}
