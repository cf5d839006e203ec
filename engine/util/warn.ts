/**
 * Warnings the engine gives while it carries on (a damaged cache file recomputed, a record
 * skipped): one line on stderr, which the CLI shows and the engine process logs (the
 * extension's output channel). Tests and embedders may redirect them.
 */
let sink: (message: string) => void = (m) => {
  try {
    process.stderr.write(`factlens: warning: ${m}\n`);
  } catch {
    /* stderr gone */
  }
};

export function warn(message: string): void {
  sink(message);
}

/** Replaces where warnings go; returns the previous sink (to restore). */
export function setWarningSink(fn: (message: string) => void): (message: string) => void {
  const old = sink;
  sink = fn;
  return old;
}
