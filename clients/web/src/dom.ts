/** The two DOM helpers every panel uses: look an element up by id, build one with children. */

export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`missing #${id}`);
  return element as T;
}

export interface ElementProps {
  className?: string;
  text?: string;
  title?: string;
  data?: Record<string, string>;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: ElementProps = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  if (props.title) node.title = props.title;
  for (const [key, value] of Object.entries(props.data ?? {})) node.dataset[key] = value;
  node.append(...children);
  return node;
}

/**
 * Makes `b` act on its second click only: the first shows `confirmText` for four seconds, then the
 * button reads as before. For what cannot be taken back in one click (deleting).
 */
export function onSecondClick(b: HTMLButtonElement, confirmText: string, act: () => void): void {
  const text = b.textContent ?? "";
  let timer: number | undefined;
  const disarm = (): void => {
    window.clearTimeout(timer);
    b.dataset["armed"] = "false";
    b.textContent = text;
  };
  b.addEventListener("click", () => {
    if (b.dataset["armed"] !== "true") {
      b.dataset["armed"] = "true";
      b.textContent = confirmText;
      timer = window.setTimeout(disarm, 4000);
      return;
    }
    disarm();
    act();
  });
}

/** A `type="button"` button (so that it never submits the form it sits in). */
export function button(text: string, props: ElementProps = {}, onClick?: () => void): HTMLButtonElement {
  const b = el("button", { ...props, text });
  b.type = "button";
  if (onClick) b.addEventListener("click", onClick);
  return b;
}
