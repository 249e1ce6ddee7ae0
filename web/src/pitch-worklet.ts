// The key change: an AudioWorklet that shifts pitch by 2^(semitones/12) without changing tempo. A
// two-tap delay-line shifter: each tap reads the recent input at a delay that sweeps across a short
// window at (1 - ratio) samples per sample, so it plays the input faster or slower than it is written;
// the taps sit half a window apart and cross-fade (sin², which sums to 1), so that one is silent
// whenever the other jumps back across the window. Built by web/build.mjs into its own file, loaded
// with audioWorklet.addModule (a worklet runs in a scope of its own, apart from the page's bundle).
import { pitchShifterName } from "./pitch";

// The AudioWorkletGlobalScope's names, which TypeScript's DOM library does not declare.
declare const sampleRate: number;
declare class AudioWorkletProcessor {
  constructor();
}
declare function registerProcessor(name: string, processor: new () => AudioWorkletProcessor): void;

// The window the taps sweep. Each cross-fade slips the phase of a tone by up to half a period, so a
// longer window means fewer slips (a truer pitch) but more smearing of the beat.
const windowSeconds = 0.1;
// The taps read at least this many samples behind the write position (linear interpolation needs 2).
const minimumDelay = 2;

class PitchShifter extends AudioWorkletProcessor {
  static get parameterDescriptors(): object[] {
    return [{ name: "semitones", defaultValue: 0, minValue: -24, maxValue: 24, automationRate: "k-rate" }];
  }

  private readonly window = Math.round(windowSeconds * sampleRate);
  // A power of two longer than the window, so that wrapping is a mask.
  private readonly size = 2 ** Math.ceil(Math.log2(this.window + 4 * minimumDelay));
  private lines: Float32Array[] = [];
  private written = 0;
  private phase = 0;

  process(
    inputs: Float32Array[][],
    outputs: Float32Array[][],
    parameters: Record<string, Float32Array>,
  ): boolean {
    const input = inputs[0] ?? [];
    const output = outputs[0] ?? [];
    const ratio = 2 ** (parameters.semitones[0] / 12);
    while (this.lines.length < output.length) this.lines.push(new Float32Array(this.size));
    const frames = output[0]?.length ?? 0;
    const mask = this.size - 1;
    const step = (1 - ratio) / this.window;
    let phase = this.phase;
    for (let i = 0; i < frames; i++) {
      const at = this.written + i;
      const first = phase;
      const second = (phase + 0.5) % 1;
      const firstWeight = Math.sin(Math.PI * first) ** 2;
      const secondWeight = 1 - firstWeight;
      const firstDelay = minimumDelay + first * this.window;
      const secondDelay = minimumDelay + second * this.window;
      for (let channel = 0; channel < output.length; channel++) {
        const line = this.lines[channel];
        // A mono input feeds every output channel.
        const source = input[channel] ?? input[0];
        line[at & mask] = source ? source[i] : 0;
        if (ratio === 1) {
          output[channel][i] = line[at & mask];
          continue;
        }
        output[channel][i] =
          firstWeight * this.read(line, at - firstDelay, mask) +
          secondWeight * this.read(line, at - secondDelay, mask);
      }
      phase = (((phase + step) % 1) + 1) % 1;
    }
    this.phase = phase;
    this.written = (this.written + frames) & (this.size - 1);
    return true;
  }

  // The delay line at a fractional position, linearly interpolated.
  private read(line: Float32Array, position: number, mask: number): number {
    const whole = Math.floor(position);
    const fraction = position - whole;
    return line[whole & mask] * (1 - fraction) + line[(whole + 1) & mask] * fraction;
  }
}

registerProcessor(pitchShifterName, PitchShifter);
