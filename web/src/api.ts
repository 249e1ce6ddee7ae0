// The Orchestrator client over grpc-web, served from the page's own origin, and how its errors are judged.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Orchestrator } from "./gen/roar/v1/orchestrator_pb";

export type OrchestratorClient = Client<typeof Orchestrator>;

export const client: OrchestratorClient = createClient(
  Orchestrator,
  createGrpcWebTransport({ baseUrl: window.location.origin }),
);

// A dead or restarting server shows up as a failed fetch (Unknown), a refused call (Unavailable) or a
// stream cut before its trailer (Internal): calling again once the server answers can cure these.
const transientCodes = new Set([Code.Unknown, Code.Unavailable, Code.Internal, Code.Aborted]);

export function isTransient(error: ConnectError): boolean {
  return transientCodes.has(error.code);
}

export function errorText(error: unknown): string {
  const connectError = ConnectError.from(error);
  return connectError.rawMessage || Code[connectError.code];
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// 250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s, with jitter so that many tabs do not call in step.
export function backoffMs(failures: number): number {
  const base = Math.min(5000, 250 * 2 ** Math.max(0, failures - 1));
  return base * (0.8 + 0.4 * Math.random());
}
