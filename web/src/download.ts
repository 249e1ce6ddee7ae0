// An artifact whole in memory over the server-streaming Download call: chunks are gathered into a
// Blob, resuming from the bytes already received when the stream breaks. Downloads to disk are plain
// links to /files (files.ts).
import { Code, ConnectError } from "@connectrpc/connect";
import { backoffMs, client, isTransient, sleep } from "./api";
import type { Connection } from "./connection";

const maxFailures = 6;

export async function fetchArtifact(
  connection: Connection,
  jobId: string,
  name: string,
  contentType: string,
  onProgress: (received: number, total: number) => void = () => {},
): Promise<Blob> {
  const chunks: Uint8Array[] = [];
  let received = 0;
  let total = -1;
  for (let failures = 0; ;) {
    await connection.ready();
    try {
      for await (const chunk of client.download({ jobId, name, offset: BigInt(received) })) {
        connection.succeeded();
        chunks.push(chunk.data);
        received += chunk.data.length;
        total = Number(chunk.totalSize);
        onProgress(received, total);
      }
      // An empty file sends no chunk at all.
      if (total < 0 || received === total) break;
      throw new ConnectError(`the download of ${name} ended early`, Code.Unavailable);
    } catch (e) {
      const error = ConnectError.from(e);
      if (!isTransient(error) || ++failures >= maxFailures) throw error;
      connection.failed();
      await sleep(backoffMs(failures));
    }
  }
  return new Blob(chunks as BlobPart[], { type: contentType || "application/octet-stream" });
}
