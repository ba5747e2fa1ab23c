// Sensor panels: one card per sensor. The status API lists every sensor (driver, pin,
// state, last values and error); the live stream adds readings as they come, plotted as
// sparklines, and for GPIO pins the edges and the invocations they start. A simulated
// GPIO input (driver: gpio, sim: true) gets a Press button that drives the pin through
// POST /api/v1/gpio/{pin} as a real button would: pressed while held, released on let go.
// Cards are built once and updated in place, at most once per animation frame. The plots
// open with the readings the gateway kept from the last minutes (GET /api/v1/history).

import {$, h, clock, micros, short, stateClass, toast} from './dom.js';
import {api} from './api.js';
import {spark} from './spark.js';

const KEEP = 600; // readings per sensor: the gateway keeps as many (10 minutes at 1/s)
const ACTIVITY = 6;

export class SensorsView {
  // onStale asks for a fresh status, e.g. after an invocation may have written a pin.
  constructor({onStale} = {}) {
    this.onStale = onStale || (() => {});
    this.sensors = new Map(); // name -> sensor state, see get()
    this.dirty = new Set();
    this.frame = 0;
    this.staleTimer = 0;
  }

  get(name) {
    let s = this.sensors.get(name);
    if (!s) {
      // points: readings in time order, {ts, values, seed} (seed: the status API's last
      // values, shown until the history or the stream brings the real series).
      s = {name, meta: {}, ts: 0, points: [], activity: [], down: false, chain: Promise.resolve(), el: null};
      this.sensors.set(name, s);
    }
    return s;
  }

  // status takes the status API's sensors list.
  status(list) {
    for (const m of list || []) {
      const s = this.get(m.name);
      s.meta = m;
      const at = m.at ? Date.parse(m.at) : 0;
      if (at > s.ts) s.ts = at;
      // A sensor read before the page opened shows its last values at once.
      if (!s.points.length && m.driver !== 'gpio' && m.values) s.points.push({ts: at, values: m.values, seed: true});
      this.touch(s);
    }
  }

  // live takes a sensor reading from the stream.
  live(m) {
    const s = this.get(m.sensor);
    s.ts = Math.max(s.ts, m.ts || Date.now());
    this.add(s, [{ts: m.ts || Date.now(), values: m.values}]);
    this.touch(s);
  }

  // history takes the readings the gateway kept (live sensor messages, oldest first).
  history(list) {
    const by = new Map();
    for (const m of list) {
      if (!by.has(m.sensor)) by.set(m.sensor, []);
      by.get(m.sensor).push({ts: m.ts, values: m.values});
    }
    for (const [name, points] of by) {
      const s = this.get(name);
      s.ts = Math.max(s.ts, points[points.length - 1].ts);
      this.add(s, points);
      this.touch(s);
    }
  }

  // event takes a GPIO edge from the stream (an event with source gpio).
  event(m) {
    const s = this.byPin(m.pin || (m.topic || '').replace(/^gpio\//, ''));
    if (!s) return;
    const what = m.edge ? `${m.edge} edge${m.level != null ? ` → ${m.level}` : ''}` : 'edge';
    this.note(s, {ts: m.ts, cls: 'edge', text: what});
  }

  // invocation takes an invocation from the stream; those started by a pin's edge show
  // on its card.
  invocation(m) {
    const topic = m.topic || '';
    if (!topic.startsWith('gpio/')) return;
    const s = this.byPin(topic.slice(5));
    if (!s) return;
    const text = m.error
      ? `${m.function} v${m.version} ✖ ${m.error}`
      : `${m.function} v${m.version} → ${short(m.result ?? null, 90)} (${micros(m.duration_us)})`;
    this.note(s, {ts: m.ts, cls: m.error ? 'err' : 'inv', text, testid: 'gpio-invocation'});
    // The function may have written an output pin: refresh the levels soon, once per burst.
    if (!this.staleTimer) this.staleTimer = setTimeout(() => { this.staleTimer = 0; this.onStale(); }, 250);
  }

  byPin(pin) {
    for (const s of this.sensors.values()) {
      if (s.meta.pin === pin || s.name === pin) return s;
    }
    return null;
  }

  // add merges readings into the sensor's points: in time order, each reading once
  // (the history and the stream overlap), the status seed dropped once real ones come.
  add(s, points) {
    const seen = new Set();
    s.points = [...s.points.filter((p) => !p.seed), ...points]
      .sort((a, b) => a.ts - b.ts)
      .filter((p) => !seen.has(p.ts) && seen.add(p.ts));
    if (s.points.length > KEEP) s.points.splice(0, s.points.length - KEEP);
  }

  // series returns each value's readings, in time order.
  series(s) {
    const out = new Map();
    for (const p of s.points) {
      for (const [k, v] of Object.entries(p.values || {})) {
        if (typeof v !== 'number') continue;
        if (!out.has(k)) out.set(k, []);
        out.get(k).push(v);
      }
    }
    return out;
  }

  note(s, item) {
    s.activity.unshift({...item, ts: item.ts || Date.now()});
    s.activity.length = Math.min(s.activity.length, ACTIVITY);
    this.touch(s);
  }

  touch(s) {
    this.dirty.add(s.name);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  // press drives a simulated input to its pressed level (down) or back. Requests go out
  // one after another, so a quick tap never arrives as release-then-press.
  press(s, down) {
    if (s.down === down) return;
    s.down = down;
    s.btn.setAttribute('aria-pressed', String(down));
    const pressed = s.meta.pull === 'down' ? 1 : 0;
    const level = down ? pressed : 1 - pressed;
    const pin = s.meta.pin || s.name;
    s.chain = s.chain
      .then(() => api('POST', `gpio/${encodeURIComponent(pin)}`, {level}))
      .catch((err) => toast(`${s.name}: ${err.message}`));
  }

  pressButton(s) {
    const btn = h('button', {class: 'btn press', type: 'button', 'data-testid': 'gpio-press', 'aria-pressed': 'false',
      title: 'Hold to hold the button down'}, 'Press');
    const release = () => this.press(s, false);
    btn.addEventListener('pointerdown', (ev) => {
      if (ev.button !== 0) return;
      ev.preventDefault(); // no focus stealing, no text selection on long presses
      btn.setPointerCapture?.(ev.pointerId);
      this.press(s, true);
    });
    btn.addEventListener('pointerup', release);
    btn.addEventListener('pointercancel', release);
    btn.addEventListener('lostpointercapture', release);
    btn.addEventListener('keydown', (ev) => {
      if ((ev.key === ' ' || ev.key === 'Enter') && !ev.repeat) { ev.preventDefault(); this.press(s, true); }
    });
    btn.addEventListener('keyup', (ev) => {
      if (ev.key === ' ' || ev.key === 'Enter') { ev.preventDefault(); release(); }
    });
    btn.addEventListener('blur', release);
    btn.addEventListener('contextmenu', (ev) => ev.preventDefault()); // a long press on a phone
    return btn;
  }

  build(s) {
    const m = s.meta;
    const gpio = m.driver === 'gpio';
    const tags = [m.driver && h('span', {class: 'trigger'}, m.driver)];
    if (gpio) {
      tags.push(h('span', {class: 'trigger'}, `${m.pin || s.name}${m.mode === 'out' ? ' out' : ' in'}${m.pull ? ` pull ${m.pull}` : ''}`));
      if (m.sim) tags.push(h('span', {class: 'trigger sim'}, 'simulated'));
    }
    s.timeEl = h('span', {class: 'muted'});
    s.stateEl = h('span', {class: 'dot', 'data-testid': 'sensor-state'});
    s.errEl = h('div', {class: 'last-err', 'data-testid': 'sensor-error', hidden: true});
    s.valsEl = h('div', {class: 'sensor-vals'});
    s.actEl = h('ol', {class: 'logs gpio-activity', 'data-testid': 'gpio-activity', hidden: true});
    let io = null;
    if (gpio && m.mode === 'out') {
      s.levelEl = h('span', {class: 'pill idle', 'data-testid': 'gpio-level'}, '–');
      io = h('div', {class: 'gpio-row'}, h('span', {class: 'muted'}, 'output level'), s.levelEl);
    } else if (gpio && m.sim) {
      s.btn = this.pressButton(s);
      io = h('div', {class: 'gpio-row'}, s.btn,
        h('span', {class: 'muted'}, `drives ${m.pin || s.name} to ${m.pull === 'down' ? 1 : 0} while held`));
    }
    s.el = h('div', {class: 'card', 'data-testid': 'sensor-card', dataset: {name: s.name, driver: m.driver || ''}},
      h('div', {class: 'card-head'}, s.stateEl, h('span', {class: 'card-title'}, s.name), h('span', {class: 'grow'}), s.timeEl),
      tags.some(Boolean) ? h('div', {class: 'triggers'}, tags) : null,
      s.errEl, io, s.valsEl, s.actEl);
    s.built = `${m.driver}|${m.mode}|${m.sim}|${m.pull}`;
  }

  draw() {
    this.frame = 0;
    const root = $('sensor-cards');
    for (const name of [...this.dirty].sort()) {
      const s = this.sensors.get(name);
      const m = s.meta;
      const old = s.el;
      // Rebuild only when what the card is made of changed (e.g. the status arrived
      // after the first reading), never while a button is held.
      if (!s.el || (s.built !== `${m.driver}|${m.mode}|${m.sim}|${m.pull}` && !s.down)) {
        this.build(s);
        if (old) old.replaceWith(s.el);
        else this.insert(root, s.el);
      }
      s.timeEl.textContent = s.ts ? clock(s.ts).slice(0, 8) : '';
      s.stateEl.className = `dot state-dot ${m.state ? stateClass(m.state === 'missing' || m.state === 'failing' ? 'error' : m.state) : ''}`;
      s.stateEl.title = m.state || '';
      s.errEl.hidden = !m.last_error;
      s.errEl.textContent = m.last_error || '';
      if (s.levelEl) {
        const lvl = m.values && m.values.level;
        s.levelEl.textContent = lvl == null ? '–' : lvl ? '1 · on' : '0 · off';
        s.levelEl.className = `pill ${lvl ? 'ok' : 'idle'}`;
        s.levelEl.dataset.level = lvl == null ? '' : String(lvl);
      }
      s.valsEl.replaceChildren(...[...this.series(s).entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, arr]) =>
        h('div', {class: 'sensor-val'},
          h('div', {}, h('div', {class: 'v', 'data-testid': `sensor-${name}-${k}`}, fmt(arr[arr.length - 1])), h('div', {class: 'k'}, k)),
          spark(arr, {label: `${name} ${k}`}),
          h('div', {class: 'range'}, h('span', {}, `min ${fmt(Math.min(...arr))}`), h('span', {}, `${arr.length} reading${arr.length === 1 ? '' : 's'}`),
            h('span', {}, `max ${fmt(Math.max(...arr))}`)))));
      s.actEl.hidden = !s.activity.length;
      s.actEl.replaceChildren(...s.activity.map((a) =>
        h('li', {class: `act-${a.cls}`, 'data-testid': a.testid || 'gpio-edge'}, h('span', {class: 'time'}, clock(a.ts)), a.text)));
    }
    this.dirty.clear();
    $('sensor-empty').hidden = this.sensors.size > 0;
  }

  // insert keeps the cards in name order, whichever arrives first.
  insert(root, el) {
    const next = [...root.children].find((c) => c.dataset.name > el.dataset.name);
    root.insertBefore(el, next || null);
  }
}

function fmt(v) {
  if (v == null) return '–';
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}
