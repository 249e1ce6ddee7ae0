// What the page remembers in localStorage: its jobs (so they survive a reload and are re-attached
// from the last seen event), unfinished uploads by file (so dropping the same file again resumes
// it), the last options chosen, whether to notify, and the API key when the server needs one.
import { keepKeyForFiles } from "./files";
import type { JobView } from "./jobstate";

const jobsKey = "roar.jobs.v1";
const uploadsKey = "roar.uploads.v1";
const optionsKey = "roar.options.v1";
const notifyKey = "roar.notify.v1";
const apiKeyKey = "roar.apikey.v1";

export interface RememberedOptions {
  separationModel: string;
  transcriptionModel: string;
  allStems: boolean;
  // Absent in what older pages remembered.
  karaokeVideo?: boolean;
}

function read<T>(key: string, fallback: T): T {
  try {
    const text = localStorage.getItem(key);
    return text === null ? fallback : (JSON.parse(text) as T);
  } catch {
    return fallback;
  }
}

function write(key: string, value: unknown): void {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the page still works, it just forgets on reload.
  }
}

export function loadJobs(): JobView[] {
  return read<JobView[]>(jobsKey, []);
}

// Newest first: a job seen for the first time goes to the front, a known one keeps its place.
export function saveJob(view: JobView): void {
  const jobs = loadJobs();
  const index = jobs.findIndex((job) => job.jobId === view.jobId);
  if (index < 0) jobs.unshift(view);
  else jobs[index] = view;
  write(jobsKey, jobs);
}

export function forgetJob(jobId: string): void {
  write(
    jobsKey,
    loadJobs().filter((job) => job.jobId !== jobId),
  );
}

// A file is known by name, size and modification time: enough to tell the same file dropped again.
export function fileKey(file: File): string {
  return `${file.name}:${file.size}:${file.lastModified}`;
}

export function rememberedUpload(file: File): string | undefined {
  return read<Record<string, string>>(uploadsKey, {})[fileKey(file)];
}

export function rememberUpload(file: File, uploadId: string | undefined): void {
  const uploads = read<Record<string, string>>(uploadsKey, {});
  if (uploadId) uploads[fileKey(file)] = uploadId;
  else delete uploads[fileKey(file)];
  write(uploadsKey, uploads);
}

export function loadOptions(): RememberedOptions | undefined {
  return read<RememberedOptions | undefined>(optionsKey, undefined);
}

export function saveOptions(options: RememberedOptions): void {
  write(optionsKey, options);
}

export function notifyWanted(): boolean {
  return read(notifyKey, false);
}

export function setNotifyWanted(wanted: boolean): void {
  write(notifyKey, wanted);
}

// "" when the user gave none.
export function loadApiKey(): string {
  return read(apiKeyKey, "");
}

export function saveApiKey(key: string): void {
  write(apiKeyKey, key);
  void keepKeyForFiles(key);
}

const soundsKey = "roar.sounds.v1";

// Sound effects are off until the user turns them on.
export function soundsWanted(): boolean {
  return read(soundsKey, false);
}

export function setSoundsWanted(wanted: boolean): void {
  write(soundsKey, wanted);
}
