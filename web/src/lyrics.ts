// The lyrics the player shows: the line being sung, its words lit as they are sung, the next line
// below, and a countdown before a line that comes after a long break (and before the first line).
import { h } from "./dom";

interface TimedWord {
  text: string;
  start: number;
  end: number;
}

export interface Line {
  text: string;
  start: number;
  end: number;
  words: TimedWord[];
}

// The karaoke service's files: words.json lists every word, lines.json each line with the indices of
// its words in words.json. A line of the user's lyrics that is not sung has "sung": false and null
// times (files made before that key have none: sung).
export interface WordEntry {
  word: string;
  start: number;
  end: number;
  confidence: number;
}

export interface LineEntry {
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

// A line shows this long before it starts, so that the singer can read ahead.
const leadInSeconds = 0.4;
// A silence longer than this before a line earns it a countdown of countdownSeconds.
const breakSeconds = 4;
const countdownSeconds = 3;

export class LyricsView {
  readonly element: HTMLDivElement;
  private readonly countdown: HTMLDivElement;
  private readonly currentLine: HTMLParagraphElement;
  private readonly nextLine: HTMLParagraphElement;
  private lines: Line[] = [];
  // When each line comes up: a countdown before it after a break, a short lead-in otherwise.
  private showFrom: number[] = [];
  private counted: boolean[] = [];
  private shownLine = -2;
  private wordElements: HTMLSpanElement[] = [];

  constructor() {
    this.countdown = h("div", {
      class: "countdown",
      "data-testid": "karaoke-countdown",
      "data-countdown": 0,
    });
    this.currentLine = h("p", { class: "line current", "data-testid": "karaoke-line" });
    this.nextLine = h("p", { class: "line next", "data-testid": "karaoke-next" });
    this.element = h(
      "div",
      { class: "lyrics", "data-testid": "karaoke-lyrics", tabindex: -1 },
      this.countdown,
      this.currentLine,
      this.nextLine,
    );
  }

  setLines(lines: Line[]): void {
    this.lines = lines;
    this.counted = lines.map((line, i) =>
      i === 0 ? line.start > 0 : line.start - lines[i - 1].end > breakSeconds,
    );
    this.showFrom = lines.map((line, i) => line.start - (this.counted[i] ? countdownSeconds : leadInSeconds));
    this.shownLine = -2;
  }

  show(time: number): void {
    let index = -1;
    while (index + 1 < this.lines.length && this.showFrom[index + 1] <= time) index++;
    if (index !== this.shownLine) {
      this.shownLine = index;
      const line = this.lines[index];
      this.wordElements = line
        ? line.words.map((w) => h("span", { class: "word", "data-state": "upcoming" }, w.text))
        : [];
      this.currentLine.replaceChildren(...this.wordElements.flatMap((span, i) => (i ? [" ", span] : [span])));
      this.nextLine.textContent = this.lines[index + 1]?.text ?? "";
    }
    const line = this.lines[index];
    const count = line && this.counted[index] && time < line.start ? Math.ceil(line.start - time) : 0;
    if (this.countdown.dataset.countdown !== String(count)) {
      this.countdown.dataset.countdown = String(count);
      this.countdown.textContent = "●".repeat(count);
    }
    (line?.words ?? []).forEach((word, i) => {
      const span = this.wordElements[i];
      const state = time >= word.end ? "sung" : time >= word.start ? "now" : "upcoming";
      span.dataset.state = state;
      const sung = state === "now" ? (time - word.start) / Math.max(word.end - word.start, 0.01) : 0;
      span.style.setProperty("--sung", `${Math.round(sung * 100)}%`);
    });
  }
}
