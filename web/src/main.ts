// The page: the connection badge, the drop zone, the job list and the selected song's details.
import { AnalyticsView } from "./analytics";
import { client, errorText } from "./api";
import { Connection, type ConnectionState } from "./connection";
import { keepKeyForFiles } from "./files";
import { Item, stateLabel, type ItemHost } from "./item";
import type { JobView } from "./jobstate";
import { unlockSounds } from "./sound";
import {
  loadApiKey,
  loadJobs,
  notifyWanted,
  saveApiKey,
  setNotifyWanted,
  setSoundsWanted,
  soundsWanted,
} from "./store";

function byId<T extends HTMLElement>(id: string): T {
  return document.getElementById(id) as T;
}

const badgeLabels: Record<ConnectionState, string> = {
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected — retrying",
  "key-needed": "Key needed",
};

// The file links and players send the key as a cookie (elements cannot send headers).
void keepKeyForFiles(loadApiKey());
const connection = new Connection(() => client.getServerInfo({}));
const badge = byId<HTMLButtonElement>("connection-badge");
connection.onChange((state) => {
  badge.dataset.state = state;
  badge.textContent = badgeLabels[state];
  showKeyForm(state === "key-needed");
});
badge.addEventListener("click", () => connection.retry());

// The server answered Unauthenticated: ask for a key, keep it in localStorage, and try again with it.
// Every call waits meanwhile. An empty key means "try without one".
function showKeyForm(shown: boolean): void {
  const form = byId<HTMLFormElement>("key-form");
  form.hidden = !shown;
  if (!shown) return;
  byId("key-message").textContent = loadApiKey()
    ? `The server refused this key (${connection.keyProblem}). Enter another one:`
    : "This server needs an API key. Enter the one its admin gave you:";
  const input = byId<HTMLInputElement>("key-input");
  input.value = "";
  input.focus();
}

byId<HTMLFormElement>("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveApiKey(byId<HTMLInputElement>("key-input").value.trim());
  connection.retry();
  // Another key may own other jobs.
  void loadServerJobs();
});

const serverInfo = connection.call(() => client.getServerInfo({}), Number.POSITIVE_INFINITY);
serverInfo.then(
  (info) => (byId("server-version").textContent = `Roar server ${info.version}`),
  (e) => (byId("server-version").textContent = `This server does not answer as Roar: ${errorText(e)}`),
);

const jobList = byId<HTMLUListElement>("job-list");
const details = byId<HTMLElement>("details");
const items: Item[] = [];

function refreshEmpty(): void {
  byId("job-list-empty").hidden = items.length > 0;
  byId("details-empty").hidden = items.length > 0;
}

const host: ItemHost = {
  connection,
  serverInfo,
  select(item) {
    for (const other of items) other.setSelected(other === item);
  },
  removed(item) {
    items.splice(items.indexOf(item), 1);
    if (items.length > 0 && items.every((other) => other.detail.hidden)) host.select(items[0]);
    refreshEmpty();
  },
  finished: notifyFinished,
};

function add(item: Item, first: boolean): void {
  if (first) {
    items.unshift(item);
    jobList.prepend(item.entry);
  } else {
    items.push(item);
    jobList.append(item.entry);
  }
  details.append(item.detail);
  refreshEmpty();
}

for (const view of loadJobs()) add(Item.fromView(host, view), false);
if (items.length > 0) host.select(items[0]);
refreshEmpty();

function itemOf(jobId: string): Item | undefined {
  return items.find((item) => item.view?.jobId === jobId);
}

// The caller's jobs on the server (newest first, one page) join the ones this browser remembers.
async function loadServerJobs(): Promise<void> {
  try {
    const { jobs } = await connection.call(() => client.listJobs({ pageSize: jobsListed }));
    for (const job of jobs) if (!itemOf(job.jobId)) add(Item.fromJob(host, job), false);
    if (items.length > 0 && items.every((item) => item.detail.hidden)) host.select(items[0]);
  } catch {
    // A server without ListJobs, or a key that may not list: the remembered jobs still show.
  }
}

// #job=<id> opens that job, fetched from the server when this browser has never seen it.
async function openLinkedJob(): Promise<void> {
  const match = /^#job=(.+)$/.exec(window.location.hash);
  if (!match) return;
  const jobId = decodeURIComponent(match[1]);
  const linkError = byId("job-link-error");
  linkError.hidden = true;
  let item = itemOf(jobId);
  if (!item) {
    try {
      const job = await connection.call(() => client.getJob({ jobId }), Number.POSITIVE_INFINITY);
      item = itemOf(jobId) ?? Item.fromJob(host, job);
      if (!items.includes(item)) add(item, true);
    } catch (e) {
      linkError.textContent = `Cannot open job ${jobId}: ${errorText(e)}`;
      linkError.hidden = false;
      return;
    }
  }
  host.select(item);
}

function addFiles(files: FileList | null | undefined): void {
  const dropped = [...(files ?? [])];
  const added = dropped.reverse().map((file) => {
    const item = Item.fromFile(host, file);
    add(item, true);
    return item;
  });
  if (added.length > 0) host.select(added[added.length - 1]);
}

const jobsListed = 50;
void loadServerJobs();

const fileInput = byId<HTMLInputElement>("file-input");
fileInput.addEventListener("change", () => {
  addFiles(fileInput.files);
  fileInput.value = "";
});

// Files may be dropped anywhere on the page; the drop zone lights up while they are dragged over it.
const dropZone = byId<HTMLElement>("drop-zone");
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) dropZone.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  addFiles(event.dataTransfer?.files);
});

// Notifications are asked for on a click only, never on load.
const notifyButton = byId<HTMLButtonElement>("notify-button");

function notificationsOn(): boolean {
  return notifyWanted() && Notification.permission === "granted";
}

function showNotifyButton(): void {
  notifyButton.hidden = false;
  notifyButton.textContent = notificationsOn() ? "Notifications on" : "Notify me when done";
  notifyButton.setAttribute("aria-pressed", String(notificationsOn()));
  notifyButton.disabled = Notification.permission === "denied";
}

if ("Notification" in window) {
  showNotifyButton();
  notifyButton.addEventListener("click", async () => {
    if (notificationsOn()) setNotifyWanted(false);
    else setNotifyWanted((await Notification.requestPermission()) === "granted");
    showNotifyButton();
  });
}

// Sound effects: off until turned on here; the click also lets the browser start playing audio.
const soundsButton = byId<HTMLButtonElement>("sounds-button");

function showSoundsButton(): void {
  soundsButton.textContent = soundsWanted() ? "Sounds on" : "Sounds off";
  soundsButton.setAttribute("aria-pressed", String(soundsWanted()));
}

showSoundsButton();
soundsButton.addEventListener("click", () => {
  setSoundsWanted(!soundsWanted());
  if (soundsWanted()) unlockSounds();
  showSoundsButton();
});

function notifyFinished(view: JobView): void {
  if (!("Notification" in window) || !notificationsOn()) return;
  new Notification(`Roar: ${view.filename}`, { body: stateLabel(view), tag: view.jobId });
}

// Two views: the songs, and #analytics, whose figures are fetched afresh each time it is opened.
const analytics = new AnalyticsView(byId("analytics"), connection);

function showView(): void {
  const view = window.location.hash === "#analytics" ? "analytics" : "songs";
  byId("songs").hidden = view !== "songs";
  analytics.element.hidden = view !== "analytics";
  for (const link of document.querySelectorAll<HTMLAnchorElement>("[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "analytics") void analytics.load();
  else void openLinkedJob();
}

window.addEventListener("hashchange", showView);
showView();
