// The Orchestrator client over grpc-web, served from the page's own origin, and how its errors are judged.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Orchestrator } from "./gen/roar/v1/orchestrator_pb";
import { loadApiKey } from "./store";

export type OrchestratorClient = Client<typeof Orchestrator>;

// The API key the user gave, on every call (read each time, so a new key applies at once).
const withApiKey: Interceptor = (next) => (request) => {
  const key = loadApiKey();
  if (key) request.header.set("authorization", `Bearer ${key}`);
  return next(request);
};

export const client: OrchestratorClient = createClient(
  Orchestrator,
  createGrpcWebTransport({ baseUrl: window.location.origin, interceptors: [withApiKey] }),
);

// A dead or restarting server shows up as a failed fetch (Unknown), a refused call (Unavailable) or a
// stream cut before its trailer (Internal): calling again once the server answers can cure these. So
// can a missing or refused API key (Unauthenticated): the connection waits for the user to give one.
const transientCodes = new Set([
  Code.Unknown,
  Code.Unavailable,
  Code.Internal,
  Code.Aborted,
  Code.Unauthenticated,
]);

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
