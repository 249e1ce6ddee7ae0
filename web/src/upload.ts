// Resumable chunked upload over unary calls (browsers cannot stream a request over grpc-web):
// StartUpload, UploadChunk at offset = committed until every byte is in, FinishUpload. After a failed
// chunk the server is asked how much it committed (GetUpload) and the upload goes on from there, so
// a dropped connection or a server restart costs at most one chunk.
import { Code, ConnectError } from "@connectrpc/connect";
import { backoffMs, client, isTransient, sleep } from "./api";
import type { Connection } from "./connection";
import type { Upload } from "./gen/roar/v1/orchestrator_pb";
import { rememberUpload, rememberedUpload } from "./store";

// Small enough that the progress bar moves smoothly and a lost chunk costs little.
const preferredChunkBytes = 512 * 1024;
// Failures of one chunk in a row, while the server otherwise answers, before giving up.
const maxChunkFailures = 6;

async function startOrResume(connection: Connection, file: File): Promise<Upload> {
  const known = rememberedUpload(file);
  if (known) {
    try {
      return await connection.call(() => client.getUpload({ uploadId: known }));
    } catch (e) {
      // Gone from the server (expired, or a fresh data dir): start over.
      if (ConnectError.from(e).code !== Code.NotFound) throw e;
    }
  }
  const upload = await connection.call(() =>
    client.startUpload({
      filename: file.name,
      size: BigInt(file.size),
      contentType: file.type,
    }),
  );
  rememberUpload(file, upload.uploadId);
  return upload;
}

export async function uploadFile(
  connection: Connection,
  file: File,
  onProgress: (committed: number) => void,
  signal: AbortSignal,
): Promise<Upload> {
  let upload = await startOrResume(connection, file);
  const chunkBytes = Math.min(preferredChunkBytes, upload.maxChunkBytes || preferredChunkBytes);
  let failures = 0;
  onProgress(Number(upload.committed));
  while (!upload.finished && upload.committed < upload.size) {
    signal.throwIfAborted();
    const offset = Number(upload.committed);
    const data = new Uint8Array(await file.slice(offset, offset + chunkBytes).arrayBuffer());
    await connection.ready();
    try {
      upload = await client.uploadChunk(
        { uploadId: upload.uploadId, offset: upload.committed, data },
        { signal },
      );
      connection.succeeded();
      failures = 0;
    } catch (e) {
      const error = ConnectError.from(e);
      if (!isTransient(error) || ++failures >= maxChunkFailures) throw error;
      connection.failed();
      await sleep(backoffMs(failures), signal);
      const uploadId = upload.uploadId;
      upload = await connection.call(() => client.getUpload({ uploadId }, { signal }));
    }
    onProgress(Number(upload.committed));
  }
  if (!upload.finished) {
    const uploadId = upload.uploadId;
    upload = await connection.call(() => client.finishUpload({ uploadId }, { signal }));
  }
  return upload;
}
