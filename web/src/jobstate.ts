// What the page shows of a job, folded from its ProgressEvents. Plain JSON, so that it can be kept in
// localStorage across reloads together with the seq of the last event it has seen.
import { create } from "@bufbuild/protobuf";
import type { AudioInfo } from "./gen/roar/v1/common_pb";
import {
  JobState,
  ProgressEventSchema,
  Stage,
  type Job,
  type JobError,
  type ProgressEvent,
} from "./gen/roar/v1/orchestrator_pb";

export const stageNames = ["separation", "transcription", "karaoke", "complete"] as const;
export type StageName = (typeof stageNames)[number];
export type StageState = "waiting" | "processing" | "paused" | "done" | "failed" | "cancelled";
export type JobStateName = "queued" | "running" | "paused" | "succeeded" | "partial" | "failed" | "cancelled";

export interface StageView {
  state: StageState;
  percent: number;
  message: string;
  error?: string;
}

export interface ArtifactView {
  name: string;
  kind: string;
  size: number;
  contentType: string;
}

export interface AudioView {
  durationSeconds: number;
  sampleRate: number;
  channels: number;
  format: string;
}

export interface JobView {
  jobId: string;
  filename: string;
  // int64 as a decimal string: JSON has no bigint.
  lastSeq: string;
  state: JobStateName;
  overallPercent: number;
  // Seconds until the whole job is done, while it runs; events of finished stages carry none.
  etaSeconds?: number;
  message: string;
  stages: Record<StageName, StageView>;
  artifacts: ArtifactView[];
  errors: string[];
  audio?: AudioView;
}

const stageByProto: Partial<Record<Stage, StageName>> = {
  [Stage.SEPARATION]: "separation",
  [Stage.TRANSCRIPTION]: "transcription",
  [Stage.KARAOKE]: "karaoke",
  [Stage.COMPLETE]: "complete",
};

// The stages each stage starts only after: transcription overlaps separation (it starts with the
// first window of vocals), karaoke needs both.
const waitsFor: Record<StageName, readonly StageName[]> = {
  separation: [],
  transcription: [],
  karaoke: ["separation", "transcription"],
  complete: [],
};

export const stateByProto: Partial<Record<JobState, JobStateName>> = {
  [JobState.QUEUED]: "queued",
  [JobState.RUNNING]: "running",
  [JobState.PAUSED]: "paused",
  [JobState.SUCCEEDED]: "succeeded",
  [JobState.PARTIAL]: "partial",
  [JobState.FAILED]: "failed",
  [JobState.CANCELLED]: "cancelled",
};

export function isFinished(state: JobStateName): boolean {
  return state === "succeeded" || state === "partial" || state === "failed" || state === "cancelled";
}

// The job controls a job in this state offers: pause while it is queued or runs, resume while paused,
// retry once it failed, ended partial or was cancelled.
export function canPause(state: JobStateName): boolean {
  return state === "queued" || state === "running";
}

export function canRetry(state: JobStateName): boolean {
  return state === "failed" || state === "partial" || state === "cancelled";
}

// A job RetryJob queued again (`job` is its answer): the stages that failed or were cancelled wait
// to run again, those that succeeded stay done; its errors are gone.
export function retryView(view: JobView, job: Job): void {
  for (const name of stageNames) {
    const stage = view.stages[name];
    if (name === "complete" || stage.state === "failed" || stage.state === "cancelled") {
      Object.assign(stage, { state: "waiting", percent: 0, message: "", error: undefined });
    }
  }
  view.errors = [];
  if (job.lastEvent) applyEvent(view, job.lastEvent);
  view.state = stateByProto[job.state] ?? view.state;
}

export function newJobView(jobId: string, filename: string, audio?: AudioView): JobView {
  const stage = (): StageView => ({ state: "waiting", percent: 0, message: "" });
  return {
    jobId,
    filename,
    lastSeq: "0",
    state: "queued",
    overallPercent: 0,
    message: "",
    stages: { separation: stage(), transcription: stage(), karaoke: stage(), complete: stage() },
    artifacts: [],
    errors: [],
    audio,
  };
}

export function audioView(audio: AudioInfo | undefined): AudioView | undefined {
  if (!audio) return undefined;
  return {
    durationSeconds: audio.durationSeconds,
    sampleRate: audio.sampleRate,
    channels: audio.channels,
    format: audio.format,
  };
}

// A job this browser did not follow (ListJobs, GetJob): folded from its newest event and, once it
// has ended, its artifacts and errors. Watching it on goes from that event's seq, so that the history
// before it is not played again.
export function viewFromJob(job: Job): JobView {
  const view = newJobView(job.jobId, job.filename, audioView(job.audio));
  if (job.lastEvent) applyEvent(view, job.lastEvent);
  view.state = stateByProto[job.state] ?? view.state;
  if (isFinished(view.state)) {
    const message = job.lastEvent?.message ?? "";
    finish(view, create(ProgressEventSchema, { artifacts: job.artifacts, errors: job.errors, message }));
  }
  return view;
}

function errorText(error: JobError): string {
  return error.code ? `${error.message} (${error.code})` : error.message;
}

function markFailed(view: JobView, error: JobError): void {
  const name = stageByProto[error.stage];
  if (!name) return;
  const stage = view.stages[name];
  stage.state = error.code === "CANCELLED" ? "cancelled" : "failed";
  stage.error = errorText(error);
}

export function applyEvent(view: JobView, event: ProgressEvent): void {
  view.lastSeq = event.seq.toString();
  view.state = stateByProto[event.state] ?? view.state;
  view.overallPercent = event.overallPercent;
  view.message = event.message;
  // Older servers sent an ETA on a finished stage's event too: nothing is left of that stage.
  const running = event.stage !== Stage.COMPLETE && event.stagePercent < 100 && !event.error;
  view.etaSeconds = running && !isFinished(view.state) ? event.etaSeconds : undefined;

  // A pause holds the running stages where they are (its message, how to go on, is the job's); any
  // later event means the job goes on.
  const paused = view.state === "paused";
  for (const name of stageNames) {
    const stage = view.stages[name];
    if (stage.state === (paused ? "processing" : "paused")) stage.state = paused ? "paused" : "processing";
  }
  const current = stageByProto[event.stage];
  if (current && current !== "complete" && paused && view.stages[current].state === "waiting") {
    // A paused job first seen paused (ListJobs): the stage it stopped in, as far as it got.
    Object.assign(view.stages[current], { state: "paused", percent: event.stagePercent });
  }
  // The COMPLETE event ends the job, whichever way: finish() settles every stage from its state.
  if (current && current !== "complete" && !paused) {
    // Reaching a stage means the ones it waits for have ended (a stage done before a restart
    // sends no event again); failed ones stay failed.
    for (const earlier of waitsFor[current]) {
      const stage = view.stages[earlier];
      if (stage.state === "waiting" || stage.state === "processing") {
        Object.assign(stage, { state: "done", percent: 100 });
      }
    }
    const stage = view.stages[current];
    if (stage.state === "waiting" || stage.state === "processing") {
      const state = event.stagePercent >= 100 ? "done" : "processing";
      Object.assign(stage, { state, percent: event.stagePercent, message: event.message });
    }
  }
  if (event.error) {
    markFailed(view, event.error);
    view.errors.push(errorText(event.error));
  }
  if (isFinished(view.state)) finish(view, event);
}

function finish(view: JobView, event: ProgressEvent): void {
  view.artifacts = event.artifacts.map((a) => ({
    name: a.name,
    kind: a.kind,
    size: Number(a.size),
    contentType: a.contentType,
  }));
  for (const error of event.errors) markFailed(view, error);
  view.errors = event.errors.map(errorText);
  const delivered = view.state === "succeeded" || view.state === "partial";
  const ended: StageState = delivered ? "done" : view.state === "cancelled" ? "cancelled" : "failed";
  for (const name of stageNames) {
    const stage = view.stages[name];
    if (stage.state === "processing" || (delivered && stage.state === "waiting")) {
      stage.state = ended;
      if (ended === "done") stage.percent = 100;
    }
  }
  const complete = view.stages.complete;
  if (complete.state === "waiting") complete.state = ended;
  if (ended === "done") complete.percent = 100;
  complete.message = event.message || completeMessages[view.state];
  if (ended !== "done" && !complete.error)
    complete.error = view.errors.join("; ") || completeMessages[view.state];
}

const completeMessages: Record<JobStateName, string> = {
  queued: "",
  running: "",
  paused: "",
  succeeded: "All done",
  partial: "Done, but some stages failed",
  failed: "The job failed",
  cancelled: "Cancelled",
};
