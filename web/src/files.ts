// Job files over plain HTTP from the page's origin: GET /files/<job>/<name> answers Range requests
// (so <audio> streams a stem and can seek without fetching it whole), with ?download=1 it asks the
// browser to save the file, and /files/<job>.zip holds every file of the job. The API key travels in
// a cookie the page sets through POST /session (elements cannot send headers).
export function fileUrl(jobId: string, name: string, download = false): string {
  const path = `/files/${encodeURIComponent(jobId)}/${encodeURIComponent(name)}`;
  return download ? `${path}?download=1` : path;
}

export function allFilesUrl(jobId: string): string {
  return `/files/${encodeURIComponent(jobId)}.zip`;
}

// Gives the server the page's API key to keep in an HttpOnly cookie for /files (POST /session), or
// drops it ("": DELETE /session). Called on load and whenever the key changes. A key the server
// refuses sets no cookie: its file links then answer 401, as the calls do.
export function keepKeyForFiles(key: string): Promise<void> {
  const request: RequestInit = key
    ? { method: "POST", headers: { authorization: `Bearer ${key}` } }
    : { method: "DELETE" };
  return fetch("/session", { ...request, credentials: "same-origin" }).then(
    () => undefined,
    () => undefined, // the server is away: the next load or key gives it again
  );
}
