// Sound effects, synthesised with Web Audio (no files, no network): a rising two-note chime when a
// stage is done, a lower falling tone when something fails. Each sound played is counted in
// <body data-sounds-played>, so that tests (and curious users) can tell what the page played.
import { soundsWanted } from "./store";

let context: AudioContext | undefined;

// Browsers start an AudioContext made without a click suspended; the sound toggle's click calls this.
export function unlockSounds(): void {
  context ??= new AudioContext();
  void context.resume();
}

function tone(audio: AudioContext, start: number, from: number, to: number, seconds: number): void {
  const oscillator = new OscillatorNode(audio, { type: "sine", frequency: from });
  oscillator.frequency.exponentialRampToValueAtTime(to, start + seconds);
  const gain = new GainNode(audio, { gain: 0 });
  // A quick attack and an exponential decay: a soft click-free blip.
  gain.gain.setValueAtTime(0, start);
  gain.gain.linearRampToValueAtTime(0.2, start + 0.01);
  gain.gain.exponentialRampToValueAtTime(0.001, start + seconds);
  oscillator.connect(gain).connect(audio.destination);
  oscillator.start(start);
  oscillator.stop(start + seconds);
}

function counted(): void {
  const played = Number(document.body.dataset.soundsPlayed ?? "0");
  document.body.dataset.soundsPlayed = String(played + 1);
}

// One chime per stage done and one tone per failure, spaced so that several in one event are heard.
export function playStageSounds(stagesDone: number, failed: boolean): void {
  if (!soundsWanted() || (stagesDone === 0 && !failed)) return;
  context ??= new AudioContext();
  const now = context.currentTime + 0.02;
  for (let i = 0; i < stagesDone; i++) {
    const start = now + 0.35 * i;
    tone(context, start, 660, 660, 0.15);
    tone(context, start + 0.12, 880, 880, 0.22);
    counted();
  }
  if (failed) {
    tone(context, now + 0.35 * stagesDone, 330, 165, 0.5);
    counted();
  }
}
