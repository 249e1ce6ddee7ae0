// A panel shown over the whole screen: the browser's fullscreen where it is granted, and where it is
// refused (an iframe without allowfullscreen, an old phone) the panel covers the window instead.
// data-fullscreen says which: "native", "fallback" or "" (in its place).
export class FullscreenPanel {
  constructor(
    private readonly element: HTMLElement,
    private readonly onChange: () => void,
  ) {
    element.dataset.fullscreen = "";
    // Fired at the element itself as it enters and leaves: left by the browser's own way out (Esc,
    // the system's gesture) too.
    element.addEventListener("fullscreenchange", () => {
      if (element.dataset.fullscreen === "native" && document.fullscreenElement !== element) this.set("");
    });
  }

  get active(): boolean {
    return this.element.dataset.fullscreen !== "";
  }

  async enter(): Promise<void> {
    if (this.active) return;
    try {
      await this.element.requestFullscreen();
      this.set("native");
    } catch {
      this.set("fallback");
    }
    this.element.focus();
  }

  async leave(): Promise<void> {
    if (document.fullscreenElement === this.element) await document.exitFullscreen().catch(() => undefined);
    this.set("");
  }

  toggle(): Promise<void> {
    return this.active ? this.leave() : this.enter();
  }

  private set(mode: "" | "native" | "fallback"): void {
    this.element.dataset.fullscreen = mode;
    this.onChange();
  }
}
