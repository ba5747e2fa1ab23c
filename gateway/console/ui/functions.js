// Function cards: counters from GET /api/v1/functions, the rate, error share and
// latency sparkline from the live invocations (stats.js).

import {$, h, micros, num, toast} from './dom.js';
import {get} from './api.js';
import {spark} from './spark.js';

export class FunctionsView {
  constructor(stats) {
    this.stats = stats;
    this.list = [];
    this.cards = new Map();
  }

  async refresh() {
    try {
      const data = await get('functions');
      this.list = (data && data.functions) || [];
    } catch (err) {
      toast(`Functions: ${err.message}`);
      return;
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
