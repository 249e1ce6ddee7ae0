// A labelled range input with its value written beside it, for the player's mixer, tempo and key.
import { h } from "./dom";

export interface Range {
  min: number;
  max: number;
  step: number;
}

export class Slider {
  readonly element: HTMLLabelElement;
  readonly input: HTMLInputElement;
  private readonly output: HTMLOutputElement;

  constructor(
    label: string,
    testId: string,
    private readonly range: Range,
    value: number,
    private readonly format: (value: number) => string,
  ) {
    this.input = h("input", { type: "range", ...range, value, "data-testid": testId });
    this.output = h("output", { "data-testid": `${testId}-value` }, format(value));
    this.element = h(
      "label",
      { class: "slider" },
      h("span", { class: "slider-name" }, label),
      this.input,
      this.output,
    );
  }

  get value(): number {
    return Number(this.input.value);
  }

  // Clamped to the range; written to the input and beside it. Returns what was set.
  set(value: number): number {
    const clamped = Math.max(this.range.min, Math.min(this.range.max, value));
    this.input.value = String(clamped);
    this.output.textContent = this.format(clamped);
    return clamped;
  }

  onInput(handler: (value: number) => void): void {
    this.input.addEventListener("input", () => handler(this.value));
  }
}
