// Devices on the embedded broker: GET /api/v1/devices, refreshed while the tab is shown.
// One card per device, built once and updated in place, so that a refresh neither
// flickers nor takes the keyboard focus off a button. Disconnect asks first, in a dialog,
// then POSTs /api/v1/devices/{id}/disconnect.

import {$, h, ago, count, num, toast} from './dom.js';
import {ApiError, api, get} from './api.js';

export class DevicesView {
  constructor() {
    this.cards = new Map(); // client id -> {el, parts}
    this.loading = false;
    // The form's submit names the button at once (see the function page's Delete).
    $('disconnect-form').addEventListener('submit', (ev) => {
      const id = $('disconnect-name').textContent;
      if (ev.submitter?.value === 'disconnect' && id) this.disconnect(id);
    });
  }

  async refresh() {
    if (this.loading) return; // a slow answer is not overtaken by the next tick's
    this.loading = true;
    let data;
    try {
      data = await get('devices');
    } catch (err) {
      // Out of reach, the header's banner says so already: one toast every 2 s would not help.
      if (err instanceof ApiError) toast(`Devices: ${err.message}`);
      return;
    } finally {
      this.loading = false;
    }
    this.show(data.devices || [], data.broker);
  }

  show(list, broker) {
    const box = $('device-cards');
    const seen = new Set();
    list.forEach((d, i) => {
      seen.add(d.client_id);
      let c = this.cards.get(d.client_id);
      if (!c) {
        c = this.card(d.client_id);
        this.cards.set(d.client_id, c);
      }
      this.update(c, d);
      // The API sorts by client id: only a new card moves, the others keep their place.
      if (box.children[i] !== c.el) box.insertBefore(c.el, box.children[i] || null);
    });
    for (const [id, c] of this.cards) {
      if (!seen.has(id)) {
        c.el.remove();
        this.cards.delete(id);
      }
    }
    const empty = $('device-empty');
    empty.hidden = list.length > 0;
    empty.textContent = broker === 'external'
      ? 'An external broker: its devices are not listed here. The gateway is one of its clients.'
      : 'No device is connected.';
    $('device-count').textContent = broker === 'external' ? '' : count(list.length, 'device');
  }

  card(id) {
    const p = {
      user: h('span', {class: 'trigger', 'data-testid': 'device-user', title: 'User'}),
      listener: h('span', {class: 'trigger', 'data-testid': 'device-listener', title: 'Listener'}),
      rate: metricValue('device-rate'),
      received: metricValue('device-received'),
      denied: metricValue('device-denied'),
      slowed: metricValue('device-slowed'),
      remote: h('span', {'data-testid': 'device-remote'}),
      since: h('span', {'data-testid': 'device-since'}),
    };
    const el = h('div', {class: 'card', 'data-testid': 'device-card', dataset: {id}},
      h('div', {class: 'card-head'},
        h('span', {class: 'card-title mono grow', title: id, 'data-testid': 'device-id'}, id),
        h('button', {class: 'btn small ghost danger', 'data-testid': 'device-disconnect', title: `Disconnect ${id}`,
          onclick: () => this.askDisconnect(id)}, 'Disconnect')),
      h('div', {class: 'triggers'}, p.user, p.listener),
      h('div', {class: 'stat-grid device-stats'},
        metric(p.rate, 'msg/s'), metric(p.received, 'received'),
        metric(p.denied, 'denied', 'Publishes and subscriptions the ACL refused'),
        metric(p.slowed, 'slowed', 'Publishes that waited for the device\'s share of the broker')),
      h('div', {class: 'card-foot'}, p.remote, p.since));
    return {el, parts: p};
  }

  update({el, parts: p}, d) {
    // A user name is case-sensitive: shown as written, unlike the pills' capitals.
    p.user.textContent = d.user || 'anonymous';
    p.user.classList.toggle('anon', !d.user);
    p.listener.textContent = d.listener || '';
    p.rate.textContent = (d.rate ?? 0).toFixed(1);
    p.received.textContent = num(d.received ?? 0);
    // A device refused by the ACL, or held back for flooding, is worth a look.
    p.denied.textContent = num(d.denied ?? 0);
    p.denied.classList.toggle('bad', d.denied > 0);
    p.slowed.textContent = num(d.slowed ?? 0);
    p.slowed.classList.toggle('warn', d.slowed > 0);
    p.remote.textContent = d.remote || '';
    p.since.textContent = `connected ${ago(d.connected_at)}`;
    p.since.title = d.connected_at ? new Date(d.connected_at).toLocaleString() : '';
  }

  askDisconnect(id) {
    $('disconnect-name').textContent = id;
    $('disconnect-dialog').showModal();
  }

  async disconnect(id) {
    try {
      await api('POST', `devices/${encodeURIComponent(id)}/disconnect`);
      toast(`Disconnected ${id}.`);
    } catch (err) {
      toast(`Disconnect ${id}: ${err.message}`);
    }
    this.refresh();
  }
}

function metricValue(testid) {
  return h('div', {class: 'v', 'data-testid': testid});
}

function metric(v, k, title) {
  return h('div', {class: 'metric', title: title || null}, v, h('div', {class: 'k'}, k));
}
