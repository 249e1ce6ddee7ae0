// The karaoke player: the job's stems streamed by URL and mixed (a guide-vocal level, and on
// all-stems jobs a volume and mute per stem), tempo and key, the lyrics lit word by word in the page
// or over the whole screen, and keys for all of it. The original song stays a choice while the page
// holds the uploaded file. The state tests check is written to data-* attributes from the audio
// nodes themselves.
import { errorText } from "./api";
import { h } from "./dom";
import { fileUrl } from "./files";
import { FullscreenPanel } from "./fullscreen";
import type { ArtifactView } from "./jobstate";
import { karaokeLines, LyricsView, unsungLines, type Line, type LineEntry, type WordEntry } from "./lyrics";
import { Mixer, type Track, type TrackSource } from "./mixer";

type Source = "instrumental" | "vocals" | "original";

const sourceLabels: Record<Source, string> = {
  instrumental: "Karaoke",
  vocals: "Vocals only",
  original: "Original song",
};
// The guide vocal sits under the backing by default; 0 is pure karaoke.
const guidePercent = 20;
const seekSeconds = 5;
const guideStepPercent = 10;
const tempoPercent = { min: 50, max: 150, step: 5 };
const keySemitones = { min: -6, max: 6 };
// The level meter's empty end, in dB below full scale.
const meterFloorDb = 60;
const keyHelp =
  "Keys: Space play/pause · ←/→ 5 s · ↑/↓ guide vocal · +/− tempo · [/] key · F fullscreen · Esc leave it";

interface StemControl {
  track: Track;
  element: HTMLDivElement;
  volume: HTMLInputElement;
  mute: HTMLButtonElement;
}

const stemName = (artifact: ArtifactView): string => artifact.name.replace(/\.[^.]*$/, "");

export class KaraokePlayer {
  readonly element: HTMLElement;
  private readonly sourceSelect: HTMLSelectElement;
  private readonly loadButton: HTMLButtonElement;
  private readonly status: HTMLSpanElement;
  private readonly transport: HTMLDivElement;
  private readonly mixerPanel: HTMLDivElement;
  private readonly tempo: HTMLInputElement;
  private readonly key: HTMLInputElement;
  private readonly meter: HTMLDivElement;
  private readonly lyrics = new LyricsView();
  private readonly fullscreen: FullscreenPanel;
  private readonly unsung: HTMLDivElement;
  private readonly sources: TrackSource[];
  private readonly originalUrl?: string;
  private mixer?: Mixer;
  private stems: StemControl[] = [];
  private frame = 0;

  constructor(
    private readonly jobId: string,
    private readonly artifacts: ArtifactView[],
    original: File | undefined,
  ) {
    const audio = artifacts.filter((a) => a.contentType.startsWith("audio/"));
    const stems = audio.filter((a) => a.kind === "stem");
    const instrumental = audio.find((a) => a.kind === "instrumental");
    // An all-stems job is mixed from its stems; the instrumental is their sum without the vocals.
    const allStems = stems.some((a) => stemName(a) !== "vocals");
    const played = allStems ? stems : [instrumental, ...stems].filter((a) => a !== undefined);
    // The clock is a backing stem, so that it runs whatever the mix.
    played.sort((a, b) => Number(stemName(a) === "vocals") - Number(stemName(b) === "vocals"));
    this.sources = played.map((a) => ({ name: stemName(a), url: fileUrl(jobId, a.name) }));
    if (original && this.sources.length > 0) {
      this.originalUrl = URL.createObjectURL(original);
      this.sources.push({ name: "original", url: this.originalUrl });
    }

    const names = new Set(this.sources.map((s) => s.name));
    this.sourceSelect = h("select", { "data-testid": "player-source", "aria-label": "What to play" });
    const offered: Source[] = [];
    if (names.size > (names.has("vocals") ? 1 : 0) + (names.has("original") ? 1 : 0))
      offered.push("instrumental");
    if (names.has("vocals")) offered.push("vocals");
    if (names.has("original")) offered.push("original");
    for (const source of offered)
      this.sourceSelect.append(h("option", { value: source }, sourceLabels[source]));

    this.loadButton = h("button", { type: "button", "data-testid": "player-load" }, "Play karaoke");
    this.status = h("span", { class: "muted player-status", "data-testid": "player-status" });
    this.tempo = h("input", {
      type: "range",
      min: tempoPercent.min,
      max: tempoPercent.max,
      step: tempoPercent.step,
      value: 100,
      "data-testid": "tempo",
      "aria-label": "Tempo",
    });
    this.key = h("input", {
      type: "range",
      min: keySemitones.min,
      max: keySemitones.max,
      step: 1,
      value: 0,
      "data-testid": "key",
      "aria-label": "Key",
    });
    this.meter = h(
      "div",
      { class: "meter", "data-testid": "level-meter", "data-level": 0, role: "presentation" },
      h("div", { class: "meter-fill" }),
    );
    this.mixerPanel = h("div", { class: "mixer", "data-testid": "mixer" });
    this.transport = h("div", { class: "transport", hidden: true });
    this.fullscreen = new FullscreenPanel(this.lyrics.element, () => this.updateFullscreenButton());
    this.unsung = h("div", { class: "unsung", "data-testid": "unsung-lines", hidden: true });
    this.lyrics.element.hidden = true;
    this.element = h(
      "section",
      { class: "player", "data-testid": "player", tabindex: 0, "aria-label": "Karaoke player" },
      h("h3", {}, "Karaoke"),
      h("div", { class: "player-controls" }, this.sourceSelect, this.loadButton, this.status),
      this.transport,
      this.lyrics.element,
      this.unsung,
    );

    this.loadButton.addEventListener("click", () => void this.start());
    this.sourceSelect.addEventListener("change", () => this.applyGains());
    this.tempo.addEventListener("input", () => this.setTempo(Number(this.tempo.value)));
    this.key.addEventListener("input", () => this.setKey(Number(this.key.value)));
    this.element.addEventListener("keydown", (event) => this.onKey(event));
  }

  // Whether the job made anything to sing along to.
  get playable(): boolean {
    return this.sources.some((s) => s.name !== "original");
  }

  dispose(): void {
    cancelAnimationFrame(this.frame);
    this.mixer?.dispose();
    if (this.originalUrl) URL.revokeObjectURL(this.originalUrl);
  }

  private async start(): Promise<void> {
    this.loadButton.disabled = true;
    try {
      const [lines, mixer] = await Promise.all([this.loadLyrics(), Mixer.create(this.sources)]);
      this.mixer = mixer;
      this.lyrics.setLines(lines);
      this.buildTransport(mixer);
      this.applyGains();
      this.setTempo(100);
      this.setKey(0);
      this.loadButton.hidden = true;
      this.transport.hidden = false;
      this.lyrics.element.hidden = false;
      this.lyrics.show(0);
      await mixer.play();
    } catch (e) {
      this.status.textContent = `Could not load the player: ${errorText(e)}`;
      this.loadButton.disabled = false;
    }
  }

  private async loadLyrics(): Promise<Line[]> {
    const json = async (name: string): Promise<unknown[]> => {
      if (!this.artifacts.some((a) => a.name === name)) return [];
      const response = await fetch(fileUrl(this.jobId, name));
      if (!response.ok) throw new Error(`${name}: ${response.status} ${response.statusText}`);
      return (await response.json()) as unknown[];
    };
    const [lines, words] = await Promise.all([json("lines.json"), json("words.json")]);
    const unsung = unsungLines(lines as LineEntry[]);
    this.unsung.replaceChildren(
      h("p", { class: "muted" }, `Not sung in this song (${unsung.length} of ${lines.length} lines):`),
      h("ul", {}, ...unsung.map((text) => h("li", { class: "unsung-line" }, text))),
    );
    this.unsung.hidden = unsung.length === 0;
    return karaokeLines(lines as LineEntry[], words as WordEntry[]);
  }

  private buildTransport(mixer: Mixer): void {
    const clock = mixer.clockElement;
    clock.dataset.testid = "player-audio";
    clock.addEventListener("play", () => this.tick());
    clock.addEventListener("seeked", () => this.lyrics.show(clock.currentTime));
    clock.addEventListener("ratechange", () => this.showRate());
    this.stems = mixer.tracks.filter((t) => t.name !== "original").map((track) => this.stemControl(track));
    this.mixerPanel.replaceChildren(...this.stems.map((stem) => stem.element));
    const fullscreenButton = h(
      "button",
      { type: "button", "data-testid": "fullscreen-button" },
      "Full screen",
    );
    fullscreenButton.addEventListener("click", () => void this.fullscreen.toggle());
    this.key.disabled = !mixer.canChangeKey;
    this.transport.replaceChildren(
      ...mixer.tracks.map((t) => t.audio),
      this.mixerPanel,
      h(
        "div",
        { class: "player-controls" },
        h("label", { class: "slider" }, "Tempo", this.tempo, h("output", { "data-testid": "tempo-value" })),
        h("label", { class: "slider" }, "Key", this.key, h("output", { "data-testid": "key-value" })),
        this.meter,
        fullscreenButton,
      ),
      h("p", { class: "muted key-help", "data-testid": "key-help" }, keyHelp),
    );
  }

  private stemControl(track: Track): StemControl {
    const vocals = track.name === "vocals";
    const label = vocals ? "Guide vocal" : track.name[0].toUpperCase() + track.name.slice(1);
    const volume = h("input", {
      type: "range",
      min: 0,
      max: 100,
      step: 1,
      value: vocals ? guidePercent : 100,
      "data-testid": "stem-volume",
      "aria-label": `${label} volume`,
    });
    const mute = h(
      "button",
      { type: "button", class: "mute", "data-testid": "stem-mute", "aria-pressed": "false" },
      "Mute",
    );
    const element = h(
      "div",
      { class: "stem", "data-testid": "stem-control", "data-stem": track.name },
      h("span", { class: "stem-name" }, label),
      volume,
      h("output", {}),
      mute,
    );
    volume.addEventListener("input", () => this.applyGains());
    mute.addEventListener("click", () => {
      mute.setAttribute("aria-pressed", String(mute.getAttribute("aria-pressed") !== "true"));
      this.applyGains();
    });
    return { track, element, volume, mute };
  }

  // Every track's gain from the choice of what to play and the mixer's sliders.
  private applyGains(): void {
    const mixer = this.mixer;
    if (!mixer) return;
    const source = this.sourceSelect.value as Source;
    const controls = new Map(this.stems.map((stem) => [stem.track, stem]));
    for (const track of mixer.tracks) {
      const control = controls.get(track);
      const muted = control?.mute.getAttribute("aria-pressed") === "true";
      const mixed = control && !muted ? Number(control.volume.value) / 100 : 0;
      const gain =
        source === "original"
          ? Number(track.name === "original")
          : source === "vocals"
            ? Number(track.name === "vocals")
            : mixed;
      mixer.setGain(track, gain);
      if (!control) continue;
      control.element.dataset.gain = String(track.gain.gain.value);
      control.element.dataset.muted = String(muted);
      control.element.querySelector("output")!.textContent = `${control.volume.value} %`;
    }
  }

  private setGuide(percent: number): void {
    const guide = this.stems.find((stem) => stem.track.name === "vocals");
    if (!guide) return;
    guide.volume.value = String(Math.max(0, Math.min(100, percent)));
    this.applyGains();
  }

  private setTempo(percent: number): void {
    const clamped = Math.max(tempoPercent.min, Math.min(tempoPercent.max, percent));
    this.tempo.value = String(clamped);
    this.mixer?.setRate(clamped / 100);
    this.showRate();
  }

  private showRate(): void {
    const rate = this.mixer?.rate ?? 1;
    this.element.dataset.rate = String(rate);
    this.tempo.value = String(Math.round(rate * 100));
    this.tempo.nextElementSibling!.textContent = `${Math.round(rate * 100)} %`;
  }

  private setKey(semitones: number): void {
    const clamped = Math.max(keySemitones.min, Math.min(keySemitones.max, semitones));
    this.key.value = String(clamped);
    this.mixer?.setSemitones(clamped);
    const shifted = this.mixer?.semitones ?? 0;
    this.element.dataset.semitones = String(shifted);
    this.key.nextElementSibling!.textContent = shifted > 0 ? `+${shifted}` : String(shifted);
  }

  private updateFullscreenButton(): void {
    const button = this.transport.querySelector("[data-testid=fullscreen-button]");
    if (button) button.textContent = this.fullscreen.active ? "Leave full screen" : "Full screen";
  }

  private onKey(event: KeyboardEvent): void {
    const mixer = this.mixer;
    const target = event.target as HTMLElement;
    if (!mixer || event.ctrlKey || event.metaKey || event.altKey) return;
    // The browser's own controls, menus and buttons keep their keys.
    if (target instanceof HTMLSelectElement || target instanceof HTMLAudioElement) return;
    if (target instanceof HTMLButtonElement && (event.key === " " || event.key === "Enter")) return;
    if (target instanceof HTMLInputElement && event.key.startsWith("Arrow")) return;
    const actions: Record<string, () => void> = {
      " ": () => (mixer.playing ? mixer.pause() : void mixer.play()),
      ArrowLeft: () => mixer.seek(mixer.time - seekSeconds),
      ArrowRight: () => mixer.seek(mixer.time + seekSeconds),
      ArrowUp: () => this.setGuide(this.guidePercent() + guideStepPercent),
      ArrowDown: () => this.setGuide(this.guidePercent() - guideStepPercent),
      "+": () => this.setTempo(Number(this.tempo.value) + tempoPercent.step),
      "=": () => this.setTempo(Number(this.tempo.value) + tempoPercent.step),
      "-": () => this.setTempo(Number(this.tempo.value) - tempoPercent.step),
      "[": () => this.setKey(Number(this.key.value) - 1),
      "]": () => this.setKey(Number(this.key.value) + 1),
      f: () => void this.fullscreen.toggle(),
      F: () => void this.fullscreen.toggle(),
      Escape: () => void this.fullscreen.leave(),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  }

  private guidePercent(): number {
    return Number(this.stems.find((stem) => stem.track.name === "vocals")?.volume.value ?? 0);
  }

  private tick(): void {
    cancelAnimationFrame(this.frame);
    const mixer = this.mixer;
    if (!mixer) return;
    this.lyrics.show(mixer.time);
    const level = mixer.level();
    this.meter.dataset.level = level.toFixed(6);
    const decibels = 20 * Math.log10(Math.max(level, 1e-6));
    this.meter.style.setProperty(
      "--level",
      `${Math.max(0, Math.round(100 + (100 * decibels) / meterFloorDb))}%`,
    );
    if (mixer.playing) this.frame = requestAnimationFrame(() => this.tick());
  }
}
