// Per-function figures computed in the browser from the live invocation messages: the
// API's counters are totals since start, these are "right now".

const WINDOW_MS = 60_000;
const KEEP = 400;

export class Stats {
  constructor() {
    this.byFn = new Map();
    this.since = Date.now();
  }

  record(inv) {
    let ring = this.byFn.get(inv.function);
    if (!ring) this.byFn.set(inv.function, (ring = []));
    ring.push({ts: inv.ts || Date.now(), us: inv.duration_us || 0, err: !!inv.error});
    if (ring.length > KEEP) ring.splice(0, ring.length - KEEP);
  }

  // summary: rate (per second) and error share over the last minute, p50/p95 latency,
  // and the last 60 durations for the sparkline.
  summary(name) {
    const ring = this.byFn.get(name) || [];
    const now = Date.now();
    const recent = ring.filter((r) => now - r.ts <= WINDOW_MS);
    // Observed time: since the page opened, or since the oldest message in the window
    // when the stream carries older timestamps; at most the window.
    const from = Math.min(this.since, recent.length ? recent[0].ts : now);
    const span = Math.max(1000, Math.min(WINDOW_MS, now - from)) / 1000;
    const errs = recent.filter((r) => r.err).length;
    const sorted = recent.map((r) => r.us).sort((a, b) => a - b);
    const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);
    const last = ring.slice(-60);
    return {
      count: recent.length,
      rate: recent.length / span,
      errRate: recent.length ? errs / recent.length : 0,
      p50: pct(0.5),
      p95: pct(0.95),
      series: last.map((r) => r.us),
      flags: last.map((r) => r.err),
    };
  }
}
