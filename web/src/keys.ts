// The player's keys, while it has focus or the lyrics are over the whole screen.
export type PlayerAction =
  | "play-pause"
  | "back"
  | "forward"
  | "guide-up"
  | "guide-down"
  | "faster"
  | "slower"
  | "key-down"
  | "key-up"
  | "fullscreen"
  | "leave-fullscreen";

const actions: Record<string, PlayerAction> = {
  " ": "play-pause",
  ArrowLeft: "back",
  ArrowRight: "forward",
  ArrowUp: "guide-up",
  ArrowDown: "guide-down",
  "+": "faster",
  // "+" without Shift on most layouts.
  "=": "faster",
  "-": "slower",
  "[": "key-down",
  "]": "key-up",
  f: "fullscreen",
  F: "fullscreen",
  Escape: "leave-fullscreen",
};

export const keyHelp =
  "Keys: Space play/pause · ←/→ 5 s · ↑/↓ guide vocal · +/− tempo · [/] key · F full screen · Esc leave it";

// What a key press asks of the player, unless the element it went to keeps it: the audio controls and
// menus their keys, a button Space and Enter, a slider its arrows.
export function playerAction(event: KeyboardEvent): PlayerAction | undefined {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return undefined;
  if (target instanceof HTMLSelectElement || target instanceof HTMLAudioElement) return undefined;
  if (target instanceof HTMLButtonElement && (event.key === " " || event.key === "Enter")) return undefined;
  if (target instanceof HTMLInputElement && event.key.startsWith("Arrow")) return undefined;
  return actions[event.key];
}
