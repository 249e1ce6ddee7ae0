// What the page and the pitch-shifting worklet (pitch-worklet.ts, a bundle of its own) share.
export const pitchShifterName = "pitch-shifter";
// Built next to app.js by web/build.mjs; relative, so that it resolves against the page's own URL.
export const pitchWorkletUrl = "pitch-worklet.js";
