// Whether the server answers: drives the connection badge, and lets calls wait for the server to be
// back instead of failing. Any call that fails in a way a retry can cure reports it here; a ping
// loop with backoff then probes the server until it answers again. A server that wants an API key
// (Unauthenticated) puts it in "key-needed" until the user gives a key it accepts.
import { Code, ConnectError } from "@connectrpc/connect";
import { backoffMs, isTransient, sleep } from "./api";

export type ConnectionState = "connected" | "reconnecting" | "disconnected" | "key-needed";

// Failed probes in a row before "reconnecting" turns into "disconnected".
const failuresUntilDisconnected = 3;
// While connected, a quiet page still notices a dead server this soon.
const heartbeatMs = 5000;

export class Connection {
  state: ConnectionState = "reconnecting";
  // Why the server refused the last key (or its absence), in its own words.
  keyProblem = "";
  private probing = false;
  private waiters: (() => void)[] = [];
  private listeners: ((state: ConnectionState) => void)[] = [];
  private retryNow = new AbortController();

  constructor(private readonly ping: () => Promise<unknown>) {
    window.addEventListener("offline", () => this.failed());
    window.addEventListener("online", () => this.retry());
    void this.probe();
    void this.heartbeat();
  }

  onChange(listener: (state: ConnectionState) => void): void {
    this.listeners.push(listener);
    listener(this.state);
  }

  // Resolves at once while connected, else once the server answers again.
  ready(): Promise<void> {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  // Runs a unary call, waiting out outages. Gives up on an error a retry cannot cure, or after
  // maxFailures failures of this call while the server otherwise answers.
  async call<T>(run: () => Promise<T>, maxFailures = 6): Promise<T> {
    for (let failures = 0; ;) {
      await this.ready();
      try {
        const result = await run();
        this.succeeded();
        return result;
      } catch (e) {
        const error = ConnectError.from(e);
        if (!isTransient(error) || ++failures >= maxFailures) throw error;
        this.failed();
        await sleep(backoffMs(failures));
      }
    }
  }

  succeeded(): void {
    if (this.state === "connected") return;
    this.setState("connected");
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  failed(): void {
    if (this.state === "connected") this.setState("reconnecting");
    if (!this.probing) void this.probe();
  }

  // Skips the current backoff wait (the badge is a button), or the wait for a key once one is given.
  retry(): void {
    this.retryNow.abort();
  }

  private async probe(): Promise<void> {
    this.probing = true;
    for (let failures = 0; ; failures++) {
      if (failures > 0) {
        this.retryNow = new AbortController();
        if (this.state === "key-needed") await untilAborted(this.retryNow.signal);
        else await sleep(backoffMs(failures), this.retryNow.signal);
      }
      try {
        await this.ping();
        break;
      } catch (e) {
        const error = ConnectError.from(e);
        if (error.code === Code.Unauthenticated) {
          this.keyProblem = error.rawMessage;
          this.setState("key-needed");
        } else if (failures + 1 >= failuresUntilDisconnected || !navigator.onLine) {
          this.setState("disconnected");
        } else if (this.state === "key-needed") {
          this.setState("reconnecting");
        }
      }
    }
    this.probing = false;
    this.succeeded();
  }

  private async heartbeat(): Promise<void> {
    for (;;) {
      await sleep(heartbeatMs);
      if (this.state !== "connected") continue;
      try {
        await this.ping();
      } catch {
        this.failed();
      }
    }
  }

  private setState(state: ConnectionState): void {
    // Every refused key is news to the key form, even when a key was already wanted.
    if (state === this.state && state !== "key-needed") return;
    this.state = state;
    for (const listener of this.listeners) listener(state);
  }
}

function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}
