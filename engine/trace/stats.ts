/** Mean and standard error of a trace cell's per-sample probabilities. */

export interface SampleMean {
  mean: number;
  /** Standard error of the mean: sample standard deviation (n − 1) / √n; 0 for one sample. */
  stderr: number;
}

/** Mean and standard error of xs[from], xs[from + 1], …, xs[from + n − 1], in float64. */
export function sampleMean(xs: ArrayLike<number>, from = 0, n = xs.length - from): SampleMean {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += xs[from + i];
  const mean = sum / n;
  if (n < 2) return { mean, stderr: 0 };
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (xs[from + i] - mean) ** 2;
  return { mean, stderr: Math.sqrt(ss / (n - 1) / n) };
}
