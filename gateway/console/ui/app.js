// Moongate console entry point: routing between views, the status header, and the one
// live websocket that feeds every view.

import {$, bytes, clock, duration, stateClass, h} from './dom.js';
import {get} from './api.js';
import {Live} from './live.js';
import {LiveTable} from './livetable.js';
import {Stats} from './stats.js';
import {FunctionsView} from './functions.js';
import {FunctionPage} from './fnpage.js';
import {SyncView} from './sync.js';
import {SensorsView} from './sensors.js';
import {DevicesView} from './devices.js';
import {FirmwareView} from './firmware.js';

const stats = new Stats();
const table = new LiveTable();
const functions = new FunctionsView(stats);
const fnPage = new FunctionPage({onDeployed: () => functions.refresh()});
const sync = new SyncView();
const sensors = new SensorsView({onStale: () => status()});
const devices = new DevicesView();
const firmware = new FirmwareView();
let view = '';
let lastHash = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [head, ...rest] = hash.split('/');
  let next = ['live', 'functions', 'sync', 'sensors', 'devices', 'firmware'].includes(head) ? head : 'live';
  if (head === 'fn' && rest.length) next = 'fn';
  if (head === 'new') next = 'fn';
  // Another page opens at its top, not at the scroll position the last one was left at.
  if (hash !== lastHash) window.scrollTo(0, 0);
  lastHash = hash;
  view = next;
  for (const sec of document.querySelectorAll('.view')) sec.hidden = sec.id !== `view-${next}`;
  const tab = next === 'fn' ? 'functions' : next;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === tab);
  if (next === 'functions') functions.refresh();
  if (next === 'sync') sync.refresh();
  if (next === 'sensors') status();
  if (next === 'devices') devices.refresh();
  if (next === 'firmware') firmware.refresh();
  if (next === 'fn') fnPage.open(head === 'new' ? null : decodeURIComponent(rest.join('/')));
  document.title = `Moongate · ${next === 'fn' ? (fnPage.name ?? 'new function') : next}`;
}

function chip(id, label, value, cls) {
  const el = $(id);
  el.replaceChildren(`${label} `, h('b', {class: cls ? `state-${cls}` : ''}, value));
}

// stale marks what the page shows as old news while the gateway is out of reach: the
// header's figures and the views keep their last values, greyed, until it answers again.
let lostAt = 0;
function stale(on) {
  if (on && !lostAt) lostAt = Date.now();
  if (!on) lostAt = 0;
  const st = $('status');
  if (on) st.dataset.stale = ''; else delete st.dataset.stale;
  document.body.classList.toggle('stale', on);
  const banner = $('stale-banner');
  banner.hidden = !on;
  if (on) banner.textContent = `Disconnected from the gateway since ${clock(lostAt).slice(0, 8)}: what you see may be out of date. Reconnecting…`;
}

async function status() {
  try {
    const s = await get('status');
    // Figures from a fresh answer are current again, but only the live stream makes the
    // views current: they stay marked until it is back.
    if (live.state === 'open') stale(false);
    $('gw-id').textContent = s.gateway_id || '';
    if (s.broker) {
      const clients = s.broker.clients ? ` · ${s.broker.clients}` : '';
      chip('st-broker', 'broker', `${s.broker.state}${clients}`, stateClass(s.broker.state));
    }
    chip('st-outbox', 'outbox', String(s.outbox_depth ?? 0), s.outbox_depth > 1000 ? 'warn' : '');
    chip('st-uptime', 'up', duration(s.uptime_s || 0));
    chip('st-mem', 'mem', bytes(s.memory_bytes));
    sensors.status(s.sensors);
    $('status').title = `Moongate ${s.version || ''}`;
  } catch {
    stale(true);
  }
}

let syncTimer = 0;
const live = new Live({
  onState: (state, wasOpen) => {
    const el = $('live-state');
    el.dataset.state = state;
    el.lastElementChild.textContent = state === 'open' ? 'live' : wasOpen || lostAt ? 'disconnected' : 'connecting';
    if (state === 'open') {
      // Back: refresh what the socket could not say while it was down.
      status();
      loadHistory();
      if (view === 'functions') functions.refresh();
      if (view === 'sync') sync.refresh();
      if (view === 'devices') devices.refresh();
      if (view === 'firmware') firmware.refresh();
    } else if (wasOpen || lostAt) {
      stale(true);
    }
  },
  onMessage: (m) => {
    table.push(m);
    switch (m.type) {
      case 'invocation':
        stats.record(m);
        sensors.invocation(m);
        break;
      case 'event':
        if (m.source === 'gpio') sensors.event(m);
        break;
      case 'sensor': sensors.live(m); break;
      case 'firmware': if (view === 'firmware') firmware.live(); break;
      case 'sync':
        sync.live(m);
        // Coalesce a burst of transitions into one refresh.
        if (view === 'sync' && !syncTimer) syncTimer = setTimeout(() => { syncTimer = 0; sync.refresh(); }, 300);
        break;
    }
    if (view === 'fn') fnPage.live(m);
  },
});

// loadHistory fills the sensor plots and the sink transitions with what the gateway kept
// from before the page opened (GET /api/v1/history).
async function loadHistory() {
  try {
    const hist = await get('history');
    sensors.history(hist.sensor || []);
    sync.history(hist.sync || []);
  } catch {
    // An old gateway without the endpoint: the views fill from the live stream.
  }
}

function layout() {
  document.documentElement.style.setProperty('--header-h', `${document.querySelector('.top').offsetHeight}px`);
}

window.addEventListener('hashchange', route);
window.addEventListener('resize', layout);
layout();
route();
// The socket opens at once; if it is refused for want of a token, Live asks through
// an API call (a 401 shows the token prompt) and retries.
live.connect();
status();
setInterval(status, 5000);
setInterval(() => { if (view === 'functions') functions.tick(); }, 2000);
setInterval(() => { if (view === 'functions') functions.refresh(); }, 5000);
setInterval(() => { if (view === 'sync') sync.refresh(); }, 5000);
// Devices come and go without a word on the live stream: poll while the tab is shown.
setInterval(() => { if (view === 'devices') devices.refresh(); }, 2000);
// A device's timeout and a rollout's wave can change with no device saying a word.
setInterval(() => { if (view === 'firmware') firmware.refresh(); }, 5000);
