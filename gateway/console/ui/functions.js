// Function cards: counters from GET /api/v1/functions, the rate, error share and
// latency sparkline from the live invocations (stats.js); the rate and error share from
// the counters once two samples of them are in.

import {$, h, micros, num, toast} from './dom.js';
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
        const d = cur.inv - prev.inv;
        cur.rate = d / ((now - prev.t) / 1000);
        cur.errRate = d ? (cur.err - prev.err) / d : 0;
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
        h('span', {class: 'badge'}, `v${fn.version}`)),
      h('div', {class: 'triggers'}, (fn.triggers || []).map((t) => h('span', {class: 'trigger'}, t))),
      metrics, chart, foot);
    this.cards.set(fn.name, {fn, metrics, chart, foot});
    return el;
  }

  // tick redraws the live figures of every card; cheap enough to run every 2 s.
  tick() {
    for (const {fn, metrics, chart, foot} of this.cards.values()) {
      const s = this.stats.summary(fn.name);
      const c = fn.counters || {};
      // The counters see every invocation; the live stream may be thinned out by the
      // gateway's rate cap for this browser.
      const sample = this.samples.get(fn.name);
      if (sample && sample.rate != null) {
        s.rate = sample.rate;
        s.errRate = sample.errRate;
      }
      metrics.replaceChildren(
        metric(s.rate < 10 ? s.rate.toFixed(2) : s.rate.toFixed(0), 'per second', false, 'fn-rate'),
        metric(`${(s.errRate * 100).toFixed(s.errRate && s.errRate < 0.1 ? 1 : 0)}%`, 'errors', s.errRate > 0, 'fn-errors'),
        metric(micros(s.p95), 'p95 latency', false, 'fn-p95'));
      chart.replaceChildren(s.series.length > 1
        ? spark(s.series, {flags: s.flags, min: 0, label: `latency of the last ${s.series.length} invocations`})
        : h('div', {class: 'spark-empty'}, 'no invocations seen yet'));
      const mean = c.invocations ? micros(c.duration_us_sum / c.invocations) : '–';
      foot.replaceChildren(
        h('span', {}, `${num(c.invocations ?? 0)} invocations · ${num(c.errors ?? 0)} errors`),
        h('span', {}, `mean ${mean}`));
    }
  }
}

function metric(v, k, bad, testid) {
  return h('div', {class: 'metric'}, h('div', {class: `v${bad ? ' bad' : ''}`, 'data-testid': testid}, v), h('div', {class: 'k'}, k));
}
