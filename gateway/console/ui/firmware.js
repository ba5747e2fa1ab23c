// Firmware: the rollouts (GET /api/v1/firmware/rollouts), each with its devices by wave,
// and the stored images. Live `firmware` messages (a device's state) refresh the page,
// coalesced; Pause, Resume and Abort POST the rollout's action, Abort after a second click.

import {$, h, ago, count, stateClass, toast} from './dom.js';
import {ApiError, api, get} from './api.js';

const ROLLOUT_CLASS = {running: 'ok', done: 'ok', paused: 'warn', halted: 'err', aborted: 'idle'};
const DEVICE_CLASS = {healthy: 'ok', failed: 'err', waiting: 'idle'};

export class FirmwareView {
  constructor() {
    this.loading = false;
    this.timer = 0;
    this.arming = ''; // the rollout whose Abort was clicked once
  }

  // live takes a `firmware` message: the page shows what the gateway says, so it asks
  // again, at most every 300 ms.
  live() {
    if (!this.timer) this.timer = setTimeout(() => { this.timer = 0; this.refresh(); }, 300);
  }

  async refresh() {
    if (this.loading) return;
    this.loading = true;
    let fw, rollouts;
    try {
      fw = await get('firmware');
      rollouts = fw.enabled ? (await get('firmware/rollouts')).rollouts || [] : [];
    } catch (err) {
      if (err instanceof ApiError) toast(`Firmware: ${err.message}`);
      return;
    } finally {
      this.loading = false;
    }
    this.show(fw, rollouts);
  }

  show(fw, rollouts) {
    const empty = $('fw-empty');
    empty.hidden = fw.enabled && rollouts.length > 0;
    empty.textContent = !fw.enabled
      ? 'Firmware is off: the config names no firmware.keys, so the gateway trusts no signing key.'
      : 'No rollout yet. Publish an image (moongate firmware publish), then moongate firmware rollout create.';
    $('fw-images').textContent = fw.enabled
      ? `${count((fw.images || []).length, 'image')} · ${count((fw.devices || []).length, 'device')}` : '';
    $('rollout-cards').replaceChildren(...rollouts.slice().reverse().map((r) => this.card(r)));
  }

  card(r) {
    const devices = Object.entries(r.devices || {}).sort(([a, x], [b, y]) => x.wave - y.wave || a.localeCompare(b));
    const healthy = devices.filter(([, d]) => d.status === 'healthy').length;
    const failed = devices.filter(([, d]) => d.status === 'failed').length;
    const buttons = [];
    if (r.state === 'running') buttons.push(this.button(r, 'pause', 'Pause'));
    if (r.state === 'paused') buttons.push(this.button(r, 'resume', 'Resume'));
    if (!['done', 'aborted'].includes(r.state)) {
      buttons.push(this.button(r, 'abort', this.arming === r.id ? 'Confirm abort' : 'Abort', 'danger'));
    }
    const pct = (n) => (devices.length ? `${(100 * n) / devices.length}%` : '0');
    return h('div', {class: 'card rollout', 'data-testid': 'rollout-card', dataset: {id: r.id}},
      h('div', {class: 'card-head'},
        h('span', {class: 'card-title grow'}, `${r.id} · ${r.type} ${r.version}`,
          h('span', {class: 'muted'}, ` (counter ${r.counter})`)),
        h('span', {class: `pill ${ROLLOUT_CLASS[r.state] || 'idle'}`, 'data-testid': 'rollout-state'}, r.state),
        ...buttons),
      h('div', {class: 'muted', 'data-testid': 'rollout-wave'},
        `wave ${waveName(r, r.wave)} of ${waveCount(r)} · from counters ${r.from} · max failures ${r.max_failures} · updated ${ago(r.updated)}`),
      h('div', {class: 'progress', title: `${healthy} healthy, ${failed} failed`},
        h('span', {class: 'ok', style: `width:${pct(healthy)}`}), h('span', {class: 'err', style: `width:${pct(failed)}`})),
      h('div', {'data-testid': 'rollout-progress'}, `${healthy} healthy · ${failed} failed · ${count(devices.length, 'device')}`),
      r.reason ? h('div', {class: 'state-err', 'data-testid': 'rollout-reason'}, r.reason) : null,
      h('table', {class: 'mini'},
        h('thead', {}, h('tr', {}, h('th', {}, 'device'), h('th', {}, 'wave'), h('th', {}, 'status'), h('th', {}, 'error'))),
        h('tbody', {}, ...devices.map(([id, d]) => h('tr', {'data-testid': 'rollout-device', dataset: {id}},
          h('td', {class: 'mono'}, id), h('td', {}, waveName(r, d.wave)),
          h('td', {}, h('span', {class: `pill ${DEVICE_CLASS[d.status] || stateClass(d.status)}`, 'data-testid': 'device-status'}, d.status)),
          h('td', {class: 'state-err'}, d.error || ''))))));
  }

  button(r, action, label, cls = '') {
    return h('button', {class: `btn small ghost ${cls}`, 'data-testid': `rollout-${action}`,
      onclick: () => this.act(r, action)}, label);
  }

  async act(r, action) {
    if (action === 'abort' && this.arming !== r.id) {
      this.arming = r.id; // a second click within 4 s aborts
      setTimeout(() => { if (this.arming === r.id) { this.arming = ''; this.refresh(); } }, 4000);
      this.refresh();
      return;
    }
    this.arming = '';
    try {
      await api('POST', `firmware/rollouts/${encodeURIComponent(r.id)}/${action}`);
      toast(`Rollout ${r.id} ${{pause: 'paused', resume: 'resumed', abort: 'aborted'}[action]}.`);
    } catch (err) {
      toast(`Rollout ${r.id}: ${err.message}`);
    }
    this.refresh();
  }
}

function waveCount(r) {
  return (r.waves || []).length + (r.canary > 0 ? 1 : 0);
}

function waveName(r, i) {
  if (r.canary > 0) {
    if (i === 0) return 'canary';
    i--;
  }
  return r.waves && i < r.waves.length ? `${r.waves[i]}%` : '?';
}
