// Outbox and sinks: GET /api/v1/sync, refreshed on a timer and whenever a sink reports a
// transition on the live stream. The transitions list opens with the ones the gateway
// kept from before the page opened (GET /api/v1/history).

import {$, h, ago, bytes, num, stateClass, clock, toast} from './dom.js';
import {get} from './api.js';

export class SyncView {
  constructor() {
    this.seen = new Set(); // transitions shown, as ts|sink|state: history and stream overlap
  }

  async refresh() {
    let data;
    try {
      data = await get('sync');
    } catch (err) {
      toast(`Sync: ${err.message}`);
      return;
    }
    const ob = (data && data.outbox) || {};
    const sinks = (data && data.sinks) || [];
    const cards = [this.outbox(ob, nowhere(sinks, (data && data.unrouted) || [])), ...sinks.map((s) => this.sink(s))];
    $('sync-cards').replaceChildren(...cards);
  }

  outbox(ob, warning) {
    const used = ob.max_bytes ? Math.min(100, (100 * (ob.bytes || 0)) / ob.max_bytes) : 0;
    return h('div', {class: 'card', 'data-testid': 'outbox-card'},
      h('div', {class: 'card-head'}, h('span', {class: 'card-title'}, 'Outbox')),
      h('div', {class: 'stat-grid'},
        stat(num(ob.pending ?? 0), 'pending', 'outbox-pending'),
        stat(bytes(ob.bytes ?? 0), 'stored'),
        stat(num(ob.dropped ?? 0), 'dropped', '', ob.dropped > 0)),
      ob.max_bytes ? h('div', {}, h('div', {class: 'bar', title: `${used.toFixed(1)}% of ${bytes(ob.max_bytes)}`},
        h('i', {style: `width:${used.toFixed(1)}%`})),
        h('div', {class: 'card-foot'}, h('span', {}, `${used.toFixed(1)}% of ${bytes(ob.max_bytes)}`))) : null,
      warning ? h('div', {class: 'last-err', 'data-testid': 'sync-unrouted'}, warning) : null);
  }

  sink(s) {
    return h('div', {class: 'card', 'data-testid': 'sink-card', dataset: {name: s.name}},
      h('div', {class: 'card-head'},
        h('span', {class: 'card-title'}, s.name),
        s.kind ? h('span', {class: 'muted', 'data-testid': 'sink-kind'}, s.kind) : null,
        h('span', {class: 'grow'}),
        h('span', {class: `pill ${stateClass(s.state)}`, 'data-testid': 'sink-state'}, s.state || 'unknown')),
      s.streams ? h('div', {class: 'triggers'}, s.streams.map((st) => h('span', {class: 'trigger'}, st))) : null,
      h('div', {class: 'stat-grid'},
        stat(lag(s.lag_ms), 'lag', 'sink-lag', s.lag_ms > 60_000),
        stat(num(s.pending ?? 0), 'pending'),
        stat(num(s.delivered ?? 0), 'delivered')),
      h('div', {class: 'card-foot'},
        h('span', {}, `last success ${ago(s.last_success)}`),
        h('span', {class: s.dropped ? 'state-err' : ''}, `${num(s.dropped ?? 0)} dropped`)),
      s.last_error ? h('div', {class: 'last-err'}, `${s.last_error_at ? `${ago(s.last_error_at)}: ` : ''}${s.last_error}`) : null);
  }

  // history takes the transitions the gateway kept (live sync messages, oldest first).
  history(list) {
    for (const m of list) this.live(m);
  }

  // live logs a sink transition.
  live(m) {
    const key = `${m.ts}|${m.sink}|${m.state}`;
    if (this.seen.has(key)) return;
    if (this.seen.size > 1000) this.seen.clear(); // the list keeps 100 anyway
    this.seen.add(key);
    const list = $('sync-log');
    list.querySelector('.muted')?.remove();
    const li = h('li', {'data-testid': 'sync-transition', dataset: {ts: m.ts}}, h('span', {class: 'time'}, clock(m.ts)),
      h('b', {}, m.sink), ' → ', h('span', {class: `state-${stateClass(m.state)}`}, m.state),
      m.error ? ` · ${m.error}` : '');
    // Newest first, whichever arrives first: the stream or the older history.
    list.insertBefore(li, [...list.children].find((c) => Number(c.dataset.ts) < m.ts) || null);
    while (list.childElementCount > 100) list.lastElementChild.remove();
  }
}

// nowhere says in a sentence which records no sink takes, or that there is no sink.
function nowhere(sinks, unrouted) {
  if (unrouted.length) {
    const n = unrouted.reduce((sum, u) => sum + u.pending, 0);
    const streams = unrouted.map((u) => `${u.stream} (${num(u.pending)})`).join(', ');
    return `${num(n)} ${n === 1 ? 'record has' : 'records have'} nowhere to go: no sink takes ${streams}. ` +
      'Add a sink for them under sync.sinks; until then they wait here until the outbox drops them.';
  }
  if (!sinks.length) return 'No sink is configured: records emitted to the cloud wait here until the outbox drops them.';
  return '';
}

function lag(ms) {
  if (!ms) return '0 s';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

function stat(v, k, testid, bad) {
  return h('div', {class: 'metric'}, h('div', {class: `v${bad ? ' bad' : ''}`, 'data-testid': testid || null}, v), h('div', {class: 'k'}, k));
}
