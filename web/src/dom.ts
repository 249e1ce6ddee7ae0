// The one helper the page needs instead of a framework: make an element with attributes and children.

type Attributes = Record<string, string | number | boolean | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children);
  return element;
}

// A progress bar whose fill animates between values; data-state drives its colour and stripes.
export class ProgressBar {
  readonly element: HTMLDivElement;
  private readonly fill: HTMLDivElement;

  constructor(testId: string, label: string) {
    this.fill = h("div", { class: "fill" });
    this.element = h(
      "div",
      {
        class: "bar",
        role: "progressbar",
        "aria-label": label,
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": 0,
        "data-testid": testId,
        "data-state": "waiting",
      },
      this.fill,
    );
  }

  set(percent: number, state: string): void {
    const clamped = Math.max(0, Math.min(100, percent));
    this.fill.style.width = `${clamped}%`;
    this.element.setAttribute("aria-valuenow", clamped.toFixed(0));
    this.element.dataset.state = state;
  }
}
