/**
 * The TypeScript client against a real LACE server over TLS and mutual TLS, with a CA made for the
 * test by tests/support/certs.py (Python `cryptography`). The client side is plain connect-node:
 * createGrpcTransport over https with `nodeOptions: { ca, cert, key }`, as the README shows.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type { SecureClientSessionOptions } from "node:http2";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { CompileFormat, createLaceClients, isTerminalEvent, RunState, watch } from "../src/index.js";
import type { LaceClients, RunEvent } from "../src/index.js";
import { makeCertificates } from "./certs.js";
import type { Certificates } from "./certs.js";
import { startLaceServer } from "./server.js";
import type { LaceServer } from "./server.js";

function clientsOver(server: LaceServer, nodeOptions: SecureClientSessionOptions): LaceClients {
  return createLaceClients(createGrpcTransport({ baseUrl: server.baseUrl, nodeOptions }));
}

function tlsEnv(certs: Certificates, mutual: boolean): Record<string, string> {
  return {
    LACE_TLS_CERT: certs.server.certFile,
    LACE_TLS_KEY: certs.server.keyFile,
    ...(mutual ? { LACE_TLS_CLIENT_CA: certs.caFile } : {}),
  };
}

/** The `code`s of an error and its causes (Node's TLS errors carry the OpenSSL reason there). */
function causeCodes(err: unknown): string[] {
  const codes: string[] = [];
  for (let reason = err; reason instanceof Error; reason = reason.cause) {
    const code: unknown = (reason as { code?: unknown }).code;
    if (typeof code === "string") codes.push(code);
  }
  return codes;
}

/**
 * Asserts how connect-node reports a connection that the server closes under the first request.
 * That is how a refused client certificate looks from the client: under TLS 1.3 the client's side
 * of the handshake completes before the server has checked the client's certificate, and the server
 * then closes the connection (no TLS error reaches Node). Node's http2 session resets its open streams
 * with CANCEL, which connect-node maps to CANCELED (grpc-python reports the same refusal as
 * UNAVAILABLE). A plaintext client on the TLS port ends the same way.
 */
async function assertDropped(call: Promise<unknown>): Promise<void> {
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof ConnectError, `a ConnectError, got ${String(err)}`);
    assert.equal(err.code, Code.Canceled, `${Code[err.code]}: ${err.message}`);
    assert.equal(err.rawMessage, "http/2 stream closed with error code CANCEL (0x8)");
    return true;
  });
}

/** Asserts that the client refused the server's certificate because it does not chain to a CA it trusts. */
async function assertServerNotTrusted(call: Promise<unknown>): Promise<void> {
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof ConnectError, `a ConnectError, got ${String(err)}`);
    assert.equal(err.code, Code.Internal, `${Code[err.code]}: ${err.message}`);
    // The server sends its leaf certificate only, so OpenSSL cannot find the issuer among the trusted CAs.
    assert.deepEqual(causeCodes(err.cause), ["UNABLE_TO_VERIFY_LEAF_SIGNATURE"]);
    return true;
  });
}

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

describe("LACE TypeScript client over TLS", { timeout: 420_000 }, () => {
  let certs: Certificates;

  before(async () => {
    certs = await makeCertificates();
  });

  after(async () => {
    await certs?.remove();
  });

  describe("mutual TLS (LACE_TLS_CLIENT_CA)", () => {
    let server: LaceServer;

    before(async () => {
      server = await startLaceServer({ env: tlsEnv(certs, true), readyTimeoutMs: 120_000 });
      assert.match(server.baseUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
    });

    after(async () => {
      await server?.stop();
    });

    test("a client with a certificate of the client CA creates an artifact, reads it back and watches a run to completion", async () => {
      const { artifacts, runs } = clientsOver(server, { ca: certs.ca, cert: certs.client.cert, key: certs.client.key });
      const { artifact: created } = await artifacts.createArtifact({
        artifact: { title: "Over mutual TLS", brief: "A short note on certificates for operators.", targetWords: 600 },
        requestId: randomUUID(),
      });
      assert.ok(created?.id, "CreateArtifact returns the artifact with its id");

      const { artifact: read } = await artifacts.getArtifact({ artifactId: created.id });
      assert.equal(read?.id, created.id);
      assert.equal(read?.title, "Over mutual TLS");
      assert.equal(read?.targetWords, 600);
      const { artifacts: listed } = await artifacts.listArtifacts({});
      assert.ok(listed.some((artifact) => artifact.id === created.id), "ListArtifacts includes the new artifact");

      // A server stream over the same TLS session: the run's whole history, then its terminal event.
      const { run } = await runs.startRun({ artifactId: created.id, requestId: randomUUID() });
      assert.ok(run?.id, "StartRun returns the run with its id");
      const events = await collect(watch(runs, run.id));
      assert.ok(events.length > 3, `a run has several events, got ${events.length}`);
      assert.deepEqual(events.map((event) => Number(event.seq)), Array.from(events, (_, i) => i + 1));
      const last = events.at(-1);
      assert.ok(last && isTerminalEvent(last) && last.payload.case === "runStateChanged");
      assert.equal(last.payload.value.toState, RunState.COMPLETED);

      const { run: finished } = await runs.getRun({ runId: run.id });
      assert.equal(finished?.state, RunState.COMPLETED);
      assert.equal(finished?.headSeq, BigInt(events.length));
      const { content } = await artifacts.compileArtifact({ artifactId: created.id, format: CompileFormat.MARKDOWN });
      assert.match(content, /^# Over mutual TLS$/m);
    });

    test("a client without a client certificate is refused", async () => {
      const { artifacts, runs } = clientsOver(server, { ca: certs.ca });
      await assertDropped(artifacts.listArtifacts({}));
      // watch() does not retry CANCELED; maxRetries 0 makes a wrong (retryable) code fail at once too.
      await assertDropped(collect(watch(runs, randomUUID(), 0n, { maxRetries: 0 })));
    });

    test("a client with a certificate of another CA is refused", async () => {
      const { artifacts } = clientsOver(server, {
        ca: certs.ca,
        cert: certs.rogueClient.cert,
        key: certs.rogueClient.key,
      });
      await assertDropped(artifacts.listArtifacts({}));
    });

    test("a client that does not trust the server's CA refuses the server", async () => {
      // The right client certificate, so that only the server's certificate is in question.
      const pair = { cert: certs.client.cert, key: certs.client.key };
      await assertServerNotTrusted(clientsOver(server, { ca: certs.otherCa, ...pair }).artifacts.listArtifacts({}));
      await assertServerNotTrusted(clientsOver(server, pair).artifacts.listArtifacts({})); // Node's default CAs
    });
  });

  describe("server-only TLS (no LACE_TLS_CLIENT_CA)", () => {
    let server: LaceServer;

    before(async () => {
      server = await startLaceServer({ env: tlsEnv(certs, false), readyTimeoutMs: 120_000 });
    });

    after(async () => {
      await server?.stop();
    });

    test("a client that trusts the CA needs no certificate; plaintext and an untrusted server are refused", async () => {
      const { artifacts } = clientsOver(server, { ca: certs.ca });
      const { artifact: created } = await artifacts.createArtifact({
        artifact: { title: "Over TLS", brief: "A brief sent encrypted.", targetWords: 600 },
        requestId: randomUUID(),
      });
      assert.ok(created?.id);
      const { artifact: read } = await artifacts.getArtifact({ artifactId: created.id });
      assert.equal(read?.title, "Over TLS");

      // gRPC over plaintext HTTP/2 to the TLS port: the server drops what is not a TLS handshake.
      const plain = createLaceClients(createGrpcTransport({ baseUrl: server.baseUrl.replace(/^https:/, "http:") }));
      await assertDropped(plain.artifacts.listArtifacts({}));
      await assertServerNotTrusted(clientsOver(server, { ca: certs.otherCa }).artifacts.listArtifacts({}));
    });
  });
});
