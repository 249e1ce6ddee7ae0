// The Analytics view: GetStats (drawn from the server's store) as totals, bar charts in plain inline
// SVG, and tables of the stages, the slowest jobs and the failed ones with their errors. Only the
// caller's own jobs unless its key is an admin key (or the server has no keys): the server decides.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { client, errorText } from "./api";
import type { Connection } from "./connection";
import { h } from "./dom";
import { formatDuration } from "./format";
import { stateByProto } from "./jobstate";
import { Stage, type JobStats, type StageStats, type Stats } from "./gen/roar/v1/orchestrator_pb";

const periods = [7, 30, 90, 366];
const defaultPeriod = 30;

const stageKeys: [Stage, string, string][] = [
  [Stage.SEPARATION, "separation", "Separation"],
  [Stage.TRANSCRIPTION, "transcription", "Transcription"],
  [Stage.KARAOKE, "karaoke", "Karaoke"],
];

// How the jobs of a day ended, bottom to top in its bar; "other" is still queued or running.
const endings = ["succeeded", "partial", "failed", "cancelled", "other"] as const;
type Ending = (typeof endings)[number];

// Chart geometry, in SVG user units (the charts scale to their box's width).
const chartWidth = 960;
const chartHeight = 200;
const axisLeft = 36;
const axisBottom = 22;
const plotTop = 10;

const svgNs = "http://www.w3.org/2000/svg";

function svg(tag: string, attributes: Record<string, string | number> = {}, ...children: Node[]): SVGElement {
  const element = document.createElementNS(svgNs, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

function svgText(x: number, y: number, text: string, anchor = "middle"): SVGElement {
  const label = svg("text", { x, y, "text-anchor": anchor, class: "chart-label" });
  label.textContent = text;
  return label;
}

// A hover tooltip for an SVG shape.
function svgTitle(text: string): SVGElement {
  const title = svg("title");
  title.textContent = text;
  return title;
}

// 2026-11-30: the UTC day a timestamp falls on.
function utcDay(stamp: Timestamp | undefined): string {
  return stamp ? timestampDate(stamp).toISOString().slice(0, 10) : "";
}

function utcTime(stamp: Timestamp | undefined): string {
  return stamp ? timestampDate(stamp).toISOString().slice(0, 16).replace("T", " ") : "";
}

function percent(part: number, whole: number): string {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : "–";
}

function seconds(value: number): string {
  return value < 60 ? `${value.toFixed(1)} s` : formatDuration(value);
}

function stageName(stage: Stage): string {
  return stageKeys.find(([value]) => value === stage)?.[2] ?? "Upload";
}

// The y axis: a line at 0 and one at the top value, labelled.
function yAxis(top: string, plotHeight: number): SVGElement[] {
  const bottom = plotTop + plotHeight;
  return [
    svg("line", { x1: axisLeft, x2: chartWidth, y1: bottom, y2: bottom, class: "chart-axis" }),
    svg("line", { x1: axisLeft, x2: chartWidth, y1: plotTop, y2: plotTop, class: "chart-grid" }),
    svgText(axisLeft - 4, plotTop + 4, top, "end"),
    svgText(axisLeft - 4, bottom, "0", "end"),
  ];
}

// Day labels under the bars: every day when few, else about eight of them, today's always.
function dayLabels(days: string[], slot: number): SVGElement[] {
  const every = Math.max(1, Math.ceil(days.length / 8));
  return days.flatMap((day, i) =>
    (days.length - 1 - i) % every === 0
      ? [svgText(axisLeft + slot * (i + 0.5), chartHeight - 6, day.slice(5))]
      : [],
  );
}

function jobsChart(stats: Stats): SVGElement {
  const plotHeight = chartHeight - plotTop - axisBottom;
  const slot = (chartWidth - axisLeft) / stats.days.length;
  const most = Math.max(1, ...stats.days.map((day) => Number(day.jobs)));
  const bars = stats.days.map((day, i) => {
    const counts: Record<Ending, number> = {
      succeeded: Number(day.succeeded),
      partial: Number(day.partial),
      failed: Number(day.failed),
      cancelled: Number(day.cancelled),
      other: 0,
    };
    counts.other = Number(day.jobs) - counts.succeeded - counts.partial - counts.failed - counts.cancelled;
    let y = plotTop + plotHeight;
    const parts = endings
      .filter((ending) => counts[ending] > 0)
      .map((ending) => {
        const height = (plotHeight * counts[ending]) / most;
        y -= height;
        return svg("rect", {
          x: axisLeft + slot * i + slot * 0.15,
          y,
          width: slot * 0.7,
          height,
          class: `fill-${ending}`,
        });
      });
    const summary = endings
      .filter((ending) => counts[ending] > 0)
      .map((ending) => `${counts[ending]} ${ending === "other" ? "unfinished" : ending}`)
      .join(", ");
    return svg(
      "g",
      { "data-testid": "day-bar", "data-day": utcDay(day.day), "data-jobs": Number(day.jobs) },
      svgTitle(`${utcDay(day.day)}: ${day.jobs} jobs${summary ? ` (${summary})` : ""}`),
      ...parts,
    );
  });
  const days = stats.days.map((day) => utcDay(day.day));
  return svg(
    "svg",
    { viewBox: `0 0 ${chartWidth} ${chartHeight}`, class: "chart", role: "img", "data-testid": "jobs-chart" },
    svgTitle("Jobs per day, by how they ended"),
    ...yAxis(String(most), plotHeight),
    ...bars,
    ...dayLabels(days, slot),
  );
}

// Per day, one bar per stage: the share of its runs that ended that day which succeeded.
function successChart(stats: Stats): SVGElement {
  const plotHeight = chartHeight - plotTop - axisBottom;
  const slot = (chartWidth - axisLeft) / stats.days.length;
  const width = (slot * 0.8) / stageKeys.length;
  const bars = stats.days.flatMap((day, i) =>
    stageKeys.flatMap(([stage, key, title], k) => {
      const ran = day.stages.find((s) => s.stage === stage);
      if (!ran || ran.runs === 0n) return [];
      const rate = Number(ran.succeeded) / Number(ran.runs);
      const height = Math.max(1, plotHeight * rate);
      return [
        svg(
          "rect",
          {
            x: axisLeft + slot * i + slot * 0.1 + width * k,
            y: plotTop + plotHeight - height,
            width,
            height,
            class: `fill-${key}`,
            "data-testid": "success-bar",
          },
          svgTitle(`${utcDay(day.day)} ${title}: ${ran.succeeded} of ${ran.runs} runs succeeded`),
        ),
      ];
    }),
  );
  return svg(
    "svg",
    {
      viewBox: `0 0 ${chartWidth} ${chartHeight}`,
      class: "chart",
      role: "img",
      "data-testid": "success-chart",
    },
    svgTitle("Success rate per stage per day"),
    ...yAxis("100%", plotHeight),
    ...bars,
    ...dayLabels(
      stats.days.map((day) => utcDay(day.day)),
      slot,
    ),
  );
}

// Horizontal bars: each stage's mean seconds per minute of audio.
function speedChart(stages: StageStats[]): SVGElement {
  const rowHeight = 30;
  const labelWidth = 110;
  const height = rowHeight * stageKeys.length + 4;
  const most = Math.max(1e-9, ...stages.map((s) => s.secondsPerAudioMinute));
  const rows = stageKeys.flatMap(([stage, key, title], i) => {
    const ran = stages.find((s) => s.stage === stage);
    const value = ran?.secondsPerAudioMinute ?? 0;
    const width = ((chartWidth - labelWidth - 90) * value) / most;
    const y = i * rowHeight + 4;
    return [
      svgText(labelWidth - 8, y + rowHeight / 2 + 2, title, "end"),
      svg("rect", { x: labelWidth, y: y + 4, width, height: rowHeight - 10, class: `fill-${key}` }),
      svgText(
        labelWidth + width + 6,
        y + rowHeight / 2 + 2,
        ran ? `${value.toFixed(1)} s/min` : "no runs",
        "start",
      ),
    ];
  });
  return svg(
    "svg",
    { viewBox: `0 0 ${chartWidth} ${height}`, class: "chart", role: "img", "data-testid": "speed-chart" },
    svgTitle("Mean seconds per minute of audio, per stage"),
    ...rows,
  );
}

function legend(entries: [string, string][]): HTMLElement {
  return h(
    "ul",
    { class: "legend" },
    ...entries.map(([key, label]) => h("li", {}, h("span", { class: `swatch fill-${key}` }), label)),
  );
}

function table(testId: string, heads: string[], rows: HTMLTableRowElement[], empty: string): HTMLElement {
  if (rows.length === 0) return h("p", { class: "muted", "data-testid": `${testId}-empty` }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "stats-table", "data-testid": testId },
      h("thead", {}, h("tr", {}, ...heads.map((head) => h("th", { scope: "col" }, head)))),
      h("tbody", {}, ...rows),
    ),
  );
}

function cell(field: string, text: string): HTMLTableCellElement {
  return h("td", { "data-field": field }, text);
}

function stageRows(stages: StageStats[]): HTMLTableRowElement[] {
  return stages.map((s) =>
    h(
      "tr",
      { "data-testid": "stage-row", "data-stage": stageKeys.find(([v]) => v === s.stage)?.[1] ?? "" },
      h("th", { scope: "row" }, stageName(s.stage)),
      cell("runs", String(s.runs)),
      cell("succeeded", String(s.succeeded)),
      cell("success-rate", percent(Number(s.succeeded), Number(s.runs))),
      cell("mean-seconds", s.succeeded > 0n ? seconds(s.meanSeconds) : "–"),
      cell("seconds-per-audio-minute", s.succeeded > 0n ? s.secondsPerAudioMinute.toFixed(1) : "–"),
    ),
  );
}

function jobRow(job: JobStats, testId: string, extra: HTMLTableCellElement): HTMLTableRowElement {
  return h(
    "tr",
    { "data-testid": testId, "data-job-id": job.jobId },
    h("th", { scope: "row" }, job.filename),
    cell("state", stateByProto[job.state] ?? "?"),
    cell("created", utcTime(job.created)),
    cell("seconds", seconds(job.seconds)),
    cell("audio", formatDuration(job.audioSeconds)),
    extra,
  );
}

function errorList(job: JobStats): HTMLTableCellElement {
  return h(
    "td",
    { "data-field": "errors" },
    h(
      "ul",
      { class: "error-list" },
      ...job.errors.map((e) => h("li", {}, `${stageName(e.stage)}: ${e.code}: ${e.message}`)),
    ),
  );
}

export class AnalyticsView {
  private readonly period: HTMLSelectElement;
  private readonly body: HTMLElement;
  private readonly scope: HTMLElement;
  private loading = 0;

  constructor(
    readonly element: HTMLElement,
    private readonly connection: Connection,
  ) {
    this.period = h(
      "select",
      { "data-testid": "stats-days", "aria-label": "Period" },
      ...periods.map((days) =>
        h("option", { value: days, selected: days === defaultPeriod }, `Last ${days} days`),
      ),
    );
    this.period.addEventListener("change", () => void this.load());
    const refresh = h("button", { type: "button", "data-testid": "stats-refresh" }, "Refresh");
    refresh.addEventListener("click", () => void this.load());
    this.scope = h("p", { class: "muted", "data-testid": "stats-scope" });
    this.body = h("div", { class: "analytics-body" });
    element.append(
      h(
        "div",
        { class: "analytics-head" },
        h("h2", {}, "Analytics"),
        h("span", { class: "spacer" }),
        this.period,
        refresh,
      ),
      this.scope,
      this.body,
    );
  }

  // Fetches the statistics again and redraws; a later call wins over one still under way.
  async load(): Promise<void> {
    const call = ++this.loading;
    this.element.dataset.state = "loading";
    try {
      const stats = await this.connection.call(() => client.getStats({ days: Number(this.period.value) }));
      if (call !== this.loading) return;
      this.render(stats);
      this.element.dataset.state = "loaded";
    } catch (e) {
      if (call !== this.loading) return;
      this.body.replaceChildren(
        h("p", { class: "item-error", role: "alert", "data-testid": "stats-error" }, errorText(e)),
      );
      this.element.dataset.state = "failed";
    }
  }

  private render(stats: Stats): void {
    const whose = stats.allCallers ? "Every caller's jobs" : "Your jobs only";
    this.scope.textContent = `${whose}, from ${utcDay(stats.since)} (UTC) to now.`;
    const total = (label: string, testId: string, value: string): HTMLElement =>
      h("div", { class: "total" }, h("dt", {}, label), h("dd", { "data-testid": testId }, value));
    const jobs = Number(stats.jobs);
    const ended = Number(stats.succeeded + stats.partial + stats.failed + stats.cancelled);
    this.body.replaceChildren(
      h(
        "dl",
        { class: "totals" },
        total("Jobs", "total-jobs", String(stats.jobs)),
        total("Succeeded", "total-succeeded", String(stats.succeeded)),
        total("Partial", "total-partial", String(stats.partial)),
        total("Failed", "total-failed", String(stats.failed)),
        total("Cancelled", "total-cancelled", String(stats.cancelled)),
        total("Success rate", "total-success-rate", percent(Number(stats.succeeded), ended)),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, `Jobs per day (${jobs} in all)`),
        jobsChart(stats),
        legend([
          ["succeeded", "Succeeded"],
          ["partial", "Partial"],
          ["failed", "Failed"],
          ["cancelled", "Cancelled"],
          ["other", "Queued, running or paused"],
        ]),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "Stages"),
        table(
          "stage-table",
          ["Stage", "Runs", "Succeeded", "Success rate", "Mean time", "Seconds per minute of audio"],
          stageRows(stats.stages),
          "No stage ran in this period.",
        ),
        h("h4", {}, "Mean seconds per minute of audio"),
        speedChart(stats.stages),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "Success rate per stage per day"),
        successChart(stats),
        legend(stageKeys.map(([, key, title]) => [key, title])),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "Slowest jobs"),
        table(
          "slowest-table",
          ["File", "State", "Created (UTC)", "Time", "Audio", "Seconds per second of audio"],
          stats.slowest.map((job) =>
            jobRow(
              job,
              "slowest-row",
              cell("ratio", job.audioSeconds > 0 ? (job.seconds / job.audioSeconds).toFixed(2) : "–"),
            ),
          ),
          "No finished job in this period.",
        ),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "Failed jobs"),
        table(
          "failed-table",
          ["File", "State", "Created (UTC)", "Time", "Audio", "Errors"],
          stats.failedJobs.map((job) => jobRow(job, "failed-row", errorList(job))),
          "No job failed in this period.",
        ),
      ),
    );
  }
}
