// The karaoke mixer's audio: one streamed <audio> per stem, each through a gain of its own into the
// key shifter, a level meter and the speakers. The first element is the clock: play, pause, seeking,
// the tempo and the volume of its controls carry over to the others, and any that drifts is put back.
import { pitchShifterName, pitchWorkletUrl } from "./pitch";
import { h } from "./dom";

export interface TrackSource {
  // "vocals", "instrumental", "drums", ... or "original" for the song as uploaded.
  name: string;
  url: string;
}

export interface Track extends TrackSource {
  readonly audio: HTMLAudioElement;
  readonly gain: GainNode;
}

// A follower further than this from the clock is sought back to it.
const driftSeconds = 0.04;
const syncEveryMs = 250;

export class Mixer {
  readonly tracks: Track[];
  private readonly clock: HTMLAudioElement;
  private readonly meter: AnalyserNode;
  private readonly samples: Float32Array<ArrayBuffer>;
  private readonly timer: number;

  private constructor(
    private readonly context: AudioContext,
    sources: TrackSource[],
    private readonly shifter: AudioWorkletNode | undefined,
  ) {
    this.meter = context.createAnalyser();
    this.samples = new Float32Array(this.meter.fftSize);
    const mix = shifter ?? this.meter;
    shifter?.connect(this.meter);
    this.meter.connect(context.destination);
    this.tracks = sources.map((source, index) => {
      const audio = h("audio", {
        preload: "auto",
        src: source.url,
        "data-stem": source.name,
        // The clock keeps the browser's controls; the others follow it unseen.
        controls: index === 0,
        controlslist: "noplaybackrate nodownload",
        hidden: index > 0,
      });
      audio.preservesPitch = true;
      const gain = context.createGain();
      context.createMediaElementSource(audio).connect(gain).connect(mix);
      return { ...source, audio, gain };
    });
    this.clock = this.tracks[0].audio;
    this.follow();
    this.timer = window.setInterval(() => this.resync(), syncEveryMs);
  }

  static async create(sources: TrackSource[]): Promise<Mixer> {
    const context = new AudioContext();
    let shifter: AudioWorkletNode | undefined;
    // Without the worklet (a page not served from a secure origin, or the file missing) the song
    // plays on in its own key.
    if (context.audioWorklet) {
      shifter = await context.audioWorklet.addModule(pitchWorkletUrl).then(
        () => new AudioWorkletNode(context, pitchShifterName, { outputChannelCount: [2] }),
        () => undefined,
      );
    }
    return new Mixer(context, sources, shifter);
  }

  get clockElement(): HTMLAudioElement {
    return this.clock;
  }

  get time(): number {
    return this.clock.currentTime;
  }

  get playing(): boolean {
    return !this.clock.paused && !this.clock.ended;
  }

  get canChangeKey(): boolean {
    return this.shifter !== undefined;
  }

  async play(): Promise<void> {
    await this.context.resume();
    // Autoplay may be refused without a gesture; the clock's controls stay there to press play.
    await this.clock.play().catch(() => undefined);
  }

  pause(): void {
    this.clock.pause();
  }

  seek(seconds: number): void {
    const duration = Number.isFinite(this.clock.duration) ? this.clock.duration : Infinity;
    this.clock.currentTime = Math.max(0, Math.min(seconds, duration));
  }

  setGain(track: Track, value: number): void {
    track.gain.gain.value = value;
  }

  // Tempo without a change of pitch: every element plays at the rate, keeping its pitch.
  setRate(rate: number): void {
    for (const { audio } of this.tracks) {
      audio.preservesPitch = true;
      audio.playbackRate = rate;
    }
  }

  get rate(): number {
    return this.clock.playbackRate;
  }

  setSemitones(semitones: number): void {
    const parameter = this.shifter?.parameters.get("semitones");
    if (parameter) parameter.value = semitones;
  }

  get semitones(): number {
    return this.shifter?.parameters.get("semitones")?.value ?? 0;
  }

  // The RMS of what goes to the speakers just now, 0..1.
  level(): number {
    this.meter.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const sample of this.samples) sum += sample * sample;
    return Math.sqrt(sum / this.samples.length);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    for (const { audio } of this.tracks) {
      audio.pause();
      audio.removeAttribute("src");
    }
    void this.context.close();
  }

  private followers(): HTMLAudioElement[] {
    return this.tracks.slice(1).map((track) => track.audio);
  }

  private follow(): void {
    const clock = this.clock;
    clock.addEventListener("play", () => {
      for (const audio of this.followers()) {
        audio.currentTime = clock.currentTime;
        void audio.play().catch(() => undefined);
      }
    });
    clock.addEventListener("pause", () => {
      for (const audio of this.followers()) {
        audio.pause();
        audio.currentTime = clock.currentTime;
      }
    });
    // While the clock waits for data, so do the others.
    clock.addEventListener("waiting", () => {
      for (const audio of this.followers()) audio.pause();
    });
    clock.addEventListener("playing", () => {
      for (const audio of this.followers()) {
        audio.currentTime = clock.currentTime;
        void audio.play().catch(() => undefined);
      }
    });
    clock.addEventListener("seeking", () => {
      for (const audio of this.followers()) audio.currentTime = clock.currentTime;
    });
    clock.addEventListener("ratechange", () => this.setRate(clock.playbackRate));
    clock.addEventListener("volumechange", () => {
      for (const audio of this.followers()) {
        audio.volume = clock.volume;
        audio.muted = clock.muted;
      }
    });
  }

  private resync(): void {
    // The clock waiting for data holds the others (see follow).
    if (!this.playing || this.clock.readyState < HTMLMediaElement.HAVE_FUTURE_DATA) return;
    for (const audio of this.followers()) {
      // One still seeking or loading is not moved again: it would never catch up.
      if (audio.ended || audio.seeking || audio.readyState < HTMLMediaElement.HAVE_FUTURE_DATA) continue;
      if (audio.paused) void audio.play().catch(() => undefined);
      if (Math.abs(audio.currentTime - this.clock.currentTime) > driftSeconds) {
        audio.currentTime = this.clock.currentTime;
      }
    }
  }
}
