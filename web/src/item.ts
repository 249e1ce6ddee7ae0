// One song on the page: its entry in the job list and its details. A dropped file is uploaded, then
// waits for its options; Process starts the job, whose events drive the four stage cards. The job is
// followed through dropped connections and server restarts by re-attaching with WatchJob from the
// last seen seq, and is remembered in localStorage so that a reload picks it up again.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { backoffMs, client, errorText, isTransient, sleep } from "./api";
import type { Connection } from "./connection";
import { h, ProgressBar } from "./dom";
import { allFilesUrl, fileUrl } from "./files";
import { formatBytes, formatDuration, formatEta } from "./format";
import {
  JobOptionsSchema,
  type Job,
  type ProgressEvent,
  type ServerInfo,
  type Upload,
} from "./gen/roar/v1/orchestrator_pb";
import {
  applyEvent,
  audioView,
  canPause,
  canRetry,
  isFinished,
  newJobView,
  retryView,
  stageNames,
  viewFromJob,
  type JobView,
  type StageName,
} from "./jobstate";
import { KaraokePlayer } from "./player";
import {
  forgetJob,
  loadOptions,
  rememberUpload,
  saveJob,
  saveOptions,
  type RememberedOptions,
} from "./store";
import { playStageSounds } from "./sound";
import { uploadFile } from "./upload";

export interface ItemHost {
  connection: Connection;
  serverInfo: Promise<ServerInfo>;
  select(item: Item): void;
  removed(item: Item): void;
  // A job the page watched to its end.
  finished(view: JobView): void;
}

type Phase = "uploading" | "ready" | "starting" | "job" | "upload-failed";

const stageTitles: Record<StageName, string> = {
  separation: "Separation",
  transcription: "Transcription",
  karaoke: "Karaoke",
  complete: "Complete",
};

const stageStateLabels: Record<string, string> = {
  waiting: "Waiting",
  processing: "Processing",
  paused: "Paused",
  done: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

const phaseLabels: Record<Phase, string> = {
  uploading: "Uploading",
  ready: "Ready",
  starting: "Starting",
  job: "",
  "upload-failed": "Upload failed",
};

class StageCard {
  readonly element: HTMLElement;
  private readonly bar: ProgressBar;
  private readonly stateLabel: HTMLSpanElement;
  private readonly message: HTMLParagraphElement;
  private readonly error: HTMLParagraphElement;

  constructor(name: StageName) {
    this.bar = new ProgressBar(`stage-${name}-bar`, `${stageTitles[name]} progress`);
    this.stateLabel = h("span", { class: "stage-state" });
    this.message = h("p", { class: "stage-message", "data-testid": `stage-${name}-message` });
    this.error = h("p", { class: "stage-error", role: "alert", "data-testid": `stage-${name}-error` });
    this.element = h(
      "article",
      { class: "stage", "data-testid": `stage-${name}`, "data-stage": name, "data-state": "waiting" },
      h("div", { class: "stage-head" }, h("h3", {}, stageTitles[name]), this.stateLabel),
      this.bar.element,
      this.message,
      this.error,
    );
  }

  render(view: JobView, name: StageName): void {
    const stage = view.stages[name];
    this.element.dataset.state = stage.state;
    this.stateLabel.textContent =
      stage.state === "processing" ? `${Math.floor(stage.percent)}%` : stageStateLabels[stage.state];
    this.bar.set(stage.percent, stage.state);
    this.message.textContent = stage.message;
    this.error.textContent = stage.error ?? "";
  }
}

let itemCount = 0;

export class Item {
  readonly entry: HTMLLIElement;
  readonly detail: HTMLElement;
  view?: JobView;

  private phase: Phase;
  private file?: File;
  private upload?: Upload;
  private uploaded = 0;
  private errorMessage = "";
  private readonly stop = new AbortController();
  private readonly number = ++itemCount;

  private readonly entryState: HTMLSpanElement;
  private readonly entryBar: ProgressBar;
  private readonly stateChip: HTMLSpanElement;
  private readonly jobEta: HTMLSpanElement;
  private readonly cancelButton: HTMLButtonElement;
  private readonly pauseButton: HTMLButtonElement;
  private readonly resumeButton: HTMLButtonElement;
  private readonly retryButton: HTMLButtonElement;
  private readonly removeButton: HTMLButtonElement;
  private readonly jobLink: HTMLAnchorElement;
  private readonly fileInfo: HTMLDListElement;
  private readonly uploadSection: HTMLElement;
  private readonly uploadBar: ProgressBar;
  private readonly uploadText: HTMLParagraphElement;
  private readonly optionsSlot: HTMLDivElement;
  private readonly errorLine: HTMLParagraphElement;
  private readonly stagesSection: HTMLElement;
  private readonly stageCards: Record<StageName, StageCard>;
  private readonly downloads: HTMLElement;
  private readonly downloadList: HTMLUListElement;
  private readonly playerSlot: HTMLDivElement;
  private player?: KaraokePlayer;
  private shownArtifacts = "";
  // Every file of the job in one ZIP, named by the server after the song.
  private readonly downloadAll = h(
    "a",
    { class: "download-all", download: true, "data-testid": "download-all" },
    "Download all (.zip)",
  );

  private constructor(
    private readonly host: ItemHost,
    private readonly filename: string,
    phase: Phase,
  ) {
    this.phase = phase;
    this.entryState = h("span", { class: "chip", "data-testid": "job-entry-state" });
    this.entryBar = new ProgressBar("job-entry-bar", `${filename} progress`);
    const entryButton = h(
      "button",
      { type: "button", class: "entry" },
      h("span", { class: "entry-name" }, filename),
      this.entryState,
      this.entryBar.element,
    );
    entryButton.addEventListener("click", () => host.select(this));
    this.entry = h("li", { "data-testid": "job-entry", "data-filename": filename }, entryButton);

    this.stateChip = h("span", { class: "chip", "data-testid": "job-state" });
    // The ETA is the whole job's (the same model as the overall percent), so it is shown once.
    this.jobEta = h("span", { class: "job-eta muted", "data-testid": "job-eta" });
    this.cancelButton = h(
      "button",
      { type: "button", class: "danger", "data-testid": "cancel-job" },
      "Cancel",
    );
    this.pauseButton = h("button", { type: "button", "data-testid": "pause-job" }, "Pause");
    this.resumeButton = h("button", { type: "button", "data-testid": "resume-job" }, "Resume");
    this.retryButton = h("button", { type: "button", "data-testid": "retry-job" }, "Retry");
    this.pauseButton.addEventListener("click", () => void this.control("pause"));
    this.resumeButton.addEventListener("click", () => void this.control("resume"));
    this.retryButton.addEventListener("click", () => void this.control("retry"));
    this.removeButton = h("button", { type: "button", "data-testid": "remove-job" }, "Remove from list");
    this.jobLink = h("a", { class: "job-link", "data-testid": "job-link", hidden: true }, "Link to this job");
    this.cancelButton.addEventListener("click", () => void this.cancel());
    this.removeButton.addEventListener("click", () => this.remove());

    this.fileInfo = h("dl", { class: "file-info", "data-testid": "file-info" });
    this.uploadBar = new ProgressBar("upload-bar", "Upload progress");
    this.uploadText = h("p", { class: "muted", "data-testid": "upload-text" });
    this.uploadSection = h(
      "section",
      { class: "upload" },
      h("h3", {}, "Upload"),
      this.uploadBar.element,
      this.uploadText,
    );
    this.optionsSlot = h("div", { class: "options-slot" });
    this.errorLine = h("p", { class: "item-error", role: "alert", "data-testid": "item-error" });
    this.stageCards = {
      separation: new StageCard("separation"),
      transcription: new StageCard("transcription"),
      karaoke: new StageCard("karaoke"),
      complete: new StageCard("complete"),
    };
    this.stagesSection = h(
      "section",
      { class: "stages", "aria-label": "Stages" },
      ...stageNames.map((name) => this.stageCards[name].element),
    );
    this.downloadList = h("ul", { class: "artifacts" });
    this.downloads = h(
      "section",
      { class: "downloads", "data-testid": "downloads" },
      h("h3", {}, "Downloads"),
      this.downloadList,
      this.downloadAll,
    );
    this.playerSlot = h("div");
    this.detail = h(
      "article",
      { class: "item", "data-testid": "item", "data-filename": filename, hidden: true },
      h(
        "header",
        { class: "item-head" },
        h("h2", { class: "item-name" }, filename),
        this.stateChip,
        this.jobEta,
        h("span", { class: "spacer" }),
        this.jobLink,
        this.pauseButton,
        this.resumeButton,
        this.retryButton,
        this.cancelButton,
        this.removeButton,
      ),
      this.fileInfo,
      this.uploadSection,
      this.optionsSlot,
      this.errorLine,
      this.stagesSection,
      this.downloads,
      this.playerSlot,
    );
  }

  static fromFile(host: ItemHost, file: File): Item {
    const item = new Item(host, file.name, "uploading");
    item.file = file;
    item.render();
    void item.runUpload();
    return item;
  }

  // A job remembered from an earlier visit: shown as it was last seen, and followed on if unfinished.
  static fromView(host: ItemHost, view: JobView): Item {
    const item = new Item(host, view.filename, "job");
    item.view = view;
    item.render();
    if (!isFinished(view.state)) void item.watch();
    return item;
  }

  // A job of the caller's on the server that this browser never followed (ListJobs, or a #job= link).
  static fromJob(host: ItemHost, job: Job): Item {
    const view = viewFromJob(job);
    saveJob(view);
    return Item.fromView(host, view);
  }

  private get connection(): Connection {
    return this.host.connection;
  }

  private async runUpload(): Promise<void> {
    const file = this.file as File;
    try {
      const info = await this.host.serverInfo;
      const limit = Number(info.maxUploadBytes);
      if (limit > 0 && file.size > limit) {
        throw new Error(`${formatBytes(file.size)} is over this server's limit of ${formatBytes(limit)}`);
      }
      this.upload = await uploadFile(
        this.connection,
        file,
        (committed) => {
          this.uploaded = committed;
          this.render();
        },
        this.stop.signal,
      );
      this.uploaded = file.size;
      this.phase = "ready";
      this.optionsSlot.replaceChildren(this.optionsForm(info));
    } catch (e) {
      if (this.stop.signal.aborted) return;
      // A file the server refused (not audio, too big) must not be resumed when dropped again.
      if (e instanceof ConnectError && !isTransient(e)) rememberUpload(file, undefined);
      this.phase = "upload-failed";
      this.errorMessage = errorText(e);
    }
    this.render();
  }

  private optionsForm(info: ServerInfo): HTMLFormElement {
    const remembered = loadOptions();
    const modelSelect = (testId: string, models: string[], fallback: string, chosen?: string) => {
      const choices = models.length > 0 ? models : [fallback];
      const selected = chosen && choices.includes(chosen) ? chosen : fallback;
      const select = h("select", { "data-testid": testId });
      for (const model of choices) {
        const label = model === fallback ? `${model} (default)` : model;
        select.append(h("option", { value: model, selected: model === selected }, label));
      }
      return select;
    };
    const separation = modelSelect(
      "opt-separation-model",
      info.separationModels,
      info.defaultSeparationModel,
      remembered?.separationModel,
    );
    const transcription = modelSelect(
      "opt-transcription-model",
      info.transcriptionModels,
      info.defaultTranscriptionModel,
      remembered?.transcriptionModel,
    );
    const stemsName = `stems-${this.number}`;
    const twoStems = h("input", {
      type: "radio",
      name: stemsName,
      value: "two",
      checked: !remembered?.allStems,
    });
    const allStems = h("input", {
      type: "radio",
      name: stemsName,
      value: "all",
      checked: Boolean(remembered?.allStems),
      "data-testid": "opt-all-stems",
    });
    const karaokeVideo = h("input", {
      type: "checkbox",
      checked: Boolean(remembered?.karaokeVideo),
      "data-testid": "opt-karaoke-video",
    });
    const lyrics = h("textarea", {
      rows: 5,
      "data-testid": "opt-lyrics",
      placeholder:
        "Optional: paste the song's lyrics, one karaoke line per line. They are timed to the vocals.",
    });
    const processButton = h(
      "button",
      { type: "submit", class: "primary", "data-testid": "process-button" },
      "Process",
    );
    const form = h(
      "form",
      { class: "options", "data-testid": "options" },
      h("h3", {}, "Options"),
      h("label", {}, "Separation model", separation),
      h(
        "fieldset",
        { class: "stems" },
        h("legend", {}, "Stems"),
        h("label", { class: "inline" }, twoStems, "Vocals + instrumental"),
        h("label", { class: "inline" }, allStems, "Every stem the model makes"),
      ),
      h("label", {}, "Transcription model", transcription),
      h("label", {}, "Your lyrics", lyrics),
      h("label", { class: "inline" }, karaokeVideo, "Also a karaoke video (karaoke.mp4)"),
      h("div", { class: "actions" }, processButton),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = {
        separationModel: separation.value,
        transcriptionModel: transcription.value,
        allStems: allStems.checked,
        karaokeVideo: karaokeVideo.checked,
      };
      saveOptions(chosen);
      form
        .querySelectorAll("select, input, textarea, button")
        .forEach((el) => el.setAttribute("disabled", ""));
      void this.process(chosen, lyrics.value.trim());
    });
    return form;
  }

  private async process(chosen: RememberedOptions, lyrics: string): Promise<void> {
    const upload = this.upload as Upload;
    const options = create(JobOptionsSchema, { ...chosen, lyrics });
    this.phase = "starting";
    this.errorMessage = "";
    this.render();
    // Until the first event names the job, a failed call may be retried; after it, WatchJob takes over.
    let view: JobView | undefined;
    for (let failures = 0; !view;) {
      await this.connection.ready();
      try {
        for await (const event of client.process(
          { uploadId: upload.uploadId, options },
          { signal: this.stop.signal },
        )) {
          this.connection.succeeded();
          view = this.apply(event);
          if (isFinished(view.state)) break;
        }
        if (!view) throw new ConnectError("the server sent no progress", Code.Unavailable);
      } catch (e) {
        if (this.stop.signal.aborted) return;
        const error = ConnectError.from(e);
        if (view) {
          if (isTransient(error)) this.connection.failed();
          break;
        }
        if (!isTransient(error) || ++failures >= 6) {
          this.processFailed(errorText(error));
          return;
        }
        this.connection.failed();
        await sleep(backoffMs(failures), this.stop.signal);
      }
    }
    await this.watch();
  }

  // Back to the options, with the reason, so that the user can change them and try again.
  private processFailed(message: string): void {
    this.phase = "ready";
    this.errorMessage = message;
    this.optionsSlot.querySelectorAll("[disabled]").forEach((el) => el.removeAttribute("disabled"));
    this.render();
  }

  // Follows the job to its end, re-attaching after every broken stream from the last seen seq.
  private async watch(): Promise<void> {
    const view = this.view as JobView;
    for (let failures = 0; !isFinished(view.state);) {
      await this.connection.ready();
      if (this.stop.signal.aborted) return;
      try {
        const request = { jobId: view.jobId, afterSeq: BigInt(view.lastSeq) };
        for await (const event of client.watchJob(request, { signal: this.stop.signal })) {
          this.connection.succeeded();
          failures = 0;
          this.apply(event);
          if (isFinished(view.state)) break;
        }
        if (!isFinished(view.state))
          throw new ConnectError("the progress stream ended early", Code.Unavailable);
      } catch (e) {
        if (this.stop.signal.aborted) return;
        const error = ConnectError.from(e);
        if (!isTransient(error)) {
          this.errorMessage =
            error.code === Code.NotFound
              ? "This job is no longer on the server."
              : `Lost this job: ${errorText(error)}`;
          this.render();
          return;
        }
        this.connection.failed();
        await sleep(backoffMs(++failures), this.stop.signal);
      }
    }
  }

  private apply(event: ProgressEvent): JobView {
    if (!this.view) {
      this.view = newJobView(event.jobId, this.filename, audioView(this.upload?.audio));
      this.phase = "job";
      if (this.file) rememberUpload(this.file, undefined);
    }
    const view = this.view;
    // WatchJob promises no duplicates; an event already folded in must never count twice.
    if (event.seq <= BigInt(view.lastSeq)) return view;
    const wasFinished = isFinished(view.state);
    const before = stageNames.map((name) => view.stages[name].state);
    applyEvent(view, event);
    if (isLive(event)) {
      const after = stageNames.map((name) => view.stages[name].state);
      const done = after.filter((state, i) => state === "done" && before[i] !== "done").length;
      // One failure tone a job: the COMPLETE event that follows a stage's failure marks more failed.
      const failed = !before.includes("failed") && after.includes("failed");
      playStageSounds(done, failed);
    }
    saveJob(view);
    this.render();
    if (!wasFinished && isFinished(view.state)) this.host.finished(view);
    return view;
  }

  private async cancel(): Promise<void> {
    if (!this.view) {
      this.remove();
      return;
    }
    const jobId = this.view.jobId;
    this.cancelButton.disabled = true;
    try {
      // The job's stream brings the CANCELLED event.
      await this.connection.call(() => client.cancelJob({ jobId }));
    } catch (e) {
      this.errorMessage = `Could not cancel: ${errorText(e)}`;
      this.cancelButton.disabled = false;
      this.render();
    }
  }

  // Pause, Resume or Retry; the job's stream brings what follows. A retried job had ended, so it is
  // followed again from the event RetryJob answered with.
  private async control(action: "pause" | "resume" | "retry"): Promise<void> {
    const view = this.view;
    if (!view) return;
    const jobId = view.jobId;
    const buttons = [this.pauseButton, this.resumeButton, this.retryButton];
    for (const button of buttons) button.disabled = true;
    try {
      const job = await this.connection.call(() =>
        action === "pause"
          ? client.pauseJob({ jobId })
          : action === "resume"
            ? client.resumeJob({ jobId })
            : client.retryJob({ jobId }),
      );
      this.errorMessage = "";
      if (action === "retry") {
        retryView(view, job);
        saveJob(view);
        void this.watch();
      } else if (job.lastEvent) {
        this.apply(job.lastEvent);
      }
    } catch (e) {
      this.errorMessage = `Could not ${action}: ${errorText(e)}`;
    } finally {
      for (const button of buttons) button.disabled = false;
      this.render();
    }
  }

  private remove(): void {
    this.stop.abort();
    this.player?.dispose();
    if (this.view) forgetJob(this.view.jobId);
    this.entry.remove();
    this.detail.remove();
    this.host.removed(this);
  }

  setSelected(selected: boolean): void {
    this.detail.hidden = !selected;
    this.entry.toggleAttribute("aria-current", selected);
  }

  private stateName(): string {
    return this.view ? this.view.state : this.phase;
  }

  private render(): void {
    const view = this.view;
    const state = this.stateName();
    const label = view ? stateLabel(view) : phaseLabels[this.phase];
    for (const chip of [this.entryState, this.stateChip]) {
      chip.textContent = label;
      chip.dataset.state = state;
    }
    this.jobEta.textContent =
      view?.state === "running" && view.etaSeconds !== undefined ? formatEta(view.etaSeconds) : "";
    this.entry.dataset.state = state;
    this.detail.dataset.state = state;
    this.jobLink.hidden = !view;
    if (view) {
      this.jobLink.href = `#job=${encodeURIComponent(view.jobId)}`;
      this.entry.dataset.jobId = view.jobId;
      this.detail.dataset.jobId = view.jobId;
    }
    const size = this.file?.size ?? 0;
    const uploadPercent = size > 0 ? (100 * this.uploaded) / size : 0;
    this.entryBar.set(view ? view.overallPercent : uploadPercent, state);

    this.renderFileInfo();
    this.uploadSection.hidden = !this.file || this.phase === "job";
    const uploadState =
      this.phase === "uploading" ? "processing" : this.phase === "upload-failed" ? "failed" : "done";
    this.uploadBar.set(uploadPercent, uploadState);
    this.uploadText.textContent = `${formatBytes(this.uploaded)} of ${formatBytes(size)}`;
    this.optionsSlot.hidden = this.phase !== "ready" && this.phase !== "starting";
    this.errorLine.textContent = this.errorMessage;
    this.errorLine.hidden = !this.errorMessage;

    this.stagesSection.hidden = !view;
    this.cancelButton.hidden = view ? isFinished(view.state) : this.phase !== "uploading";
    this.pauseButton.hidden = !view || !canPause(view.state);
    this.resumeButton.hidden = view?.state !== "paused";
    this.retryButton.hidden = !view || !canRetry(view.state);
    this.removeButton.hidden = !(view
      ? isFinished(view.state)
      : this.phase !== "uploading" && this.phase !== "starting");
    if (view) for (const name of stageNames) this.stageCards[name].render(view, name);
    this.renderArtifacts();
  }

  private renderFileInfo(): void {
    const audio = this.view?.audio ?? audioView(this.upload?.audio);
    const rows: [string, string][] = [];
    if (this.file) {
      rows.push(["Size", formatBytes(this.file.size)]);
      rows.push(["Type", this.file.type || this.file.name.split(".").pop()?.toUpperCase() || "unknown"]);
    }
    if (audio) {
      rows.push(["Duration", formatDuration(audio.durationSeconds)]);
      const channels = audio.channels === 1 ? "mono" : `${audio.channels} channels`;
      rows.push(["Format", `${audio.format}, ${audio.sampleRate} Hz, ${channels}`]);
    }
    const text = JSON.stringify(rows);
    if (this.fileInfo.dataset.rows === text) return;
    this.fileInfo.dataset.rows = text;
    this.fileInfo.replaceChildren(
      ...rows.map(([term, value]) =>
        h("div", {}, h("dt", {}, term), h("dd", { "data-testid": `file-${term.toLowerCase()}` }, value)),
      ),
    );
  }

  // Links for every artifact, and the player, once the job has delivered them.
  private renderArtifacts(): void {
    const artifacts = this.view?.artifacts ?? [];
    this.downloads.hidden = artifacts.length === 0;
    const key = artifacts.map((a) => a.name).join("\n");
    if (key === this.shownArtifacts) return;
    this.shownArtifacts = key;
    const jobId = this.view?.jobId ?? "";
    this.downloadList.replaceChildren(
      ...artifacts.map((artifact) => {
        const link = h(
          "a",
          {
            href: fileUrl(jobId, artifact.name, true),
            download: artifact.name,
            "data-testid": "artifact-link",
            "data-name": artifact.name,
            "data-kind": artifact.kind,
          },
          artifact.name,
        );
        return h("li", {}, link, h("span", { class: "muted" }, ` ${formatBytes(artifact.size)}`));
      }),
    );
    this.downloadAll.href = allFilesUrl(jobId);
    this.player?.dispose();
    this.player = artifacts.length > 0 ? new KaraokePlayer(jobId, artifacts, this.file) : undefined;
    this.playerSlot.replaceChildren(...(this.player?.playable ? [this.player.element] : []));
  }
}

// Events older than this are history caught up on (a reload, a long outage): no sounds for them.
const liveEventMs = 30_000;

function isLive(event: ProgressEvent): boolean {
  const time = event.timestamp;
  if (!time) return true;
  return Date.now() - (Number(time.seconds) * 1000 + time.nanos / 1e6) < liveEventMs;
}

export function stateLabel(view: JobView): string {
  switch (view.state) {
    case "queued":
      return "Queued";
    case "running":
      return `${Math.floor(view.overallPercent)}%`;
    case "paused":
      return "Paused";
    case "succeeded":
      return "Done";
    case "partial":
      return "Done with errors";
    case "failed":
      return "Failed";
    case "cancelled":
      return "Cancelled";
  }
}
