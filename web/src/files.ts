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
