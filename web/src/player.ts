// The karaoke player: plays the instrumental (or the vocals, or the original file while the page
// still holds it), shows the current line and lights up each word as it is sung, from the job's
// lines.json and words.json.
import { errorText } from "./api";
import type { Connection } from "./connection";
import { h } from "./dom";
import { fetchArtifact } from "./download";
import type { ArtifactView } from "./jobstate";

interface TimedWord {
  text: string;
  start: number;
  end: number;
}

interface Line {
  text: string;
  start: number;
  end: number;
  words: TimedWord[];
}

// The karaoke service's files: words.json lists every word, lines.json each line with the indices of
// its words in words.json. A line of the user's lyrics that is not sung has "sung": false and null
// times (files made before that key have none: sung).
interface WordEntry {
  word: string;
  start: number;
  end: number;
  confidence: number;
}

interface LineEntry {
  text: string;
  start: number;
  end: number;
  words: number[];
  sung?: boolean;
}

// The lines of the user's lyrics that are not sung: listed, never lit.
export function unsungLines(lines: LineEntry[]): string[] {
  return lines.filter((line) => line.sung === false).map((line) => line.text);
}

// A line without words (nothing could be timed inside it) is lit as a whole.
export function karaokeLines(lines: LineEntry[], words: WordEntry[]): Line[] {
  return lines
    .filter((line) => line.sung !== false)
    .map((line) => {
      const timed = line.words
        .map((index) => words[index])
        .filter((word) => word !== undefined)
        .map((word) => ({ text: word.word, start: word.start, end: word.end }));
      return {
        text: line.text,
        start: line.start,
        end: line.end,
        words: timed.length > 0 ? timed : [{ text: line.text, start: line.start, end: line.end }],
      };
    });
}

type Source = "instrumental" | "vocals" | "original";

// A line shows this long before it starts, so that the singer can read ahead.
const leadInSeconds = 0.4;

export class KaraokePlayer {
  readonly element: HTMLElement;
  private readonly audio: HTMLAudioElement;
  private readonly sourceSelect: HTMLSelectElement;
  private readonly loadButton: HTMLButtonElement;
  private readonly status: HTMLSpanElement;
  private readonly currentLine: HTMLParagraphElement;
  private readonly nextLine: HTMLParagraphElement;
  private readonly lyrics: HTMLDivElement;
  private readonly unsung: HTMLDivElement;
  private readonly sourceNames: Partial<Record<Source, string>> = {};
  private readonly urls = new Map<Source, string>();
  private lines: Line[] = [];
  private shownLine = -2;
  private wordElements: HTMLSpanElement[] = [];
  private frame = 0;

  constructor(
    private readonly connection: Connection,
    private readonly jobId: string,
    private readonly artifacts: ArtifactView[],
    original: File | undefined,
  ) {
    const instrumental = artifacts.find((a) => a.kind === "instrumental");
    const vocals = artifacts.find((a) => a.kind === "stem" && a.name.startsWith("vocals"));
    if (instrumental) this.sourceNames.instrumental = instrumental.name;
    if (vocals) this.sourceNames.vocals = vocals.name;
    if (original) this.urls.set("original", URL.createObjectURL(original));

    this.sourceSelect = h("select", { "data-testid": "player-source", "aria-label": "What to play" });
    const labels: Record<Source, string> = {
      instrumental: "Instrumental",
      vocals: "Vocals only",
      original: "Original song",
    };
    for (const source of ["instrumental", "vocals", "original"] as const) {
      if (this.sourceNames[source] || this.urls.has(source)) {
        this.sourceSelect.append(h("option", { value: source }, labels[source]));
      }
    }
    this.loadButton = h("button", { type: "button", "data-testid": "player-load" }, "Play karaoke");
    this.status = h("span", { class: "muted player-status", "data-testid": "player-status" });
    this.audio = h("audio", { controls: true, preload: "auto", "data-testid": "player-audio", hidden: true });
    this.currentLine = h("p", { class: "line current", "data-testid": "karaoke-line" });
    this.nextLine = h("p", { class: "line next", "data-testid": "karaoke-next" });
    this.lyrics = h("div", { class: "lyrics", hidden: true }, this.currentLine, this.nextLine);
    this.unsung = h("div", { class: "unsung", "data-testid": "unsung-lines", hidden: true });
    this.element = h(
      "section",
      { class: "player", "data-testid": "player" },
      h("h3", {}, "Karaoke"),
      h("div", { class: "player-controls" }, this.sourceSelect, this.loadButton, this.status),
      this.audio,
      this.lyrics,
      this.unsung,
    );

    this.loadButton.addEventListener("click", () => void this.start());
    this.sourceSelect.addEventListener("change", () => void this.switchSource());
    this.audio.addEventListener("play", () => this.tick());
    this.audio.addEventListener("seeked", () => this.show(this.audio.currentTime));
  }

  // Whether the job made anything to sing along to.
  get playable(): boolean {
    return Boolean(this.sourceNames.instrumental || this.sourceNames.vocals);
  }

  dispose(): void {
    cancelAnimationFrame(this.frame);
    this.audio.pause();
    for (const url of this.urls.values()) URL.revokeObjectURL(url);
  }

  private async start(): Promise<void> {
    this.loadButton.disabled = true;
    try {
      this.lines = await this.loadLyrics();
      await this.play(this.sourceSelect.value as Source, 0, true);
      this.loadButton.hidden = true;
      this.audio.hidden = false;
      this.lyrics.hidden = false;
      this.show(0);
    } catch (e) {
      this.status.textContent = `Could not load the player: ${errorText(e)}`;
      this.loadButton.disabled = false;
    }
  }

  private async switchSource(): Promise<void> {
    if (this.audio.hidden) return;
    await this.play(this.sourceSelect.value as Source, this.audio.currentTime, !this.audio.paused);
  }

  private async loadLyrics(): Promise<Line[]> {
    const json = async (name: string): Promise<unknown[]> => {
      const artifact = this.artifacts.find((a) => a.name === name);
      if (!artifact) return [];
      const blob = await fetchArtifact(this.connection, this.jobId, name, artifact.contentType);
      return JSON.parse(await blob.text()) as unknown[];
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

  private async sourceUrl(source: Source): Promise<string> {
    const known = this.urls.get(source);
    if (known) return known;
    const name = this.sourceNames[source] ?? "";
    const artifact = this.artifacts.find((a) => a.name === name);
    const blob = await fetchArtifact(
      this.connection,
      this.jobId,
      name,
      artifact?.contentType ?? "",
      (got, total) => {
        this.status.textContent = `Loading ${name}: ${Math.round((100 * got) / Math.max(total, 1))}%`;
      },
    );
    const url = URL.createObjectURL(blob);
    this.urls.set(source, url);
    return url;
  }

  private async play(source: Source, at: number, playing: boolean): Promise<void> {
    this.sourceSelect.disabled = true;
    try {
      this.audio.src = await this.sourceUrl(source);
      this.status.textContent = "";
      await new Promise((resolve) => this.audio.addEventListener("loadedmetadata", resolve, { once: true }));
      this.audio.currentTime = at;
      // Autoplay may be refused without a gesture; the controls stay there to press play.
      if (playing) await this.audio.play().catch(() => undefined);
    } finally {
      this.sourceSelect.disabled = false;
    }
  }

  private tick(): void {
    cancelAnimationFrame(this.frame);
    this.show(this.audio.currentTime);
    if (!this.audio.paused && !this.audio.ended) this.frame = requestAnimationFrame(() => this.tick());
  }

  private lineAt(time: number): number {
    let index = -1;
    for (let i = 0; i < this.lines.length && this.lines[i].start - leadInSeconds <= time; i++) index = i;
    return index;
  }

  private show(time: number): void {
    const index = this.lineAt(time);
    if (index !== this.shownLine) {
      this.shownLine = index;
      const line = this.lines[index];
      this.wordElements = line
        ? line.words.map((w) => h("span", { class: "word", "data-state": "upcoming" }, w.text))
        : [];
      this.currentLine.replaceChildren(...this.wordElements.flatMap((span, i) => (i ? [" ", span] : [span])));
      this.nextLine.textContent = this.lines[index + 1]?.text ?? "";
    }
    const words = this.lines[index]?.words ?? [];
    words.forEach((word, i) => {
      const span = this.wordElements[i];
      const state = time >= word.end ? "sung" : time >= word.start ? "now" : "upcoming";
      span.dataset.state = state;
      const sung = state === "now" ? (time - word.start) / Math.max(word.end - word.start, 0.01) : 0;
      span.style.setProperty("--sung", `${Math.round(sung * 100)}%`);
    });
  }
}
