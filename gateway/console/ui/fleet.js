// Fleet: what this gateway runs from the fleet (GET /api/v1/fleet), refreshed while the
// tab is shown: the cloud broker connection, the groups it joins, the revision of each
// applied document, the last document refused and why, and the functions by origin.

import {$, h, ago, stateClass, toast} from './dom.js';
import {ApiError, get} from './api.js';

export class FleetView {
  constructor() {
    this.loading = false;
  }

  async refresh() {
    if (this.loading) return;
    this.loading = true;
    let f;
    try {
      f = await get('fleet');
    } catch (err) {
      if (err instanceof ApiError) toast(`Fleet: ${err.message}`);
      return;
    } finally {
      this.loading = false;
    }
    this.show(f);
  }

  show(f) {
    const off = $('fleet-off');
    off.hidden = f.enabled;
    $('fleet-body').hidden = !f.enabled;
    if (!f.enabled) return;
    const r = f.report || {};
    const b = f.broker || {};
    $('fleet-broker').replaceChildren(h('div', {},
      h('span', {class: `pill ${stateClass(b.state)}`, 'data-testid': 'fleet-broker-state'}, b.state || '?'),
      ' ', h('span', {class: 'mono'}, b.url || ''),
      b.reconnects ? h('span', {class: 'muted'}, ` · ${b.reconnects} reconnects`) : null,
      b.last_error ? h('div', {class: 'muted'}, `last connection error: ${b.last_error}`) : null));
    $('fleet-groups').textContent = (r.groups || []).join(', ') || 'none';
    const layers = r.layers || [];
    $('fleet-layers').replaceChildren(...(layers.length ? layers.map((l) =>
      h('li', {'data-testid': 'fleet-layer', dataset: {target: l.target}}, h('span', {class: 'mono'}, l.target), ` revision ${l.revision}`))
      : [h('li', {class: 'muted'}, 'No document applied yet.')]));
    const err = $('fleet-error');
    err.hidden = !r.last_error;
    err.textContent = r.last_error ? `Last document refused: ${r.last_error}` : '';
    $('fleet-health').textContent = `health ${r.health || '?'} · outbox ${r.outbox_depth ?? 0} · reported ${ago(r.updated)}`;
    $('fleet-functions').replaceChildren(...(r.functions || []).map((fn) => h('tr', {'data-testid': 'fleet-function', dataset: {name: fn.name}},
      h('td', {class: 'mono'}, fn.name), h('td', {}, `v${fn.version}`),
      h('td', {}, fn.managed_by === 'fleet' ? `${fn.target} r${fn.revision}` : 'local'),
      h('td', {class: 'mono muted'}, (fn.sha256 || '').slice(0, 12)))));
  }
}
