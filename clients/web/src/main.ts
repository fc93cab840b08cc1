/**
 * LACE browser UI: artifacts, run control and a live run view, over grpc-web (Envoy in front of LACE).
 *
 * Reload-safe: the watched run, its last seq (the stream cursor) and the event log live in
 * sessionStorage; after a reload the stream resumes from the cursor and events are deduplicated by seq.
 */
import "./style.css";

import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { BlockKind, ChangeOperation, ChangeOrigin } from "./gen/lace/v1/artifact_pb.js";
import type { Artifact, Block, ChangeEvent, Node as SectionNode } from "./gen/lace/v1/artifact_pb.js";
import { ArtifactService, ArtifactView, CompileFormat } from "./gen/lace/v1/artifact_service_pb.js";
import { OutlineEditKind, RunState, StepKind } from "./gen/lace/v1/run_pb.js";
import type { Run, RunEvent } from "./gen/lace/v1/run_pb.js";
import { RunService } from "./gen/lace/v1/run_service_pb.js";
import type { Passage, Source } from "./gen/lace/v1/source_pb.js";
import { SourceService } from "./gen/lace/v1/source_service_pb.js";
import { $, button, el, onSecondClick } from "./dom.js";
import { OutlinePanel, outlineRows } from "./outline.js";
import type { ActiveStep, OutlineActions, SectionFields } from "./outline.js";
import { watch } from "./watch.js";

// ---------------------------------------------------------------------------------------------
// Clients

// The API key (LACE_API_KEYS) goes with every call; it also decides the tenant whose artifacts this page sees.
const KEY_STORAGE = "lace.apiKey.v1";
let apiKey = sessionStorage.getItem(KEY_STORAGE) ?? "";
const withApiKey: Interceptor = (next) => async (request) => {
  if (apiKey) request.header.set("authorization", `Bearer ${apiKey}`);
  return await next(request);
};

const transport = createGrpcWebTransport({ baseUrl: window.location.origin, interceptors: [withApiKey] });
const artifacts = createClient(ArtifactService, transport);
const runs = createClient(RunService, transport);
const sources = createClient(SourceService, transport);

// ---------------------------------------------------------------------------------------------
// DOM

const ui = {
  conn: $("conn"),
  error: $("error"),
  createForm: $<HTMLFormElement>("create-form"),
  createButton: $<HTMLButtonElement>("btn-create"),
  refresh: $<HTMLButtonElement>("btn-refresh"),
  artifactOrder: $<HTMLSelectElement>("artifact-order"),
  artifactSince: $<HTMLSelectElement>("artifact-since"),
  artifactList: $<HTMLUListElement>("artifact-list"),
  empty: $("empty"),
  workspace: $("workspace"),
  title: $("a-title"),
  brief: $("a-brief"),
  meta: $("a-meta"),
  optReview: $<HTMLInputElement>("opt-review"),
  optMaxTokens: $<HTMLInputElement>("opt-max-tokens"),
  optMaxCalls: $<HTMLInputElement>("opt-max-calls"),
  optMaxMinutes: $<HTMLInputElement>("opt-max-minutes"),
  editArtifact: $<HTMLButtonElement>("btn-edit-artifact"),
  deleteArtifact: $<HTMLButtonElement>("btn-delete-artifact"),
  artifactForm: $<HTMLFormElement>("artifact-form"),
  cancelArtifact: $<HTMLButtonElement>("btn-cancel-artifact"),
  estimate: $("s-estimate"),
  start: $<HTMLButtonElement>("btn-start"),
  pause: $<HTMLButtonElement>("btn-pause"),
  resume: $<HTMLButtonElement>("btn-resume"),
  cancel: $<HTMLButtonElement>("btn-cancel"),
  runState: $("run-state"),
  runId: $("run-id"),
  streamStatus: $("stream-status"),
  progress: $("progress-bar"),
  nodes: $("s-nodes"),
  words: $("s-words"),
  tokens: $("s-tokens"),
  calls: $("s-calls"),
  elapsed: $("s-elapsed"),
  events: $("s-events"),
  failure: $("run-failure"),
  doc: $<HTMLIFrameElement>("doc"),
  docEmpty: $("doc-empty"),
  docVersion: $("doc-version"),
  docPast: $("doc-past"),
  versionInput: $<HTMLInputElement>("version-input"),
  versionShow: $<HTMLButtonElement>("btn-version-show"),
  versionLatest: $<HTMLButtonElement>("btn-version-latest"),
  fork: $<HTMLButtonElement>("btn-fork"),
  outline: $<HTMLOListElement>("outline"),
  reviewBanner: $("review-banner"),
  approve: $<HTMLButtonElement>("btn-approve"),
  rewriteStale: $<HTMLButtonElement>("btn-rewrite-stale"),
  downloadFormat: $<HTMLSelectElement>("download-format"),
  download: $<HTMLButtonElement>("btn-download"),
  provenance: $("provenance"),
  sourceForm: $<HTMLFormElement>("source-form"),
  sourceFile: $<HTMLInputElement>("source-file"),
  sourceTitle: $<HTMLInputElement>("source-title"),
  addSource: $<HTMLButtonElement>("btn-add-source"),
  sourceList: $<HTMLUListElement>("source-list"),
  log: $<HTMLOListElement>("event-log"),
  keyForm: $<HTMLFormElement>("key-form"),
  apiKey: $<HTMLInputElement>("api-key"),
};

// ---------------------------------------------------------------------------------------------
// State (the watched run survives reloads through sessionStorage)

interface LogEntry {
  readonly seq: number;
  readonly kind: string;
  readonly text: string;
  readonly time: string;
}

interface Persisted {
  readonly artifactId: string;
  readonly runId: string;
  readonly cursor: number;
  readonly entries: LogEntry[];
  readonly nodeTitles?: [string, string][];
  readonly active?: [string, ActiveStep][];
}

const STORAGE_KEY = "lace.watch.v1";
const SELECTED_KEY = "lace.selected.v1";

const state: {
  artifact?: Artifact;
  run?: Run;
  runId?: string;
  entries: LogEntry[];
  seen: Set<number>;
  cursor: number;
  nodeTitles: Map<string, string>;
  watching?: AbortController;
  docVersion: bigint;
  /** The IR version the document shows; 0 follows the current one. */
  viewVersion: bigint;
  selectedBlock?: string;
  /** Sections a step of the watched run has started and not finished. */
  active: Map<string, ActiveStep>;
  outlineNodes: SectionNode[];
  outlineBlocks: Block[];
} = { entries: [], seen: new Set(), cursor: 0, nodeTitles: new Map(), docVersion: -1n, viewVersion: 0n, active: new Map(),
  outlineNodes: [], outlineBlocks: [] };

function loadPersisted(): Persisted | undefined {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as Persisted) : undefined;
  } catch {
    return undefined;
  }
}

let persistTimer: number | undefined;
function persistSoon(): void {
  if (persistTimer !== undefined) return;
  persistTimer = window.setTimeout(persistNow, 200);
}

function persistNow(): void {
  if (persistTimer !== undefined) window.clearTimeout(persistTimer);
  persistTimer = undefined;
  if (!state.artifact || !state.runId) return;
  // The cursor is the highest seq whose entry is stored with it: a reload resumes right after it.
  const data: Persisted = {
    artifactId: state.artifact.id,
    runId: state.runId,
    cursor: state.cursor,
    entries: state.entries,
    nodeTitles: [...state.nodeTitles],
    active: [...state.active],
  };
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(data));
  } catch {
    // Storage full: keep going; a reload then replays the run from the start (deduplicated).
  }
}
window.addEventListener("pagehide", persistNow);

// ---------------------------------------------------------------------------------------------
// Formatting helpers

const TERMINAL = new Set([RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED]);

function stateName(value: RunState): string {
  return (RunState[value] ?? "UNSPECIFIED").toLowerCase();
}

function stepName(value: StepKind): string {
  return (StepKind[value] ?? "STEP").toLowerCase();
}

function shortId(id: string): string {
  return id ? id.slice(-8) : "–";
}

function nodeLabel(nodeId: string): string {
  const title = state.nodeTitles.get(nodeId);
  return title ? `“${title}”` : `node …${shortId(nodeId)}`;
}

function formatNumber(value: number | bigint): string {
  return Number(value).toLocaleString("en-US");
}

function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function formatTime(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toLocaleTimeString("en-GB", { hour12: false }) : "";
}

function errorMessage(err: unknown): string {
  const e = ConnectError.from(err);
  return e.rawMessage || e.message;
}

function showError(err: unknown): void {
  ui.error.textContent = typeof err === "string" ? err : errorMessage(err);
  ui.error.hidden = false;
}

function clearError(): void {
  ui.error.hidden = true;
}

function requestId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** One line of the event log for an event (node titles are resolved now, while we know them). */
function describe(event: RunEvent): { kind: string; text: string } {
  const p = event.payload;
  switch (p.case) {
    case "runStateChanged": {
      const v = p.value;
      return { kind: "state", text: `run ${stateName(v.toState)}${v.reason ? ` — ${v.reason}` : ""}` };
    }
    case "strategyDecided":
      return { kind: "strategy", text: `${stepName(p.value.strategy)} ${nodeLabel(p.value.nodeId)}: ${p.value.reason}` };
    case "stepStarted":
      return {
        kind: "step",
        text: `${stepName(p.value.step)} started on ${nodeLabel(p.value.nodeId)}${p.value.attempt > 1 ? ` (attempt ${p.value.attempt})` : ""}`,
      };
    case "stepCompleted":
      return { kind: "step", text: `${stepName(p.value.step)} done on ${nodeLabel(p.value.nodeId)}` };
    case "nodeSplit": {
      for (const child of p.value.children) state.nodeTitles.set(child.nodeId, child.title);
      const titles = p.value.children.map((c) => c.title).join(" · ");
      return { kind: "split", text: `split ${nodeLabel(p.value.nodeId)} into ${p.value.children.length}: ${titles}` };
    }
    case "blocksApplied":
      return {
        kind: "write",
        text: `wrote ${nodeLabel(p.value.nodeId)}: ${p.value.blockIds.length} blocks, ${formatNumber(p.value.wordCount)} words (v${p.value.artifactVersion})`,
      };
    case "proposalRejected":
      return {
        kind: "reject",
        text: `proposal for ${nodeLabel(p.value.nodeId)} rejected: ${p.value.errors.join("; ")}${p.value.willRetry ? " — retrying" : ""}`,
      };
    case "llmCallCompleted": {
      const u = p.value.usage;
      const tokens = u ? Number(u.promptTokens + u.completionTokens) : 0;
      return {
        kind: "llm",
        text: `LLM ${p.value.provider}/${p.value.model} for ${stepName(p.value.step)}: ${formatNumber(tokens)} tokens, ${formatNumber(p.value.latencyMs)} ms`,
      };
    }
    case "validationReported": {
      const r = p.value.report;
      const summary = r
        ? `${formatNumber(r.actualWords)}/${formatNumber(r.targetWords)} words, ${r.nodesWritten}/${r.nodesPlanned} nodes, length score ${r.documentLengthScore.toFixed(1)}`
        : "";
      return { kind: r?.ok ? "valid" : "reject", text: `validation ${r?.ok ? "ok" : "found problems"}: ${summary}` };
    }
    case "runFailed":
      return { kind: "reject", text: `run failed: ${p.value.reason}` };
    case "nodeSkipped":
      return { kind: "step", text: `skipped ${nodeLabel(p.value.nodeId)}: ${p.value.reason}` };
    case "planReady": {
      for (const planned of p.value.outline) state.nodeTitles.set(planned.nodeId, planned.title);
      return { kind: "split", text: `plan ready for review: ${p.value.outline.length} sections` };
    }
    case "outlineEdited": {
      for (const planned of p.value.outline) state.nodeTitles.set(planned.nodeId, planned.title);
      const kind = (OutlineEditKind[p.value.kind] ?? "edit").toLowerCase().replace(/_/g, " ");
      return { kind: "split", text: `outline edited (${kind}) at ${nodeLabel(p.value.nodeId)}` };
    }
    case "nodesMarkedStale":
      return {
        kind: "reject",
        text: `marked stale: ${p.value.nodes.map((n) => nodeLabel(n.nodeId)).join(", ")}`,
      };
    default:
      return { kind: "other", text: "event" };
  }
}

// ---------------------------------------------------------------------------------------------
// Artifacts

async function loadArtifacts(): Promise<void> {
  try {
    // ListArtifacts' AIP-132 order_by and AIP-160 filter, from the two controls above the list.
    const days = Number(ui.artifactSince.value || 0);
    const filter = days > 0 ? `create_time >= "${new Date(Date.now() - days * 86_400_000).toISOString()}"` : "";
    const { artifacts: list } = await artifacts.listArtifacts({ pageSize: 100, orderBy: ui.artifactOrder.value, filter });
    ui.artifactList.replaceChildren(
      ...list.map((a) => {
        const li = el(
          "li",
          { className: a.id === state.artifact?.id ? "selected" : "", data: { artifactId: a.id } },
          el("span", { className: "a-name", text: a.title }),
          el(
            "span",
            { className: "a-info" },
            `${formatNumber(a.wordCount)} / ${formatNumber(a.targetWords)} words`,
            ...(a.activeRunId ? [el("span", { className: "badge small running", text: "running" })] : []),
          ),
        );
        li.addEventListener("click", () => void selectArtifact(a.id));
        return li;
      }),
    );
    if (list.length === 0) ui.artifactList.append(el("li", { className: "muted empty-li", text: "No artifacts yet." }));
  } catch (err) {
    showError(err);
  }
}

function renderArtifact(a: Artifact): void {
  ui.empty.hidden = true;
  ui.workspace.hidden = false;
  ui.title.textContent = a.title;
  ui.brief.textContent = a.brief;
  ui.meta.textContent = `${formatNumber(a.wordCount)} of ${formatNumber(a.targetWords)} words · IR version ${a.version} · ${a.id}`;
  state.nodeTitles.set(a.rootNodeId, a.title);
  ui.versionInput.max = String(a.version);
  for (const li of ui.artifactList.querySelectorAll<HTMLLIElement>("li[data-artifact-id]")) {
    li.classList.toggle("selected", li.dataset["artifactId"] === a.id);
  }
}

async function refreshArtifact(): Promise<void> {
  if (!state.artifact) return;
  const { artifact } = await artifacts.getArtifact({ artifactId: state.artifact.id });
  if (artifact && artifact.id === state.artifact.id) {
    state.artifact = artifact;
    renderArtifact(artifact);
  }
}

async function selectArtifact(artifactId: string, resume?: Persisted): Promise<void> {
  clearError();
  stopWatching();
  try {
    const { artifact } = await artifacts.getArtifact({ artifactId });
    if (!artifact) return;
    state.artifact = artifact;
    state.docVersion = -1n;
    state.viewVersion = 0n;
    ui.versionInput.value = "";
    state.selectedBlock = undefined;
    state.active.clear();
    state.outlineNodes = [];
    state.outlineBlocks = [];
    outline.clear();
    ui.artifactForm.hidden = true;
    sessionStorage.setItem(SELECTED_KEY, artifact.id);
    renderArtifact(artifact);
    ui.provenance.replaceChildren(el("p", { className: "muted", text: "Click a block of the document to see where it came from." }));
    void compileDocument();
    void loadSources();
    void loadOutline();

    // The run to show: the active one, else the newest; replayed (from the saved cursor after a reload).
    let runId = artifact.activeRunId;
    if (!runId) {
      const { runs: recent } = await runs.listRuns({ artifactId, pageSize: 1 });
      runId = recent[0]?.id ?? "";
    }
    if (runId) {
      await showRun(runId, resume?.runId === runId ? resume : undefined);
    } else {
      resetRunView(undefined);
    }
  } catch (err) {
    showError(err);
  }
}

ui.createForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(ui.createForm);
  const title = String(form.get("title") ?? "").trim();
  const brief = String(form.get("brief") ?? "").trim();
  const targetWords = Number(form.get("targetWords") ?? 0);
  ui.createButton.disabled = true;
  clearError();
  artifacts
    .createArtifact({ artifact: { title, brief, targetWords }, requestId: requestId() })
    .then(async ({ artifact }) => {
      ui.createForm.reset();
      await loadArtifacts();
      if (artifact) await selectArtifact(artifact.id);
    })
    .catch(showError)
    .finally(() => {
      ui.createButton.disabled = false;
    });
});

ui.refresh.addEventListener("click", () => void loadArtifacts());
ui.artifactOrder.addEventListener("change", () => void loadArtifacts());
ui.artifactSince.addEventListener("change", () => void loadArtifacts());

function field(form: HTMLFormElement, name: string): HTMLInputElement | HTMLTextAreaElement {
  const control = form.elements.namedItem(name);
  if (!(control instanceof HTMLInputElement || control instanceof HTMLTextAreaElement)) throw new Error(`missing ${name}`);
  return control;
}

ui.editArtifact.addEventListener("click", () => {
  const a = state.artifact;
  if (!a) return;
  field(ui.artifactForm, "title").value = a.title;
  field(ui.artifactForm, "brief").value = a.brief;
  field(ui.artifactForm, "style").value = a.style;
  field(ui.artifactForm, "targetWords").value = String(a.targetWords);
  ui.artifactForm.hidden = false;
});
ui.cancelArtifact.addEventListener("click", () => {
  ui.artifactForm.hidden = true;
});

/** Saves the changed fields with UpdateArtifact (a field mask of just those). */
ui.artifactForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const a = state.artifact;
  if (!a) return;
  const values = {
    title: field(ui.artifactForm, "title").value.trim(),
    brief: field(ui.artifactForm, "brief").value.trim(),
    style: field(ui.artifactForm, "style").value.trim(),
    targetWords: Math.trunc(Number(field(ui.artifactForm, "targetWords").value)),
  };
  const paths = [
    ...(values.title !== a.title ? ["title"] : []),
    ...(values.brief !== a.brief ? ["brief"] : []),
    ...(values.style !== a.style ? ["style"] : []),
    ...(values.targetWords !== a.targetWords ? ["target_words"] : []),
  ];
  if (!paths.length) {
    ui.artifactForm.hidden = true;
    return;
  }
  clearError();
  artifacts
    .updateArtifact({ artifact: { id: a.id, ...values }, updateMask: { paths }, requestId: requestId() })
    .then(async () => {
      ui.artifactForm.hidden = true;
      await Promise.all([refreshArtifact(), loadOutline(), loadArtifacts()]);
      scheduleCompile(0);
    })
    .catch(showError);
});

/** Shows no artifact: the run stream stops, and a reload selects nothing. */
function closeArtifact(): void {
  stopWatching();
  resetRunView(undefined);
  state.artifact = undefined;
  sessionStorage.removeItem(SELECTED_KEY);
  sessionStorage.removeItem(STORAGE_KEY);
  ui.workspace.hidden = true;
  ui.empty.hidden = false;
}

// Two clicks, as for a section: the artifact goes with its runs, events and sources.
onSecondClick(ui.deleteArtifact, "Confirm: delete it with its runs and sources", () => {
  const a = state.artifact;
  if (!a) return;
  clearError();
  artifacts
    .deleteArtifact({ artifactId: a.id, requestId: requestId() })
    .then(async () => {
      closeArtifact();
      await loadArtifacts();
    })
    .catch(showError);
});

// ---------------------------------------------------------------------------------------------
// Sources

const MEDIA_TYPES: Record<string, string> = {
  md: "text/markdown",
  markdown: "text/markdown",
  txt: "text/plain",
  text: "text/plain",
  html: "text/html",
  htm: "text/html",
  pdf: "application/pdf",
};

function renderSources(list: Source[]): void {
  if (!list.length) {
    ui.sourceList.replaceChildren(el("li", { className: "muted small", text: "No sources: runs write from the brief alone." }));
    return;
  }
  ui.sourceList.replaceChildren(
    ...list.map((source) => {
      const remove = el("button", { className: "link danger", text: "Delete", title: "No longer retrieved; citations still resolve" });
      remove.type = "button";
      remove.addEventListener("click", () => {
        remove.disabled = true;
        sources
          .deleteSource({ sourceId: source.id })
          .then(loadSources)
          .catch(showError);
      });
      return el(
        "li",
        { data: { sourceId: source.id } },
        el("span", { className: "s-title", text: source.title }),
        el("span", { className: "muted small", text: ` ${source.passageCount} passages · ${source.mediaType}` }),
        " ",
        remove,
      );
    }),
  );
}

async function loadSources(): Promise<void> {
  const artifact = state.artifact;
  if (!artifact) return;
  try {
    const { sources: list } = await sources.listSources({ artifactId: artifact.id, pageSize: 100 });
    if (state.artifact?.id === artifact.id) renderSources(list);
  } catch (err) {
    showError(err);
  }
}

ui.sourceForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const artifact = state.artifact;
  const file = ui.sourceFile.files?.[0];
  if (!artifact || !file) return;
  const mediaType = MEDIA_TYPES[file.name.split(".").pop()?.toLowerCase() ?? ""];
  if (!mediaType) {
    showError(new Error(`${file.name}: only Markdown, text, HTML and PDF files can be sources`));
    return;
  }
  const title = ui.sourceTitle.value.trim() || file.name.replace(/\.[^.]+$/, "");
  ui.addSource.disabled = true;
  clearError();
  file
    .arrayBuffer()
    .then((data) =>
      sources.addSource({
        artifactId: artifact.id,
        title,
        mediaType,
        body: { case: "content", value: new Uint8Array(data) },
        requestId: requestId(),
      }),
    )
    .then(async () => {
      ui.sourceForm.reset();
      await loadSources();
    })
    .catch(showError)
    .finally(() => {
      ui.addSource.disabled = false;
    });
});

// ---------------------------------------------------------------------------------------------
// Runs

function resetRunView(run: Run | undefined): void {
  state.run = run;
  state.runId = run?.id;
  state.entries = [];
  state.seen = new Set();
  state.cursor = 0;
  ui.log.replaceChildren();
  ui.failure.hidden = true;
  ui.streamStatus.textContent = "";
  ui.streamStatus.className = "stream-status";
  renderRun();
}

async function showRun(runId: string, resume: Persisted | undefined): Promise<void> {
  const { run } = await runs.getRun({ runId });
  resetRunView(run);
  if (resume) {
    for (const [id, title] of resume.nodeTitles ?? []) state.nodeTitles.set(id, title);
    for (const [id, step] of resume.active ?? []) state.active.set(id, step);
    for (const entry of resume.entries) appendEntry(entry);
    state.cursor = Math.max(state.cursor, resume.cursor);
  }
  persistNow();
  void follow(runId);
}

function stopWatching(): void {
  state.watching?.abort();
  state.watching = undefined;
}

/** Streams the run from the cursor until its terminal event; the log is deduplicated by seq. */
async function follow(runId: string): Promise<void> {
  stopWatching();
  const controller = new AbortController();
  state.watching = controller;
  setStreamStatus("connecting", "connecting…");
  try {
    for await (const event of watch(runs, runId, BigInt(state.cursor), {
      signal: controller.signal,
      onConnected: () => setStreamStatus("live", "live"),
      onHeartbeat: (response) => {
        if (state.run && response.runState) state.run.state = response.runState;
        renderRun();
      },
      onReconnect: (err, cursor, attempt) =>
        setStreamStatus("reconnecting", `reconnecting from seq ${cursor} (attempt ${attempt}): ${errorMessage(err)}`),
    })) {
      if (controller.signal.aborted || state.runId !== runId) return;
      onEvent(event);
    }
    if (controller.signal.aborted) return;
    setStreamStatus("ended", "stream ended");
    state.active.clear();
    await refreshRun();
    await compileDocument();
    await refreshArtifact();
    void loadOutline();
    void loadArtifacts();
  } catch (err) {
    if (controller.signal.aborted) return;
    setStreamStatus("error", `stream failed: ${errorMessage(err)}`);
  } finally {
    if (state.watching === controller) state.watching = undefined;
  }
}

function setStreamStatus(kind: string, text: string): void {
  ui.streamStatus.className = `stream-status ${kind}`;
  ui.streamStatus.textContent = text;
}

function onEvent(event: RunEvent): void {
  const seq = Number(event.seq);
  if (state.seen.has(seq)) return;
  const { kind, text } = describe(event);
  appendEntry({ seq, kind, text, time: formatTime(event.createTime) });
  persistSoon();
  const p = event.payload;
  if (p.case === "runStateChanged" && state.run) {
    state.run.state = p.value.toState;
    if (p.value.toState !== RunState.RUNNING) state.active.clear();
    renderRun();
    scheduleRunRefresh(0);
    scheduleOutline(0);
    if (TERMINAL.has(p.value.toState) || p.value.toState === RunState.PAUSED) scheduleCompile(0);
  } else if (p.case === "stepStarted") {
    state.active.set(p.value.nodeId, p.value.step === StepKind.SPLIT ? "planning" : "writing");
    renderOutline();
  } else if (p.case === "stepCompleted" || p.case === "nodeSkipped") {
    state.active.delete(p.value.nodeId);
    renderOutline();
    scheduleOutline(400);
  } else if (p.case === "blocksApplied" || p.case === "nodeSplit") {
    scheduleCompile(800);
    scheduleRunRefresh(300);
    scheduleOutline(400);
  } else if (p.case === "planReady" || p.case === "outlineEdited" || p.case === "nodesMarkedStale") {
    scheduleOutline(0);
  } else if (p.case === "llmCallCompleted" || p.case === "validationReported") {
    scheduleRunRefresh(300);
  }
}

function appendEntry(entry: LogEntry): void {
  if (state.seen.has(entry.seq)) return; // never show a seq twice
  state.seen.add(entry.seq);
  state.entries.push(entry);
  state.cursor = Math.max(state.cursor, entry.seq);
  const nearBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  ui.log.append(
    el(
      "li",
      { className: `ev ev-${entry.kind}`, data: { seq: String(entry.seq) } },
      el("span", { className: "ev-seq", text: String(entry.seq) }),
      el("span", { className: "ev-time", text: entry.time }),
      el("span", { className: "ev-text", text: entry.text }),
    ),
  );
  if (nearBottom) ui.log.scrollTop = ui.log.scrollHeight;
  ui.events.textContent = formatNumber(state.entries.length);
}

const timers = new Map<string, number>();
function throttle(key: string, delay: number, fn: () => Promise<void>): void {
  if (timers.has(key)) return;
  timers.set(
    key,
    window.setTimeout(() => {
      timers.delete(key);
      fn().catch(() => undefined);
    }, delay),
  );
}

function scheduleRunRefresh(delay: number): void {
  throttle("run", delay, refreshRun);
}

function scheduleCompile(delay: number): void {
  throttle("compile", delay, compileDocument);
}

function scheduleOutline(delay: number): void {
  throttle("outline", delay, loadOutline);
}

async function refreshRun(): Promise<void> {
  const runId = state.runId;
  if (!runId) return;
  const { run } = await runs.getRun({ runId });
  if (run && state.runId === runId) {
    // Keep the newest state the stream has shown if the stream is ahead of this read.
    state.run = run;
    renderRun();
  }
}

function renderRun(): void {
  const run = state.run;
  const s = run?.state ?? RunState.UNSPECIFIED;
  const active = run !== undefined && !TERMINAL.has(s);
  ui.start.disabled = !state.artifact || active;
  ui.pause.disabled = !(s === RunState.RUNNING || s === RunState.PENDING);
  ui.resume.disabled = !(s === RunState.PAUSING || s === RunState.PAUSED || s === RunState.FAILED || s === RunState.AWAITING_REVIEW);
  ui.reviewBanner.hidden = s !== RunState.AWAITING_REVIEW;
  renderOutlineIfModeChanged();
  ui.cancel.disabled = !active;
  ui.runState.textContent = run ? stateName(s) : "no run";
  ui.runState.className = `badge state-${run ? stateName(s) : "none"}`;
  ui.runId.textContent = run ? `run ${run.id}` : "";
  if (!run) {
    for (const dd of [ui.nodes, ui.words, ui.tokens, ui.calls, ui.elapsed, ui.events, ui.estimate]) dd.textContent = "–";
    ui.progress.style.width = "0%";
    return;
  }
  ui.nodes.textContent = `${run.nodesWritten} / ${run.nodesPlanned}`;
  const target = state.artifact?.targetWords ?? 0;
  ui.words.textContent = `${formatNumber(run.wordsWritten)}${target ? ` / ${formatNumber(target)}` : ""}`;
  const usage = run.usage;
  ui.tokens.textContent = usage ? formatNumber(usage.promptTokens + usage.completionTokens) : "0";
  ui.tokens.title = usage ? `${formatNumber(usage.promptTokens)} prompt + ${formatNumber(usage.completionTokens)} completion` : "";
  ui.calls.textContent = formatNumber(run.llmCalls);
  ui.events.textContent = formatNumber(state.entries.length);
  renderElapsed();
  // Progress by words against the artifact's target (nodes planned grow as the tree is split).
  const fraction = s === RunState.COMPLETED ? 1 : target > 0 ? Math.min(0.99, Number(run.wordsWritten) / target) : 0;
  ui.progress.style.width = `${Math.round(fraction * 100)}%`;
  ui.progress.className = `state-${stateName(s)}`;
  const estimate = run.estimate;
  ui.estimate.textContent = estimate ? `${formatNumber(estimate.llmCalls)} calls` : "–";
  ui.estimate.title = estimate ? `at most ${formatNumber(estimate.totalTokens)} tokens for those calls` : "";
  ui.failure.textContent =
    run.failureReasonCode === "BUDGET_EXHAUSTED"
      ? `${run.failureReason} Raise that cap under Limits, then Resume to continue.`
      : run.failureReason;
  ui.failure.dataset["code"] = run.failureReasonCode;
  ui.failure.hidden = !run.failureReason;
}

function renderElapsed(): void {
  const run = state.run;
  if (!run?.startTime) {
    ui.elapsed.textContent = run ? "not started" : "–";
    return;
  }
  const start = timestampDate(run.startTime).getTime();
  const end = run.endTime ? timestampDate(run.endTime).getTime() : TERMINAL.has(run.state) ? start : Date.now();
  ui.elapsed.textContent = formatDuration(end - start);
}
window.setInterval(renderElapsed, 1000);

async function control(action: "start" | "pause" | "resume" | "cancel"): Promise<void> {
  clearError();
  const artifact = state.artifact;
  const runId = state.runId;
  try {
    if (action === "start" && artifact) {
      const { run } = await runs.startRun({
        artifactId: artifact.id,
        requestId: requestId(),
        options: { ...limits(), reviewPlan: ui.optReview.checked },
      });
      if (run) beginRun(run);
      return;
    }
    if (!runId) return;
    const call =
      action === "pause"
        ? runs.pauseRun({ runId, requestId: requestId() })
        : action === "resume"
          ? runs.resumeRun({ runId, requestId: requestId(), options: limits() })
          : runs.cancelRun({ runId, requestId: requestId() });
    const { run } = await call;
    if (!run || state.runId !== run.id) return;
    if (action === "resume" && state.watching === undefined) {
      // A FAILED run's stream had ended: resuming it continues the same run, so follow it again from the cursor.
      state.run = run;
      renderRun();
      void follow(run.id);
    } else if (state.run && !TERMINAL.has(state.run.state)) {
      state.run = run;
      renderRun();
    }
  } catch (err) {
    showError(err);
  }
}

ui.start.addEventListener("click", () => void control("start"));
ui.pause.addEventListener("click", () => void control("pause"));
ui.resume.addEventListener("click", () => void control("resume"));
ui.cancel.addEventListener("click", () => void control("cancel"));
ui.approve.addEventListener("click", () => void control("resume"));

/** The caps set under Limits (a run's hard budgets); empty inputs are 0, "none" (and, on resume, "keep"). */
function limits(): { maxTotalTokens: bigint; maxLlmCalls: number; maxDuration?: { seconds: bigint } } {
  const whole = (input: HTMLInputElement): number => {
    const value = Math.trunc(Number(input.value || 0));
    return Number.isFinite(value) && value > 0 ? value : 0;
  };
  const minutes = whole(ui.optMaxMinutes);
  return {
    maxTotalTokens: BigInt(whole(ui.optMaxTokens)),
    maxLlmCalls: whole(ui.optMaxCalls),
    ...(minutes > 0 ? { maxDuration: { seconds: BigInt(minutes * 60) } } : {}),
  };
}

/** Shows and follows a run this page just started. */
function beginRun(run: Run): void {
  state.active.clear();
  resetRunView(run);
  persistNow();
  void follow(run.id);
  void loadArtifacts();
  renderOutline();
}

// ---------------------------------------------------------------------------------------------
// Outline

/** Runs one outline edit; on success the outline, the artifact and the document are read again. */
async function outlineEdit(call: () => Promise<unknown>): Promise<boolean> {
  clearError();
  try {
    await call();
  } catch (err) {
    showError(err);
    return false;
  }
  await Promise.all([loadOutline(), refreshArtifact(), loadArtifacts()]);
  scheduleCompile(0);
  return true;
}

function maskOf(fields: SectionFields): string[] {
  return [
    ...(fields.title !== undefined ? ["title"] : []),
    ...(fields.intent !== undefined ? ["intent"] : []),
    ...(fields.targetWords !== undefined ? ["target_words"] : []),
  ];
}

const outlineActions: OutlineActions = {
  update: (node, fields) =>
    outlineEdit(() =>
      artifacts.updateNode({
        node: { id: node.id, title: fields.title ?? "", intent: fields.intent ?? "", targetWords: fields.targetWords ?? 0 },
        updateMask: { paths: maskOf(fields) },
        requestId: requestId(),
      }),
    ),
  create: (parentId, position, fields) =>
    outlineEdit(() =>
      artifacts.createNode({
        parentId,
        ...(position !== undefined ? { position } : {}),
        node: { title: fields.title, intent: fields.intent, targetWords: fields.targetWords },
        requestId: requestId(),
      }),
    ),
  remove: (nodeId) => outlineEdit(() => artifacts.deleteNode({ nodeId, requestId: requestId() })),
  move: (nodeId, parentId, position) =>
    outlineEdit(() => artifacts.moveNode({ nodeId, parentId, position, requestId: requestId() })),
  regenerate: async (nodeId, instruction) => {
    const artifact = state.artifact;
    if (!artifact) return false;
    clearError();
    try {
      const { run } = await runs.startRun({
        artifactId: artifact.id,
        scopeNodeId: nodeId,
        instruction,
        options: limits(),
        requestId: requestId(),
      });
      if (run) beginRun(run);
      return true;
    } catch (err) {
      showError(err);
      return false;
    }
  },
};

const outline = new OutlinePanel(ui.outline, outlineActions);

/** Outline edits while no run is active or the run awaits review; regeneration only with no active run. */
function outlineMode(): { editable: boolean; canRegenerate: boolean } {
  const s = state.run?.state;
  const idle = s === undefined || TERMINAL.has(s);
  return { editable: idle || s === RunState.AWAITING_REVIEW, canRegenerate: idle };
}

let renderedMode = "";
function renderOutline(): void {
  const mode = outlineMode();
  renderedMode = JSON.stringify(mode);
  const rows = outlineRows(state.outlineNodes, state.outlineBlocks, state.active);
  outline.show(rows, mode);
  ui.rewriteStale.hidden = !(mode.canRegenerate && rows.some((r) => r.stale));
}

function renderOutlineIfModeChanged(): void {
  if (JSON.stringify(outlineMode()) !== renderedMode) renderOutline();
}

async function loadOutline(): Promise<void> {
  const artifact = state.artifact;
  if (!artifact) return;
  try {
    const full = await artifacts.getArtifact({ artifactId: artifact.id, view: ArtifactView.FULL });
    if (state.artifact?.id !== artifact.id) return;
    state.outlineNodes = full.nodes;
    state.outlineBlocks = full.blocks;
    for (const node of full.nodes) state.nodeTitles.set(node.id, node.title);
    renderOutline();
  } catch (err) {
    showError(err);
  }
}

ui.rewriteStale.addEventListener("click", () => {
  const artifact = state.artifact;
  if (!artifact) return;
  clearError();
  runs
    .startRun({ artifactId: artifact.id, staleOnly: true, options: limits(), requestId: requestId() })
    .then(({ run }) => {
      if (run) beginRun(run);
    })
    .catch(showError);
});

// ---------------------------------------------------------------------------------------------
// Document and provenance

const DOC_STYLE = `
  [data-block-id] { cursor: pointer; border-radius: 4px; transition: background-color .12s; }
  [data-block-id]:hover { background: #eef2ff; box-shadow: 0 0 0 3px #eef2ff; }
  [data-block-id].lace-selected { background: #e0e7ff; box-shadow: 0 0 0 3px #e0e7ff; }
  body { font-size: 15px; }
`;

async function compileDocument(): Promise<void> {
  const artifact = state.artifact;
  if (!artifact) return;
  const viewVersion = state.viewVersion;
  const compiled = await artifacts.compileArtifact({ artifactId: artifact.id, format: CompileFormat.HTML, artifactVersion: viewVersion });
  if (state.artifact?.id !== artifact.id || state.viewVersion !== viewVersion || compiled.artifactVersion === state.docVersion) return;
  state.docVersion = compiled.artifactVersion;
  ui.docVersion.textContent = `IR version ${compiled.artifactVersion}`;
  ui.docPast.hidden = viewVersion === 0n;
  ui.versionLatest.hidden = viewVersion === 0n;
  ui.docPast.textContent = `Showing the document as it was at IR version ${viewVersion} (read-only). “Latest” shows it as it is now; “Fork” makes a new artifact from it.`;
  const hasBlocks = compiled.content.includes("data-block-id=");
  ui.docEmpty.hidden = hasBlocks;
  ui.doc.hidden = !hasBlocks;
  if (!hasBlocks) return;
  const scroll = ui.doc.contentWindow?.scrollY ?? 0;
  ui.doc.addEventListener(
    "load",
    () => {
      const doc = ui.doc.contentDocument;
      if (!doc) return;
      doc.head.append(Object.assign(doc.createElement("style"), { textContent: DOC_STYLE }));
      doc.addEventListener("click", (event) => {
        const block = (event.target as Element | null)?.closest?.<HTMLElement>("[data-block-id]");
        if (!block) return;
        event.preventDefault();
        void showProvenance(block.dataset["blockId"] ?? "");
      });
      if (state.selectedBlock) highlightBlock(state.selectedBlock);
      ui.doc.contentWindow?.scrollTo(0, scroll);
    },
    { once: true },
  );
  ui.doc.srcdoc = compiled.content;
}

// The formats of the download control, by the value of its options.
const DOWNLOAD_FORMATS: Record<string, CompileFormat> = {
  markdown: CompileFormat.MARKDOWN,
  html: CompileFormat.HTML,
  json: CompileFormat.JSON,
  docx: CompileFormat.DOCX,
  odt: CompileFormat.ODT,
  epub: CompileFormat.EPUB,
  pdf: CompileFormat.PDF,
};

/** Compiles the selected artifact in the chosen format and saves it under the server's file name. */
async function downloadDocument(): Promise<void> {
  const artifact = state.artifact;
  const format = DOWNLOAD_FORMATS[ui.downloadFormat.value];
  if (!artifact || format === undefined) return;
  ui.download.disabled = true;
  try {
    const compiled = await artifacts.compileArtifact({ artifactId: artifact.id, format });
    // Binary formats come in binaryContent, text ones in content.
    const data = compiled.binaryContent.length > 0 ? new Uint8Array(compiled.binaryContent) : compiled.content;
    const url = URL.createObjectURL(new Blob([data], { type: compiled.mediaType }));
    const link = Object.assign(document.createElement("a"), { href: url, download: compiled.fileName });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    showError(err);
  } finally {
    ui.download.disabled = false;
  }
}

ui.download.addEventListener("click", () => void downloadDocument());

/** Shows the document at an earlier IR version (0: the current one, following live changes). */
async function showVersion(version: bigint): Promise<void> {
  clearError();
  state.viewVersion = version;
  state.docVersion = -1n;
  try {
    await compileDocument();
  } catch (err) {
    state.viewVersion = 0n;
    showError(err);
    await compileDocument().catch(() => undefined);
  }
  if (state.selectedBlock) void showProvenance(state.selectedBlock);
}

ui.versionShow.addEventListener("click", () => {
  const wanted = Math.trunc(Number(ui.versionInput.value));
  const current = state.artifact?.version ?? 0n;
  void showVersion(Number.isFinite(wanted) && wanted > 0 && BigInt(wanted) < current ? BigInt(wanted) : 0n);
});
ui.versionLatest.addEventListener("click", () => {
  ui.versionInput.value = "";
  void showVersion(0n);
});

ui.fork.addEventListener("click", () => {
  const artifact = state.artifact;
  if (!artifact) return;
  clearError();
  ui.fork.disabled = true;
  artifacts
    .forkArtifact({ artifactId: artifact.id, artifactVersion: state.viewVersion, requestId: requestId() })
    .then(async ({ artifact: copy }) => {
      await loadArtifacts();
      if (copy) await selectArtifact(copy.id);
    })
    .catch(showError)
    .finally(() => {
      ui.fork.disabled = false;
    });
});

function highlightBlock(blockId: string): void {
  const doc = ui.doc.contentDocument;
  if (!doc) return;
  for (const node of doc.querySelectorAll(".lace-selected")) node.classList.remove("lace-selected");
  doc.querySelector(`[data-block-id="${CSS.escape(blockId)}"]`)?.classList.add("lace-selected");
}

function blockPreview(change: ChangeEvent): string {
  const block = change.after ?? change.before;
  if (!block) return "";
  const text = block.text || block.items.join(" · ") || block.table?.header.join(" | ") || "";
  return text.length > 160 ? `${text.slice(0, 157)}…` : text;
}

// The provider that wrote a change is the run's (a run has one); read once per run shown.
const providerOfRun = new Map<string, string>();

async function runProviders(runIds: string[]): Promise<Map<string, string>> {
  const missing = [...new Set(runIds.filter((id) => id && !providerOfRun.has(id)))];
  await Promise.all(missing.map(async (runId) => {
    const { run } = await runs.getRun({ runId });
    providerOfRun.set(runId, run?.provider ?? "");
  }));
  return providerOfRun;
}

/** The passages a change's block cites, each with its source and text, as the provenance panel lists them. */
function citedBy(change: ChangeEvent, passages: Map<string, Passage>): HTMLElement[] {
  const ids = change.after?.citedPassageIds ?? [];
  if (!ids.length) return [];
  return [
    el(
      "div",
      { className: "cites" },
      el("p", { className: "small muted", text: `Cites ${ids.length} passage${ids.length === 1 ? "" : "s"}:` }),
      ...ids.map((id) => {
        const passage = passages.get(id);
        const text = passage ? (passage.text.length > 300 ? `${passage.text.slice(0, 297)}…` : passage.text) : "(no longer available)";
        return el(
          "blockquote",
          { className: "cited-passage", data: { passageId: id } },
          el("span", { className: "small s-title", text: passage?.sourceTitle ?? "" }),
          el("span", { className: "small", text: ` ${text}` }),
        );
      }),
    ),
  ];
}

/** The text a person edits for a block: lists one item per line, everything else as its text. */
function editableText(block: Block): string {
  return block.kind === BlockKind.BULLET_LIST || block.kind === BlockKind.ORDERED_LIST ? block.items.join("\n") : block.text;
}

/** The Edit control of the provenance panel: opens the block's text in place and saves it with EditBlock. */
function blockEditor(block: Block): HTMLElement {
  const box = el("div", { className: "block-editor" });
  if (block.kind === BlockKind.TABLE) {
    box.append(el("p", { className: "muted small", text: "Tables are edited through the API (EditBlock)." }));
    return box;
  }
  const open = button("Edit block", { className: "btn-edit-block" }, () => {
    const text = el("textarea", { className: "block-text" });
    text.rows = Math.min(14, Math.max(4, Math.ceil(editableText(block).length / 60)));
    text.value = editableText(block);
    const save = button("Save edit", { className: "primary btn-save-block" });
    const cancel = button("Cancel", {}, () => box.replaceChildren(open));
    save.addEventListener("click", () => {
      save.disabled = true;
      const value = text.value.trim();
      const list = block.kind === BlockKind.BULLET_LIST || block.kind === BlockKind.ORDERED_LIST;
      artifacts
        .editBlock({
          blockId: block.id,
          block: {
            kind: block.kind,
            headingLevel: block.headingLevel,
            language: block.language,
            citedPassageIds: block.citedPassageIds,
            ...(list ? { items: value.split("\n").map((line) => line.trim()).filter(Boolean) } : { text: value }),
          },
          expectedVersion: block.version,
          requestId: requestId(),
        })
        .then(() => afterBlockChange(block.id))
        .catch((err: unknown) => {
          showError(err);
          save.disabled = false;
        });
    });
    box.replaceChildren(text, el("div", { className: "o-form-buttons" }, save, cancel));
    text.focus();
  });
  box.append(open, el("span", { className: "muted small", text: " A human edit pins the block: regenerations keep it." }));
  return box;
}

function revertButton(blockId: string, version: bigint, currentVersion: bigint): HTMLButtonElement {
  const b = button(`Revert to v${version}`, { className: "link btn-revert", data: { version: String(version) } });
  b.addEventListener("click", () => {
    b.disabled = true;
    artifacts
      .revertBlock({ blockId, blockVersion: version, expectedVersion: currentVersion, requestId: requestId() })
      .then(() => afterBlockChange(blockId))
      .catch((err: unknown) => {
        showError(err);
        b.disabled = false;
      });
  });
  return b;
}

/** After an edit or a revert: the document, the block's history, the outline and the artifact again. */
async function afterBlockChange(blockId: string): Promise<void> {
  clearError();
  await Promise.all([compileDocument(), showProvenance(blockId), loadOutline(), refreshArtifact()]);
}

async function showProvenance(blockId: string): Promise<void> {
  if (!blockId) return;
  state.selectedBlock = blockId;
  highlightBlock(blockId);
  ui.provenance.replaceChildren(el("p", { className: "muted", text: "Loading…" }));
  try {
    // Every page: the newest change is the block as it is now, which Edit and Revert start from.
    const changeEvents: ChangeEvent[] = [];
    const citedPassages: Passage[] = [];
    let pageToken = "";
    do {
      const page = await artifacts.listBlockChanges({ blockId, pageSize: 500, pageToken });
      changeEvents.push(...page.changeEvents);
      citedPassages.push(...page.citedPassages);
      pageToken = page.nextPageToken;
    } while (pageToken);
    const passages = new Map(citedPassages.map((p) => [p.id, p]));
    const providers = await runProviders(changeEvents.map((change) => change.runId));
    // The block as it is now: the newest change's `after` (none once deleted).
    const current = changeEvents.at(-1)?.after;
    const live = state.viewVersion === 0n;
    const rows = changeEvents.map((change) => {
      const origin = (ChangeOrigin[change.origin] ?? "UNSPECIFIED").toLowerCase();
      const fields: [string, string][] = [
        ["Origin", origin],
        ["Run", change.runId || "–"],
        ["Provider", (change.runId && providers.get(change.runId)) || "–"],
        ["Model", change.model || "–"],
        ["LLM call", change.llmCallId || "–"],
        ["Block version", change.after ? `v${change.after.version}` : "deleted"],
        ["Artifact version", `v${change.artifactVersion}`],
        ["When", change.createTime ? timestampDate(change.createTime).toLocaleString("en-GB") : "–"],
      ];
      return el(
        "div",
        { className: "change", data: { origin, changeId: String(change.id) } },
        el(
          "div",
          { className: "change-head" },
          el("span", { className: `badge small op-${(ChangeOperation[change.operation] ?? "").toLowerCase()}`, text: (ChangeOperation[change.operation] ?? "?").toLowerCase() }),
          el("span", { className: "muted small", text: `change #${change.id}` }),
        ),
        el(
          "dl",
          { className: "kv" },
          ...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { className: "mono", text: v, data: { field: k } })]),
        ),
        el("p", { className: "preview", text: blockPreview(change) }),
        ...citedBy(change, passages),
        ...(live && current && change.after && change.after.version !== current.version
          ? [revertButton(blockId, change.after.version, current.version)]
          : []),
      );
    });
    ui.provenance.replaceChildren(
      el("p", { className: "small muted" }, "Block ", el("span", { className: "mono", text: blockId })),
      ...(live && current ? [blockEditor(current)] : []),
      el("h3", { className: "timeline-head small muted", text: "History, oldest first" }),
      ...(rows.length ? rows : [el("p", { className: "muted", text: "No changes recorded." })]),
    );
  } catch (err) {
    ui.provenance.replaceChildren(el("p", { className: "error", text: errorMessage(err) }));
  }
}

// ---------------------------------------------------------------------------------------------
// Start-up

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = ui.apiKey.value.trim();
  if (apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
  else sessionStorage.removeItem(KEY_STORAGE);
  // Another key may be another tenant: nothing shown so far is necessarily its.
  closeArtifact();
  clearError();
  void loadArtifacts();
});

async function main(): Promise<void> {
  ui.conn.textContent = `grpc-web · ${window.location.host}`;
  ui.apiKey.value = apiKey;
  renderRun();
  await loadArtifacts();
  const persisted = loadPersisted();
  const selected = persisted?.artifactId ?? sessionStorage.getItem(SELECTED_KEY);
  if (selected) await selectArtifact(selected, persisted);
}

void main();
