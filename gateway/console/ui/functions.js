// Function cards. The API's counters (GET /api/v1/functions) see every invocation since
// the gateway started, so they give the error share and, from two samples, the rate;
// the live invocations (stats.js), which the gateway may thin out for this browser, give
// the latency percentile and sparkline, and the rate until two samples are in. A function
// that never ran shows that, not figures made of nothing.

import {$, h, bytes, count, micros, toast} from './dom.js';
import {get} from './api.js';
import {spark} from './spark.js';

export class FunctionsView {
  constructor(stats) {
    this.stats = stats;
    this.list = [];
    this.cards = new Map();
    // Counter samples per function, for rates the live stream cannot give once the
    // gateway skips messages for this browser (its per-console rate cap).
    this.samples = new Map(); // name -> {t, inv, err, rate, errRate}
  }

  async refresh() {
    try {
      const data = await get('functions');
      this.list = (data && data.functions) || [];
    } catch (err) {
      toast(`Functions: ${err.message}`);
      return;
    }
    const now = Date.now();
    for (const fn of this.list) {
      const c = fn.counters || {};
      const prev = this.samples.get(fn.name);
      const cur = {t: now, inv: c.invocations || 0, err: c.errors || 0};
      if (prev && now - prev.t >= 1000 && cur.inv >= prev.inv) {
        cur.rate = (cur.inv - prev.inv) / ((now - prev.t) / 1000);
      }
      this.samples.set(fn.name, cur);
    }
    const root = $('fn-cards');
    this.cards.clear();
    root.replaceChildren(...this.list.map((fn) => this.card(fn)));
    $('fn-empty').hidden = this.list.length > 0;
    this.tick();
  }

  card(fn) {
    const metrics = h('div', {class: 'metrics'});
    const chart = h('div', {class: 'chart'});
    const foot = h('div', {class: 'card-foot'});
    const el = h('a', {class: 'card', href: `#/fn/${encodeURIComponent(fn.name)}`, 'data-testid': 'fn-card', dataset: {name: fn.name}},
      h('div', {class: 'card-head'},
        h('span', {class: 'card-title'}, fn.name),
        h('span', {class: 'badge'}, `v${fn.version}`),
        fn.managed_by === 'fleet' && h('span', {class: 'badge', 'data-testid': 'fn-fleet',
          title: `deployed by the fleet: ${fn.fleet_target} revision ${fn.revision}; a deploy here needs force`}, `fleet r${fn.revision}`)),
      h('div', {class: 'triggers'}, (fn.triggers || []).map((t) => h('span', {class: 'trigger'}, t))),
      metrics, chart, foot);
    this.cards.set(fn.name, {fn, metrics, chart, foot});
    return el;
  }

  // tick redraws the live figures of every card; cheap enough to run every 2 s.
  tick() {
    for (const {fn, metrics, chart, foot} of this.cards.values()) {
      const c = fn.counters || {};
      const inv = c.invocations || 0;
      const errs = c.errors || 0;
      foot.replaceChildren(
        h('span', {'data-testid': 'fn-counts'}, `${count(inv, 'invocation')} · ${count(errs, 'error')}`
          + (c.dropped ? ` · ${count(c.dropped, 'dropped event')}` : '')),
        h('span', {}, inv ? `mean ${micros(c.duration_us_sum / inv)}` : ''),
        fn.kv ? h('span', {'data-testid': 'fn-kv', class: fn.kv.bytes > 0.9 * fn.kv.quota_bytes || fn.kv.keys > 0.9 * fn.kv.quota_keys ? 'state-err' : '',
          title: `gateway.kv_quota: ${count(fn.kv.quota_keys, 'key')}, ${bytes(fn.kv.quota_bytes)}`},
        `KV ${count(fn.kv.keys, 'key')}, ${bytes(fn.kv.bytes)} of ${bytes(fn.kv.quota_bytes)}`) : '');
      if (!inv) {
        metrics.replaceChildren(h('div', {class: 'metric none', 'data-testid': 'fn-none'}, 'no invocations yet'));
        chart.replaceChildren();
        continue;
      }
      const s = this.stats.summary(fn.name);
      const sample = this.samples.get(fn.name);
      const rate = sample && sample.rate != null ? sample.rate : s.count ? s.rate : null;
      const share = errs / inv;
      metrics.replaceChildren(
        metric(rate == null ? '–' : rate < 10 ? rate.toFixed(2) : rate.toFixed(0), 'per second', false, 'fn-rate'),
        metric(percent(share), 'errors', share > 0, 'fn-errors'),
        s.p95 == null
          ? metric(micros(c.duration_us_sum / inv), 'mean latency', false, 'fn-mean')
          : metric(micros(s.p95), 'p95 latency', false, 'fn-p95'));
      chart.replaceChildren(s.series.length > 1
        ? spark(s.series, {flags: s.flags, min: 0, label: `latency of the last ${count(s.series.length, 'invocation')}`})
        : h('div', {class: 'spark-empty'}, 'no invocations seen since this page opened'));
    }
  }
}

// percent writes a share without rounding a failure away: 100%, 0.3%, 0%.
function percent(share) {
  if (share === 0 || share === 1) return `${share * 100}%`;
  const p = share * 100;
  return `${p < 0.1 ? '<0.1' : p < 10 ? p.toFixed(1) : Math.min(99, Math.round(p))}%`;
}

function metric(v, k, bad, testid) {
  return h('div', {class: 'metric'}, h('div', {class: `v${bad ? ' bad' : ''}`, 'data-testid': testid}, v), h('div', {class: 'k'}, k));
}
