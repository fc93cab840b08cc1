/**
 * A throwaway certificate authority for the TLS tests. The certificates are made by
 * tests/support/certs.py (Python `cryptography`, in the repository's .venv), so the TypeScript
 * client is checked against exactly the kind of CA, server and client certificates that the Python
 * client's TLS tests use.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

import { REPO_ROOT } from "./server.js";

/** A certificate and its key: the files (for `lace serve`) and their PEM contents (for a client). */
export interface KeyPair {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface Certificates {
  /** The test CA's certificate file: LACE_TLS_CLIENT_CA, and what a client trusts. */
  readonly caFile: string;
  readonly ca: Buffer;
  /** Issued by the test CA for 127.0.0.1 and localhost. */
  readonly server: KeyPair;
  /** Issued by the test CA for client authentication. */
  readonly client: KeyPair;
  /** Another CA, unrelated to the test CA. */
  readonly otherCa: Buffer;
  /** A client certificate issued by the other CA. */
  readonly rogueClient: KeyPair;
  /** Removes the directory holding the files. */
  remove(): Promise<void>;
}

// Prints the file paths as JSON so that the file names stay tests/support/certs.py's business.
const MAKE_CERTIFICATES = `
import json, sys
from pathlib import Path
from tests.support.certs import Authority

directory = Path(sys.argv[1])
ca = Authority(directory)
server = ca.issue("lace-server", server=True)
client = ca.issue("lace-client", server=False)
(directory / "other").mkdir()
other = Authority(directory / "other", "Other CA")
rogue = other.issue("rogue-client", server=False)
pair = lambda pem: {"cert": str(pem.cert), "key": str(pem.key)}
print(json.dumps({"ca": str(ca.ca_file), "server": pair(server), "client": pair(client),
                  "other_ca": str(other.ca_file), "rogue_client": pair(rogue)}))
`;

interface PairPaths {
  readonly cert: string;
  readonly key: string;
}

interface Paths {
  readonly ca: string;
  readonly server: PairPaths;
  readonly client: PairPaths;
  readonly other_ca: string;
  readonly rogue_client: PairPaths;
}

async function keyPair(paths: PairPaths): Promise<KeyPair> {
  return { certFile: paths.cert, keyFile: paths.key, cert: await readFile(paths.cert), key: await readFile(paths.key) };
}

export async function makeCertificates(): Promise<Certificates> {
  const python = process.env["LACE_PYTHON"] ?? join(REPO_ROOT, ".venv/bin/python");
  const dir = await mkdtemp(join(tmpdir(), "lace-ts-tls-"));
  const remove = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    // cwd is the repository root so that `tests.support.certs` is importable (python -c puts cwd on sys.path).
    const { stdout } = await promisify(execFile)(python, ["-c", MAKE_CERTIFICATES, dir], {
      cwd: REPO_ROOT,
      timeout: 120_000,
    });
    const paths = JSON.parse(stdout) as Paths;
    return {
      caFile: paths.ca,
      ca: await readFile(paths.ca),
      server: await keyPair(paths.server),
      client: await keyPair(paths.client),
      otherCa: await readFile(paths.other_ca),
      rogueClient: await keyPair(paths.rogue_client),
      remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}
