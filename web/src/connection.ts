// Whether the server answers: drives the connection badge, and lets calls wait for the server to be
// back instead of failing. Any call that fails in a way a retry can cure reports it here; a ping
// loop with backoff then probes the server until it answers again.
import { ConnectError } from "@connectrpc/connect";
import { backoffMs, isTransient, sleep } from "./api";

export type ConnectionState = "connected" | "reconnecting" | "disconnected";

// Failed probes in a row before "reconnecting" turns into "disconnected".
const failuresUntilDisconnected = 3;
// While connected, a quiet page still notices a dead server this soon.
const heartbeatMs = 5000;

export class Connection {
  state: ConnectionState = "reconnecting";
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

  // Skips the current backoff wait (the badge is a button).
  retry(): void {
    this.retryNow.abort();
  }

  private async probe(): Promise<void> {
    this.probing = true;
    for (let failures = 0; ; failures++) {
      if (failures > 0) {
        this.retryNow = new AbortController();
        await sleep(backoffMs(failures), this.retryNow.signal);
      }
      try {
        await this.ping();
        break;
      } catch {
        if (failures + 1 >= failuresUntilDisconnected || !navigator.onLine) this.setState("disconnected");
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
    if (state === this.state) return;
    this.state = state;
    for (const listener of this.listeners) listener(state);
  }
}
