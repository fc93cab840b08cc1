// @ts-check
/**
 * Child processes for the browser end-to-end test: a real LACE server (offline LLM, embedded
 * PostgreSQL in a fresh data directory) and the web front end (Envoy + static UI) in front of it.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const VENV_BIN = join(REPO_ROOT, ".venv", "bin");

/**
 * @typedef {object} Service
 * @property {number} port
 * @property {() => string} log  stderr so far
 * @property {() => Promise<void>} stop
 */

/** @returns {Promise<number>} a port that was free a moment ago */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/**
 * Spawns `command`, resolves with the port parsed from the first stdout line matching `ready`.
 * @param {string} command
 * @param {string[]} args
 * @param {Record<string, string>} env
 * @param {RegExp} ready  its first group is the port
 * @param {() => Promise<void>} cleanup  run after the process exits
 * @returns {Promise<Service>}
 */
async function startProcess(command, args, env, ready, cleanup) {
  const child = spawn(command, args, { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  let stdout = "";
  child.stderr.setEncoding("utf8").on("data", (/** @type {string} */ chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((done) => child.once("exit", done));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    await cleanup();
  };
  try {
    const port = await new Promise((resolvePort, reject) => {
      const timer = setTimeout(() => fail(`not ready after 60 s`), 60_000);
      /** @param {string} message */
      function fail(message) {
        clearTimeout(timer);
        reject(new Error(`${command} ${args.join(" ")}: ${message}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`));
      }
      child.stdout.setEncoding("utf8").on("data", (/** @type {string} */ chunk) => {
        stdout += chunk;
        const match = ready.exec(stdout);
        if (match?.[1]) {
          clearTimeout(timer);
          resolvePort(Number(match[1]));
        }
      });
      child.once("exit", (code, signal) => fail(`exited early (code ${code}, signal ${signal})`));
      child.once("error", (err) => fail(err.message));
    });
    return { port, log: () => stderr, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * `lace serve` on a free port with the offline provider.
 * @param {Record<string, string>} [env]  e.g. { LACE_OFFLINE_LATENCY_MS: "100" } for longer runs
 * @returns {Promise<Service>}
 */
export async function startLace(env = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), "lace-web-e2e-"));
  return startProcess(
    join(VENV_BIN, "lace"),
    ["serve", "--listen", "127.0.0.1:0"],
    { LACE_LLM: "offline", LACE_DATA_DIR: dataDir, LACE_LOG_LEVEL: "WARNING", ...env },
    /lace: serving lace\.v1 on [^\s:]+:(\d+)/,
    () => rm(dataDir, { recursive: true, force: true }),
  );
}

/**
 * The web front end (`python -m lace_server.web`): Envoy with grpc-web on `webPort`, serving `staticDir`.
 * @param {number} grpcPort
 * @param {number} webPort
 * @param {string} staticDir
 * @returns {Promise<Service>}
 */
export function startWeb(grpcPort, webPort, staticDir) {
  return startProcess(
    join(VENV_BIN, "python"),
    ["-m", "lace_server.web", "--grpc-port", String(grpcPort), "--web-port", String(webPort), "--static-dir", staticDir],
    {},
    /lace-web: serving http:\/\/[^\s:]+:(\d+)\//,
    async () => undefined,
  );
}
