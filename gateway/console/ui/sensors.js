// Sensor panels: one card per sensor, one sparkline per value, fed by the live sensor
// messages. Redrawn at most once per animation frame, however fast readings come.

import {$, h, clock} from './dom.js';
import {spark} from './spark.js';

const KEEP = 120;

export class SensorsView {
  constructor() {
    this.sensors = new Map(); // name -> {ts, series: Map(key -> number[]), el}
    this.dirty = new Set();
    this.frame = 0;
  }

  live(m) {
    let s = this.sensors.get(m.sensor);
    if (!s) {
      s = {ts: 0, series: new Map(), el: null};
      this.sensors.set(m.sensor, s);
    }
    s.ts = m.ts || Date.now();
    for (const [k, v] of Object.entries(m.values || {})) {
      if (typeof v !== 'number') continue;
      let arr = s.series.get(k);
      if (!arr) s.series.set(k, (arr = []));
      arr.push(v);
      if (arr.length > KEEP) arr.shift();
    }
    this.dirty.add(m.sensor);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    this.frame = 0;
    const root = $('sensor-cards');
    for (const name of this.dirty) {
      const s = this.sensors.get(name);
      const vals = [...s.series.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, arr]) =>
        h('div', {class: 'sensor-val'},
          h('div', {}, h('div', {class: 'v', 'data-testid': `sensor-${name}-${k}`}, fmt(arr[arr.length - 1])), h('div', {class: 'k'}, k)),
          spark(arr, {label: `${name} ${k}`}),
          h('div', {class: 'range'}, h('span', {}, `min ${fmt(Math.min(...arr))}`), h('span', {}, `${arr.length} readings`),
            h('span', {}, `max ${fmt(Math.max(...arr))}`))));
      const el = h('div', {class: 'card', 'data-testid': 'sensor-card', dataset: {name}},
        h('div', {class: 'card-head'}, h('span', {class: 'card-title'}, name), h('span', {class: 'grow'}),
          h('span', {class: 'muted'}, clock(s.ts).slice(0, 8))),
        h('div', {class: 'sensor-vals'}, vals));
      if (s.el) s.el.replaceWith(el);
      else root.append(el);
      s.el = el;
    }
    this.dirty.clear();
    $('sensor-empty').hidden = this.sensors.size > 0;
  }
}

function fmt(v) {
  if (v == null) return '–';
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}
