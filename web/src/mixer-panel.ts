// What the singer hears: the karaoke mix (every backing stem at its volume, the guide vocal under
// it), the vocals alone, or the original song; a row per stem with a volume and a mute. Each row's
// data-gain is read back from its GainNode.
import { Slider } from "./controls";
import { h } from "./dom";
import type { Mixer, Track } from "./mixer";

export type Source = "instrumental" | "vocals" | "original";

const sourceLabels: Record<Source, string> = {
  instrumental: "Karaoke",
  vocals: "Vocals only",
  original: "Original song",
};
// The guide vocal sits under the backing by default; 0 is pure karaoke.
const guidePercent = 20;
const percent = { min: 0, max: 100, step: 1 };

interface StemRow {
  track: Track;
  element: HTMLDivElement;
  volume: Slider;
  mute: HTMLButtonElement;
}

export class MixerPanel {
  readonly sourceSelect: HTMLSelectElement;
  readonly element: HTMLDivElement;
  private rows: StemRow[] = [];
  private mixer?: Mixer;

  // trackNames: the stems played ("vocals" among them or not) and "original" where the page has it.
  constructor(trackNames: string[]) {
    const backing = trackNames.filter((name) => name !== "vocals" && name !== "original");
    const offered: Source[] = [];
    if (backing.length > 0) offered.push("instrumental");
    if (trackNames.includes("vocals")) offered.push("vocals");
    if (trackNames.includes("original")) offered.push("original");
    this.sourceSelect = h(
      "select",
      { "data-testid": "player-source", "aria-label": "What to play" },
      ...offered.map((source) => h("option", { value: source }, sourceLabels[source])),
    );
    this.sourceSelect.addEventListener("change", () => this.apply());
    this.element = h("div", { class: "mixer", "data-testid": "mixer" });
  }

  attach(mixer: Mixer): void {
    this.mixer = mixer;
    this.rows = mixer.tracks.filter((track) => track.name !== "original").map((track) => this.row(track));
    this.element.replaceChildren(...this.rows.map((row) => row.element));
    this.apply();
  }

  get guide(): number {
    return this.guideRow()?.volume.value ?? 0;
  }

  setGuide(value: number): void {
    this.guideRow()?.volume.set(value);
    this.apply();
  }

  private guideRow(): StemRow | undefined {
    return this.rows.find((row) => row.track.name === "vocals");
  }

  private row(track: Track): StemRow {
    const vocals = track.name === "vocals";
    const label = vocals ? "Guide vocal" : track.name[0].toUpperCase() + track.name.slice(1);
    const volume = new Slider(label, "stem-volume", percent, vocals ? guidePercent : 100, (v) => `${v} %`);
    volume.input.setAttribute("aria-label", `${label} volume`);
    const mute = h(
      "button",
      { type: "button", class: "mute", "data-testid": "stem-mute", "aria-pressed": "false" },
      "Mute",
    );
    const element = h(
      "div",
      { class: "stem", "data-testid": "stem-control", "data-stem": track.name },
      volume.element,
      mute,
    );
    volume.onInput(() => this.apply());
    mute.addEventListener("click", () => {
      mute.setAttribute("aria-pressed", String(mute.getAttribute("aria-pressed") !== "true"));
      this.apply();
    });
    return { track, element, volume, mute };
  }

  // Every track's gain from what to play and the rows' volumes and mutes.
  private apply(): void {
    const mixer = this.mixer;
    if (!mixer) return;
    const source = this.sourceSelect.value as Source;
    for (const track of mixer.tracks) {
      const row = this.rows.find((r) => r.track === track);
      const muted = row?.mute.getAttribute("aria-pressed") === "true";
      const mixed = row && !muted ? row.volume.value / 100 : 0;
      // The vocals alone and the original are the tracks of those names.
      mixer.setGain(track, source === "instrumental" ? mixed : Number(track.name === source));
      if (!row) continue;
      row.element.dataset.gain = String(track.gain.gain.value);
      row.element.dataset.muted = String(muted);
    }
  }
}
