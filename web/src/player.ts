// The karaoke player: the job's stems streamed by URL and mixed, tempo and key, the lyrics lit word
// by word in the page or over the whole screen, and keys for all of it. The original song stays a
// choice while the page holds the uploaded file. What tests check is written to data-* attributes
// read back from the audio nodes and elements themselves.
import { errorText } from "./api";
import { Slider } from "./controls";
import { h } from "./dom";
import { fileUrl } from "./files";
import { FullscreenPanel } from "./fullscreen";
import type { ArtifactView } from "./jobstate";
import { keyHelp, playerAction, type PlayerAction } from "./keys";
import { karaokeLines, LyricsView, unsungLines, type Line, type LineEntry, type WordEntry } from "./lyrics";
import { Mixer, type TrackSource } from "./mixer";
import { MixerPanel } from "./mixer-panel";

const seekSeconds = 5;
const guideStepPercent = 10;
const tempoPercent = { min: 50, max: 150, step: 5 };
const keySemitones = { min: -6, max: 6, step: 1 };
// The level meter's empty end, in dB below full scale.
const meterFloorDb = 60;

const stemName = (artifact: ArtifactView): string => artifact.name.replace(/\.[^.]*$/, "");

// The tracks to play: an all-stems job's stems (the instrumental is their sum without the vocals),
// otherwise the instrumental and the vocals. The first is the clock, so a backing one: it runs
// whatever the mix.
function trackSources(jobId: string, artifacts: ArtifactView[]): TrackSource[] {
  const audio = artifacts.filter((a) => a.contentType.startsWith("audio/"));
  const stems = audio.filter((a) => a.kind === "stem");
  const instrumental = audio.filter((a) => a.kind === "instrumental");
  const allStems = stems.some((a) => stemName(a) !== "vocals");
  const played = allStems ? stems : [...instrumental, ...stems];
  played.sort((a, b) => Number(stemName(a) === "vocals") - Number(stemName(b) === "vocals"));
  return played.map((a) => ({ name: stemName(a), url: fileUrl(jobId, a.name) }));
}

export class KaraokePlayer {
  readonly element: HTMLElement;
  private readonly loadButton: HTMLButtonElement;
  private readonly status: HTMLSpanElement;
  private readonly transport: HTMLDivElement;
  private readonly panel: MixerPanel;
  private readonly tempo = new Slider("Tempo", "tempo", tempoPercent, 100, (v) => `${v} %`);
  private readonly key = new Slider("Key", "key", keySemitones, 0, (v) => (v > 0 ? `+${v}` : String(v)));
  private readonly meter: HTMLDivElement;
  private readonly fullscreenButton: HTMLButtonElement;
  private readonly lyrics = new LyricsView();
  private readonly fullscreen: FullscreenPanel;
  private readonly unsung: HTMLDivElement;
  private readonly sources: TrackSource[];
  private readonly originalUrl?: string;
  private mixer?: Mixer;
  private frame = 0;

  constructor(
    private readonly jobId: string,
    private readonly artifacts: ArtifactView[],
    original: File | undefined,
  ) {
    this.sources = trackSources(jobId, artifacts);
    if (original && this.sources.length > 0) {
      this.originalUrl = URL.createObjectURL(original);
      this.sources.push({ name: "original", url: this.originalUrl });
    }
    this.panel = new MixerPanel(this.sources.map((s) => s.name));
    this.loadButton = h("button", { type: "button", "data-testid": "player-load" }, "Play karaoke");
    this.status = h("span", { class: "muted player-status", "data-testid": "player-status" });
    this.meter = h(
      "div",
      { class: "meter", "data-testid": "level-meter", "data-level": 0, role: "presentation" },
      h("div", { class: "meter-fill" }),
    );
    this.fullscreenButton = h(
      "button",
      { type: "button", "data-testid": "fullscreen-button" },
      "Full screen",
    );
    this.transport = h("div", { class: "transport", hidden: true });
    this.fullscreen = new FullscreenPanel(this.lyrics.element, () => {
      this.fullscreenButton.textContent = this.fullscreen.active ? "Leave full screen" : "Full screen";
    });
    this.unsung = h("div", { class: "unsung", "data-testid": "unsung-lines", hidden: true });
    this.lyrics.element.hidden = true;
    this.element = h(
      "section",
      { class: "player", "data-testid": "player", tabindex: 0, "aria-label": "Karaoke player" },
      h("h3", {}, "Karaoke"),
      h("div", { class: "player-controls" }, this.panel.sourceSelect, this.loadButton, this.status),
      this.transport,
      this.lyrics.element,
      this.unsung,
    );

    this.loadButton.addEventListener("click", () => void this.start());
    this.fullscreenButton.addEventListener("click", () => void this.fullscreen.toggle());
    this.tempo.onInput((percent) => this.setTempo(percent));
    this.key.onInput((semitones) => this.setKey(semitones));
    this.element.addEventListener("keydown", (event) => {
      const action = playerAction(event);
      if (!action || !this.mixer) return;
      event.preventDefault();
      this.perform(action, this.mixer);
    });
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
    // Made at once, inside the click: browsers start audio only on a gesture.
    const made = Mixer.create(this.sources);
    try {
      const [lines, mixer] = await Promise.all([this.loadLyrics(), made]);
      this.mixer = mixer;
      this.lyrics.setLines(lines);
      this.buildTransport(mixer);
      this.setTempo(100);
      this.setKey(0);
      this.status.textContent = "";
      this.loadButton.hidden = true;
      this.transport.hidden = false;
      this.lyrics.element.hidden = false;
      this.lyrics.show(0);
      await mixer.play();
    } catch (e) {
      // Another click makes another; this one's audio stops.
      if (!this.mixer)
        void made.then(
          (mixer) => mixer.dispose(),
          () => undefined,
        );
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
    // The clock's own controls may change the rate too.
    clock.addEventListener("ratechange", () => this.showRate(mixer));
    this.panel.attach(mixer);
    this.key.input.disabled = !mixer.canChangeKey;
    this.transport.replaceChildren(
      ...mixer.tracks.map((t) => t.audio),
      this.panel.element,
      h(
        "div",
        { class: "player-controls" },
        this.tempo.element,
        this.key.element,
        this.meter,
        this.fullscreenButton,
      ),
      h("p", { class: "muted key-help", "data-testid": "key-help" }, keyHelp),
    );
  }

  private setTempo(percent: number): void {
    this.mixer?.setRate(this.tempo.set(percent) / 100);
    if (this.mixer) this.showRate(this.mixer);
  }

  private showRate(mixer: Mixer): void {
    this.element.dataset.rate = String(mixer.rate);
    this.tempo.set(Math.round(mixer.rate * 100));
  }

  private setKey(semitones: number): void {
    this.mixer?.setSemitones(this.key.set(semitones));
    this.element.dataset.semitones = String(this.mixer?.semitones ?? 0);
  }

  private perform(action: PlayerAction, mixer: Mixer): void {
    const actions: Record<PlayerAction, () => void> = {
      "play-pause": () => (mixer.playing ? mixer.pause() : void mixer.play()),
      back: () => mixer.seek(mixer.time - seekSeconds),
      forward: () => mixer.seek(mixer.time + seekSeconds),
      "guide-up": () => this.panel.setGuide(this.panel.guide + guideStepPercent),
      "guide-down": () => this.panel.setGuide(this.panel.guide - guideStepPercent),
      faster: () => this.setTempo(this.tempo.value + tempoPercent.step),
      slower: () => this.setTempo(this.tempo.value - tempoPercent.step),
      "key-up": () => this.setKey(this.key.value + 1),
      "key-down": () => this.setKey(this.key.value - 1),
      fullscreen: () => void this.fullscreen.toggle(),
      "leave-fullscreen": () => void this.fullscreen.leave(),
    };
    actions[action]();
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
