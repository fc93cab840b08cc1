/**
 * The outline panel: the artifact's section tree with each section's state, budget and words so far,
 * and, where the server allows outline edits (no active run, or a run awaiting review), the edits
 * themselves: rename, intent and budget, add, delete, reorder by dragging (or the arrow buttons).
 *
 * The panel only renders and collects input; every change goes through `OutlineActions` (the RPCs),
 * and the panel is redrawn from what the server then returns.
 */
import { NodeState } from "./gen/lace/v1/artifact_pb.js";
import type { Block, Node } from "./gen/lace/v1/artifact_pb.js";
import { button, el, onSecondClick } from "./dom.js";

/** What a step of the watched run is doing to a section right now. */
export type ActiveStep = "planning" | "writing";

/** Where a section is: its stored state, or the step of the watched run working on it. */
export type RowState = "planned" | "split" | "written" | "failed" | ActiveStep;

export interface OutlineRow {
  readonly node: Node;
  readonly childCount: number;
  /** Words written in the section's own blocks and all its descendants'. */
  readonly words: number;
  readonly state: RowState;
  readonly stale: boolean;
  readonly pinned: boolean;
}

/** The fields a person sets on a section; unset ones are left as they are. */
export interface SectionFields {
  readonly title?: string;
  readonly intent?: string;
  readonly targetWords?: number;
}

/** The RPCs behind the panel; each resolves true when the change was made (errors are shown by the caller). */
export interface OutlineActions {
  update(node: Node, fields: SectionFields): Promise<boolean>;
  create(parentId: string, position: number | undefined, fields: Required<SectionFields>): Promise<boolean>;
  remove(nodeId: string): Promise<boolean>;
  move(nodeId: string, parentId: string, position: number): Promise<boolean>;
  regenerate(nodeId: string, instruction: string): Promise<boolean>;
}

/** What the panel offers: outline edits (no active run, or awaiting review), regeneration (no active run). */
export interface OutlineMode {
  readonly editable: boolean;
  readonly canRegenerate: boolean;
}

const STATE_OF: Partial<Record<NodeState, RowState>> = {
  [NodeState.PLANNED]: "planned",
  [NodeState.SPLIT]: "split",
  [NodeState.WRITTEN]: "written",
  [NodeState.FAILED]: "failed",
};

/** The outline's rows in GetArtifact FULL's order (parents before children, siblings in order). */
export function outlineRows(
  nodes: readonly Node[],
  blocks: readonly Block[],
  active: ReadonlyMap<string, ActiveStep>,
): OutlineRow[] {
  const pinned = new Set(blocks.filter((b) => b.pinned).map((b) => b.nodeId));
  const words = new Map(nodes.map((n) => [n.id, n.wordCount]));
  const children = new Map<string, number>();
  // Children come after their parent, so a reverse pass has every subtree's total before its parent.
  for (const node of [...nodes].reverse()) {
    if (!node.parentId) continue;
    words.set(node.parentId, (words.get(node.parentId) ?? 0) + (words.get(node.id) ?? 0));
    children.set(node.parentId, (children.get(node.parentId) ?? 0) + 1);
  }
  return nodes.map((node) => ({
    node,
    childCount: children.get(node.id) ?? 0,
    words: words.get(node.id) ?? 0,
    state: active.get(node.id) ?? STATE_OF[node.state] ?? "planned",
    stale: node.staleReason !== "",
    pinned: pinned.has(node.id),
  }));
}

/** The position `target` has among its siblings once `moving` is taken out (MoveNode counts without the node). */
export function positionBefore(rows: readonly OutlineRow[], moving: string, target: Node): number {
  const siblings = rows
    .map((r) => r.node)
    .filter((n) => n.parentId === target.parentId && n.id !== moving)
    .sort((a, b) => a.ordinal - b.ordinal);
  return Math.max(0, siblings.findIndex((n) => n.id === target.id));
}

function descendantsOf(rows: readonly OutlineRow[], nodeId: string): Set<string> {
  const found = new Set([nodeId]);
  for (const { node } of rows) if (found.has(node.parentId)) found.add(node.id); // parents come first
  return found;
}

function formatWords(value: number): string {
  return value.toLocaleString("en-US");
}

export class OutlinePanel {
  private rows: OutlineRow[] = [];
  private mode: OutlineMode = { editable: false, canRegenerate: false };
  /** The row whose form is open: redraws wait until it closes, so typing is never thrown away. */
  private openFor: string | undefined;
  private redrawPending = false;
  /** The row being dragged: redraws wait for it too, as replacing it mid-drag cancels the drop. */
  private dragging: string | undefined;

  constructor(
    private readonly list: HTMLOListElement,
    private readonly actions: OutlineActions,
  ) {}

  get current(): readonly OutlineRow[] {
    return this.rows;
  }

  show(rows: OutlineRow[], mode: OutlineMode): void {
    this.rows = rows;
    this.mode = mode;
    if (this.openFor !== undefined || this.dragging !== undefined) {
      this.redrawPending = true;
      return;
    }
    this.render();
  }

  clear(): void {
    this.openFor = undefined;
    this.show([], { editable: false, canRegenerate: false });
  }

  private closeForm(): void {
    this.openFor = undefined;
    this.redrawPending = false;
    this.render();
  }

  private render(): void {
    if (!this.rows.length) {
      this.list.replaceChildren(el("li", { className: "muted small", text: "No sections yet." }));
      return;
    }
    this.list.replaceChildren(...this.rows.map((row) => this.renderRow(row)));
  }

  private renderRow(row: OutlineRow): HTMLLIElement {
    const { node } = row;
    const isRoot = !node.parentId;
    const li = el("li", {
      className: `o-row${isRoot ? " o-root" : ""}`,
      data: { nodeId: node.id, state: row.state, depth: String(node.depth) },
    });
    li.style.setProperty("--depth", String(node.depth));
    if (row.stale) li.dataset["stale"] = "true";
    if (row.pinned) li.dataset["pinned"] = "true";

    const badges = [el("span", { className: `badge small o-state state-${row.state}`, text: row.state })];
    if (row.stale) badges.push(el("span", { className: "badge small o-stale", text: "stale", title: node.staleReason }));
    if (row.pinned) badges.push(el("span", { className: "badge small o-pinned", text: "pinned", title: "Holds a human edit: regenerations keep it" }));
    const head = el(
      "div",
      { className: "o-head" },
      el("span", { className: "o-title", text: node.title }),
      ...badges,
      el("span", { className: "o-words", text: `${formatWords(row.words)} / ${formatWords(node.targetWords)} words` }),
    );
    li.append(head);
    if (node.intent) li.append(el("p", { className: "o-intent", text: node.intent, title: node.intent }));
    if (row.stale) li.append(el("p", { className: "o-reason small", text: node.staleReason }));

    const actions = this.rowActions(row);
    if (actions.length) li.append(el("div", { className: "o-actions" }, ...actions));
    if (this.mode.editable && !isRoot) this.makeDraggable(li, node);
    if (this.mode.editable) this.makeDropTarget(li, node);
    return li;
  }

  private rowActions(row: OutlineRow): HTMLElement[] {
    const { node } = row;
    const isRoot = !node.parentId;
    const out: HTMLElement[] = [];
    if (this.mode.editable) {
      if (!isRoot) out.push(button("Edit", { className: "link o-edit" }, () => this.openEdit(row)));
      if (isRoot || row.childCount > 0) {
        out.push(button("Add section", { className: "link o-add-child" }, () => this.openCreate(row, node.id, undefined)));
      }
      if (!isRoot) {
        out.push(button("Add after", { className: "link o-add-after" }, () => this.openCreate(row, node.parentId, node.ordinal + 1)));
        out.push(button("↑", { className: "link o-up", title: "Move up" }, () => void this.moveBy(node, -1)));
        out.push(button("↓", { className: "link o-down", title: "Move down" }, () => void this.moveBy(node, +1)));
        out.push(this.deleteButton(node));
      }
    }
    if (this.mode.canRegenerate && (row.state === "written" || row.state === "split") && row.words > 0) {
      out.push(button("Regenerate…", { className: "link o-regenerate" }, () => this.openRegenerate(row)));
    }
    return out;
  }

  private deleteButton(node: Node): HTMLButtonElement {
    // Two clicks: deleting a written section throws its text away (versions keep it, but still).
    const b = button("Delete", { className: "link danger o-delete" });
    onSecondClick(b, "Confirm delete", () => {
      b.disabled = true;
      void this.actions.remove(node.id).finally(() => {
        b.disabled = false;
      });
    });
    return b;
  }

  private async moveBy(node: Node, delta: number): Promise<void> {
    const siblings = this.rows.filter((r) => r.node.parentId === node.parentId).length;
    const position = node.ordinal + delta;
    if (position < 0 || position >= siblings) return;
    await this.actions.move(node.id, node.parentId, position);
  }

  private makeDraggable(li: HTMLLIElement, node: Node): void {
    li.draggable = true;
    li.addEventListener("dragstart", (event) => {
      this.dragging = node.id;
      event.dataTransfer?.setData("text/plain", node.id);
      if (event.dataTransfer) event.dataTransfer.effectAllowed = "move";
      li.classList.add("o-dragging");
    });
    li.addEventListener("dragend", () => {
      this.dragging = undefined;
      li.classList.remove("o-dragging");
      for (const row of this.list.querySelectorAll(".o-drop")) row.classList.remove("o-drop");
      if (this.redrawPending && this.openFor === undefined) {
        this.redrawPending = false;
        this.render();
      }
    });
  }

  /** Dropping a section on a row puts it just before that row (on the root: last of the top level). */
  private makeDropTarget(li: HTMLLIElement, target: Node): void {
    const accepts = (): boolean => {
      const moving = this.dragging;
      return moving !== undefined && moving !== target.id && !descendantsOf(this.rows, moving).has(target.id);
    };
    li.addEventListener("dragover", (event) => {
      if (!accepts()) return;
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "move";
      li.classList.add("o-drop");
    });
    li.addEventListener("dragleave", () => li.classList.remove("o-drop"));
    li.addEventListener("drop", (event) => {
      li.classList.remove("o-drop");
      const moving = this.dragging;
      if (!accepts() || moving === undefined) return;
      event.preventDefault();
      if (!target.parentId) {
        const topLevel = this.rows.filter((r) => r.node.parentId === target.id && r.node.id !== moving).length;
        void this.actions.move(moving, target.id, topLevel);
      } else {
        void this.actions.move(moving, target.parentId, positionBefore(this.rows, moving, target));
      }
    });
  }

  /** Replaces the row's actions with `form` until it is submitted or cancelled. */
  private openForm(row: OutlineRow, key: string, form: HTMLFormElement): void {
    this.openFor = key;
    if (this.redrawPending) this.render();
    this.redrawPending = false;
    const li = this.list.querySelector<HTMLLIElement>(`li[data-node-id="${CSS.escape(row.node.id)}"]`);
    if (!li) return;
    li.querySelector(".o-actions")?.replaceWith(form);
    form.querySelector<HTMLInputElement>("input, textarea")?.focus();
  }

  private sectionForm(
    className: string,
    fields: { title: string; intent: string; targetWords?: number },
    submitText: string,
    onSubmit: (values: Required<SectionFields>) => Promise<boolean>,
  ): HTMLFormElement {
    const title = el("input", { className: "o-in-title" });
    title.name = "title";
    title.required = true;
    title.maxLength = 200;
    title.value = fields.title;
    const intent = el("textarea", { className: "o-in-intent" });
    intent.name = "intent";
    intent.rows = 2;
    intent.maxLength = 1000;
    intent.value = fields.intent;
    const controls: HTMLElement[] = [el("label", { text: "Title" }, title), el("label", { text: "Intent" }, intent)];
    let words: HTMLInputElement | undefined;
    if (fields.targetWords !== undefined) {
      words = el("input", { className: "o-in-words" });
      words.name = "targetWords";
      words.type = "number";
      words.min = "50";
      words.max = "200000";
      words.required = true;
      words.value = String(fields.targetWords);
      controls.push(el("label", { text: "Target words" }, words));
    }
    const form = el("form", { className: `o-form ${className}` }, ...controls);
    const save = el("button", { className: "primary o-save", text: submitText });
    save.type = "submit";
    form.append(el("div", { className: "o-form-buttons" }, save, button("Cancel", { className: "o-cancel" }, () => this.closeForm())));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      save.disabled = true;
      void onSubmit({ title: title.value.trim(), intent: intent.value.trim(), targetWords: Number(words?.value ?? 0) })
        .then((done) => {
          if (done) this.closeForm();
        })
        .finally(() => {
          save.disabled = false;
        });
    });
    return form;
  }

  private openEdit(row: OutlineRow): void {
    const { node } = row;
    // A split section's budget is the sum of its children's: only a section without children takes one.
    const leaf = row.childCount === 0;
    const form = this.sectionForm(
      "o-edit-form",
      { title: node.title, intent: node.intent, ...(leaf ? { targetWords: node.targetWords } : {}) },
      "Save",
      (values) => {
        const changed: { title?: string; intent?: string; targetWords?: number } = {};
        if (values.title !== node.title) changed.title = values.title;
        if (values.intent !== node.intent) changed.intent = values.intent;
        if (leaf && values.targetWords !== node.targetWords) changed.targetWords = values.targetWords;
        return Object.keys(changed).length ? this.actions.update(node, changed) : Promise.resolve(true);
      },
    );
    this.openForm(row, `edit:${node.id}`, form);
  }

  private openCreate(row: OutlineRow, parentId: string, position: number | undefined): void {
    const form = this.sectionForm("o-create-form", { title: "", intent: "", targetWords: 500 }, "Add", (values) =>
      this.actions.create(parentId, position, values),
    );
    this.openForm(row, `create:${row.node.id}`, form);
  }

  private openRegenerate(row: OutlineRow): void {
    const instruction = el("input", { className: "o-in-instruction" });
    instruction.name = "instruction";
    instruction.maxLength = 2000;
    instruction.placeholder = "e.g. shorter, with a worked example";
    const go = el("button", { className: "primary o-go", text: "Regenerate" });
    go.type = "submit";
    const form = el(
      "form",
      { className: "o-form o-regenerate-form" },
      el("label", { text: "Instruction (optional)" }, instruction),
      el("div", { className: "o-form-buttons" }, go, button("Cancel", { className: "o-cancel" }, () => this.closeForm())),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      go.disabled = true;
      void this.actions
        .regenerate(row.node.id, instruction.value.trim())
        .then((done) => {
          if (done) this.closeForm();
        })
        .finally(() => {
          go.disabled = false;
        });
    });
    this.openForm(row, `regenerate:${row.node.id}`, form);
  }
}
