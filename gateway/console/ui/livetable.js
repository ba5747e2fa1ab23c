// The live event table: newest first, pause (messages are held, not lost), a text
// filter and type toggles applied in the browser, and the server's "skipped" markers.

import {$, h, clock, count, micros, short} from './dom.js';

const TYPES = ['event', 'invocation', 'log', 'sync', 'sensor', 'firmware'];
const KEEP = 2000; // messages kept for re-filtering
const SHOWN = 400; // rows in the DOM

function cells(m) {
  switch (m.type) {
    case 'event':
      if (m.pin) return [m.source, m.topic, `${m.edge || 'edge'} · level ${m.level}`, false];
      return [m.source, m.topic, (m.truncated ? '(cut) ' : '') + short(m.payload, 300), false];
    case 'invocation':
      return [`v${m.version}`, m.function,
        m.error ? `✖ ${m.error}` : `${micros(m.duration_us)} → ${short(m.result, 240)}`, !!m.error];
    case 'log':
      return [m.level, m.function, `${m.file ? `${m.file}:${m.line}  ` : ''}${m.msg}`, m.level === 'error' || !!m.dropped];
    case 'sync':
      return ['sink', m.sink, `${m.state}${m.error ? ` · ${m.error}` : ''}${m.pending != null ? ` · ${m.pending} pending` : ''}`,
        !!m.error];
    case 'sensor':
      return ['sensor', m.sensor, Object.entries(m.values || {}).map(([k, v]) => `${k}=${round(v)}`).join('  '), false];
    case 'firmware':
      return [m.status, m.device, `${m.version}${m.error ? ` · ${m.error}` : ''}`, !!m.error];
    default:
      return ['', '', short(m, 300), false];
  }
}

// round keeps sensor readings readable: 4 significant digits, no float noise.
function round(v) {
  return typeof v === 'number' ? String(Number(v.toPrecision(4))) : String(v);
}

// testCase is a live event as a case of a test file (NAME_test.yaml, moongate test): its
// event, and the result its first run returned when that run is still in the table. JSON
// is YAML, so values go as JSON.
export function testCase(m, all) {
  const j = JSON.stringify;
  let ev;
  if (m.source === 'gpio') ev = `gpio: {pin: ${j(m.pin)}, level: ${m.level}, edge: ${j(m.edge || '')}}`;
  else if (m.source === 'sensor') ev = `sensor: {name: ${j(m.sensor)}, values: ${j(m.values || {})}}`;
  else if (m.source === 'timer') ev = `timer: ${j(m.topic)}`;
  else ev = `mqtt: {topic: ${j(m.topic)}, payload: ${j(m.payload ?? null)}, qos: ${m.qos || 0}}`;
  const inv = all.find((x) => x.type === 'invocation' && x.event_id === m.id);
  const lines = [`  - name: ${j(`${m.topic || m.source} at ${clock(m.ts || Date.now())}`)}`, '    events:', `      - ${ev}`];
  if (inv && !inv.error) lines.push(`    expect:  # what ${inv.function} v${inv.version} returned`, `      result: ${j(inv.result ?? null)}`);
  else lines.push('    expect: {}');
  return `${lines.join('\n')}\n`;
}

function row(m, fresh, all) {
  if (m.type === 'skipped') {
    return h('div', {class: 'lrow skipped', role: 'row', 'data-testid': 'live-skipped', dataset: {count: m.count}},
      `⚠ ${m.count.toLocaleString('en-US')} message${m.count === 1 ? '' : 's'} skipped: the stream ran faster than this console takes`);
  }
  const [source, topic, detail, bad] = cells(m);
  const el = h('div', {class: `lrow t-${m.type}${fresh ? ' new' : ''}`, role: 'row', 'data-testid': 'live-row', dataset: {type: m.type}},
    h('span', {class: 'time'}, clock(m.ts || Date.now())),
    h('span', {class: 'type'}, m.type),
    h('span', {class: `source${m.type === 'log' ? ` lvl-${m.level}` : ''}`}, source ?? ''),
    h('span', {class: 'topic', title: topic ?? ''}, topic ?? ''),
    h('span', {class: `detail${bad ? ' err' : ''}`}, detail ?? ''));
  el.addEventListener('click', (ev) => {
    if (ev.target.closest('.json, .case')) return;
    const open = el.querySelectorAll('.json, .case');
    if (open.length) {
      open.forEach((e) => e.remove());
      return;
    }
    el.append(h('pre', {class: 'json'}, JSON.stringify(m, null, 2)));
    if (m.type === 'event' && !m.truncated) {
      el.append(h('div', {class: 'case'}, h('button', {class: 'btn small', 'data-testid': 'live-test-case', onclick: (e) => {
        e.stopPropagation(); // the button goes away: the row would not see it was inside
        const yaml = testCase(m, all);
        const url = URL.createObjectURL(new Blob([`cases:\n${yaml}`], {type: 'application/yaml'}));
        e.currentTarget.replaceWith(h('pre', {'data-testid': 'live-test-case-yaml'}, yaml),
          h('a', {class: 'btn small', href: url, download: 'case_test.yaml', 'data-testid': 'live-test-case-download'}, 'Download'));
      }}, 'Save as test case')));
    }
  });
  return el;
}

export class LiveTable {
  constructor() {
    this.all = [];
    this.pending = [];
    this.held = [];
    this.paused = false;
    this.types = new Set(TYPES);
    this.q = '';
    this.times = [];
    this.frame = 0;
    this.rows = $('live-rows');

    const toggles = $('live-types');
    for (const t of TYPES) {
      const b = h('button', {class: `tt t-${t}`, 'aria-pressed': 'true', 'data-testid': `live-type-${t}`}, t);
      b.addEventListener('click', () => {
        const on = b.getAttribute('aria-pressed') !== 'true';
        b.setAttribute('aria-pressed', String(on));
        if (on) this.types.add(t); else this.types.delete(t);
        this.rerender();
      });
      toggles.append(b);
    }
    $('live-pause').addEventListener('click', () => this.setPaused(!this.paused));
    $('live-filter').addEventListener('input', (ev) => { this.q = ev.target.value.trim().toLowerCase(); this.rerender(); });
    $('live-clear').addEventListener('click', () => { this.all = []; this.held = []; this.rerender(); this.meta(); });
    setInterval(() => this.meta(), 1000);
  }

  setPaused(p) {
    this.paused = p;
    const b = $('live-pause');
    b.setAttribute('aria-pressed', String(p));
    b.textContent = p ? 'Resume' : 'Pause';
    if (!p) {
      this.pending.push(...this.held);
      this.held = [];
      this.schedule();
    }
    this.meta();
  }

  push(m) {
    this.times.push(Date.now());
    if (this.paused) {
      this.held.push(m);
      if (this.held.length > KEEP) this.held.splice(0, this.held.length - KEEP);
      this.meta();
      return;
    }
    this.pending.push(m);
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  matches(m) {
    if (m.type === 'skipped') return true;
    if (!this.types.has(m.type)) return false;
    if (!this.q) return true;
    m._s ??= JSON.stringify(m).toLowerCase();
    return m._s.includes(this.q);
  }

  // flush adds what arrived since the last frame in one DOM update.
  flush() {
    this.frame = 0;
    const batch = this.pending;
    this.pending = [];
    this.all.push(...batch);
    if (this.all.length > KEEP) this.all.splice(0, this.all.length - KEEP);
    const frag = document.createDocumentFragment();
    const fresh = batch.length < 20;
    for (let i = batch.length - 1; i >= 0; i--) {
      if (this.matches(batch[i])) frag.append(row(batch[i], fresh, this.all));
    }
    this.rows.prepend(frag);
    while (this.rows.childElementCount > SHOWN) this.rows.lastElementChild.remove();
    this.meta();
  }

  rerender() {
    const frag = document.createDocumentFragment();
    let n = 0;
    for (let i = this.all.length - 1; i >= 0 && n < SHOWN; i--) {
      if (this.matches(this.all[i])) { frag.append(row(this.all[i], false, this.all)); n++; }
    }
    this.rows.replaceChildren(frag);
    this.meta();
  }

  meta() {
    const now = Date.now();
    while (this.times.length && now - this.times[0] > 10_000) this.times.shift();
    $('live-count').textContent = `${this.all.length.toLocaleString('en-US')} message${this.all.length === 1 ? '' : 's'}`;
    $('live-rate').textContent = `${(this.times.length / 10).toFixed(1)}/s`;
    const held = $('live-held');
    held.hidden = !this.paused;
    held.textContent = `paused · ${this.held.length} new`;
    this.empty();
  }

  // empty says why the table is empty: nothing came yet, or the filter hides everything
  // that did (and how much).
  empty() {
    const el = $('live-empty');
    el.hidden = this.rows.childElementCount > 0;
    if (el.hidden) return;
    const hidden = this.all.filter((m) => m.type !== 'skipped').length;
    if (!hidden) {
      el.textContent = 'Waiting for messages… publish to the broker or invoke a function.';
      delete el.dataset.hidden;
      return;
    }
    const off = TYPES.filter((t) => !this.types.has(t));
    const why = [off.length ? `types ${off.join(', ')} off` : '', this.q ? `text “${this.q}”` : ''].filter(Boolean).join(', ');
    el.dataset.hidden = String(hidden);
    el.textContent = `No message matches the filter (${why}): ${count(hidden, 'message')} hidden.`;
  }
}
