// Rolling figures for the status bar: latency percentiles and results per second.

export class RollingStats {
  constructor(size = 100, windowMs = 2000) {
    this.size = size;
    this.windowMs = windowMs;
    /** @type {number[]} */ this.latencies = [];
    /** @type {number[]} */ this.shownAt = [];
  }

  add(latencyMs, now = performance.now()) {
    this.latencies.push(latencyMs);
    if (this.latencies.length > this.size) this.latencies.shift();
    this.shownAt.push(now);
  }

  percentile(p) {
    if (!this.latencies.length) return NaN;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  }

  fps(now = performance.now()) {
    while (this.shownAt.length && this.shownAt[0] < now - this.windowMs) this.shownAt.shift();
    return (this.shownAt.length * 1000) / this.windowMs;
  }
}
