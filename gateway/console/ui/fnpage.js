// One function: edit, deploy, invoke with a test event (a dry run by default), versions
// and rollback, KV, its live logs, and delete. What the user typed in the page for one
// function (test event, KV prefix) stays with that function.

import {$, h, ago, bytes, clock, micros, short, toast} from './dom.js';
import {api, get, fnPath, ApiError} from './api.js';
import {Editor} from './editor.js';

const TEMPLATE = `-- handle runs for every event that matches one of the triggers.
function handle(event)
  local n = kv.incr("count")
  log.info(string.format("event %d on %s", n, tostring(event.topic)))
  if type(event.payload) == "table" and (event.payload.temp or 0) > 30 then
    mqtt.publish("alerts/hot", {topic = event.topic, temp = event.payload.temp})
  end
  return {count = n}
end
`;

// sampleTopic turns the first MQTT trigger's filter into a topic that matches it.
function sampleTopic(triggers) {
  const t = triggers.find((s) => s.startsWith('mqtt:'));
  if (!t) return 'test/topic';
  return t.slice(5).replace(/@\d$/, '').replace(/\+/g, 'test').replace(/#$/, 'test');
}

function lines(s) {
  return s.split('\n').map((l) => l.trim()).filter(Boolean);
}

export class FunctionPage {
  constructor({onDeployed}) {
    this.name = null;
    this.doc = null;
    this.onDeployed = onDeployed;
    // Per function: {event, prefix} as the user left them; a new function starts afresh.
    this.kept = new Map();
    this.editor = new Editor({onSave: () => this.deploy(), onRun: () => this.invoke()});
    $('deploy').addEventListener('click', () => this.deploy());
    $('invoke').addEventListener('click', () => this.invoke());
    $('tests-run').addEventListener('click', () => this.runTests());
    $('tests-input').addEventListener('input', () => { this.mine().tests = $('tests-input').value; });
    $('fn-delete').addEventListener('click', () => this.askDelete());
    // The form's submit names the button at once; the dialog's close event comes a task
    // later, possibly after the dialog was opened again.
    $('delete-form').addEventListener('submit', (ev) => {
      const name = $('delete-name').textContent;
      if (ev.submitter?.value === 'delete' && name === this.name) this.remove(name, $('delete-purge').checked);
    });
    $('kv-refresh').addEventListener('click', () => this.loadKV());
    $('kv-prefix').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') this.loadKV(); });
    $('invoke-event').addEventListener('input', () => { this.mine().event = $('invoke-event').value; });
    $('kv-prefix').addEventListener('input', () => { this.mine().prefix = $('kv-prefix').value; });
  }

  // mine is the page state the user set for the open function.
  mine() {
    const key = this.name ?? '';
    let k = this.kept.get(key);
    if (!k) this.kept.set(key, (k = {event: null, prefix: '', tests: ''}));
    return k;
  }

  async open(name) {
    if (name === null) this.kept.delete('');
    this.name = name;
    this.doc = null;
    $('invoke-event').value = this.mine().event ?? '';
    $('kv-prefix').value = this.mine().prefix;
    $('tests-input').value = this.mine().tests;
    $('tests-result').hidden = true;
    $('fn-delete').hidden = name === null;
    this.editor.clearError();
    // data-loaded tells tests (and CSS) when the editor holds this function's source.
    delete $('view-fn').dataset.loaded;
    this.status('');
    $('invoke-result').hidden = true;
    $('fn-logs').replaceChildren(h('li', {class: 'muted'}, 'Logs of this function appear here live.'));
    $('fn-name').hidden = name !== null;
    $('fn-title').textContent = name ?? 'New function';
    $('fn-version').textContent = '';
    if (name === null) {
      $('fn-name').value = '';
      this.editor.value = TEMPLATE;
      this.fill({triggers: ['mqtt:sensors/+/temp'], timeout: '100ms', memory: '16MiB', concurrency: 1, env: {}, emit: ''});
      $('versions').replaceChildren(h('li', {class: 'muted'}, 'Deploy to create version 1.'));
      $('kv-table').replaceChildren();
      $('fn-name').focus();
      $('view-fn').dataset.loaded = '';
      return;
    }
    try {
      const doc = await get(fnPath(name));
      if (this.name !== name) return;
      this.show(doc);
      this.editor.value = doc.source || '';
      this.fill(doc);
      $('view-fn').dataset.loaded = name;
      this.loadKV();
    } catch (err) {
      this.status(err.status === 404 ? `No function named ${name}.` : err.message, 'err');
    }
  }

  show(doc) {
    this.doc = doc;
    $('fn-version').textContent = `v${doc.version}`;
    this.versions(doc);
  }

  fill(doc) {
    $('fn-triggers').value = (doc.triggers || []).join('\n');
    $('fn-timeout').value = doc.timeout || '';
    $('fn-memory').value = doc.memory || '';
    $('fn-concurrency').value = doc.concurrency || '';
    $('fn-emit').value = doc.emit || '';
    $('fn-env').value = Object.entries(doc.env || {}).map(([k, v]) => `${k}=${v}`).join('\n');
    if (this.mine().event === null) {
      $('invoke-event').value = JSON.stringify({topic: sampleTopic(doc.triggers || []), payload: {temp: 31.5}}, null, 2);
    }
  }

  body() {
    const env = {};
    for (const l of lines($('fn-env').value)) {
      const i = l.indexOf('=');
      if (i > 0) env[l.slice(0, i).trim()] = l.slice(i + 1).trim();
    }
    const conc = parseInt($('fn-concurrency').value, 10);
    const tests = $('tests-input').value.trim();
    return {
      // Tests in the panel go along with every deploy: the gateway runs them first.
      tests: tests ? [{file: `${this.name ?? ($('fn-name').value.trim() || 'function')}_test.yaml`, yaml: tests}] : undefined,
      source: this.editor.value,
      triggers: lines($('fn-triggers').value),
      timeout: $('fn-timeout').value.trim() || null,
      memory: $('fn-memory').value.trim() || null,
      concurrency: Number.isFinite(conc) ? conc : null,
      env,
      emit: $('fn-emit').value.trim(),
    };
  }

  status(msg, cls) {
    const s = $('deploy-status');
    s.textContent = msg;
    s.className = `deploy-status${cls ? ` ${cls}` : ''}`;
  }

  async deploy() {
    const name = this.name ?? $('fn-name').value.trim();
    if (!name) {
      this.status('Name the function first.', 'err');
      $('fn-name').focus();
      $('view-fn').dataset.loaded = '';
      return;
    }
    const btn = $('deploy');
    btn.disabled = true;
    this.status('Deploying…');
    this.editor.clearError();
    try {
      const body = this.body();
      const doc = await api('PUT', fnPath(name), body);
      this.status(`Deployed v${doc.version}${doc.tested ? `, ${doc.tests_passed} test case${doc.tests_passed === 1 ? '' : 's'} passed` : ''}`, 'ok');
      if (body.tests) $('tests-result').hidden = true;
      this.show(doc);
      if (this.name === null) {
        this.kept.set(name, this.mine()); // what was typed before the first deploy stays
        this.kept.delete('');
        this.name = name;
        $('fn-name').hidden = true;
        $('fn-title').textContent = name;
        history.replaceState(null, '', `#/fn/${encodeURIComponent(name)}`);
      }
      this.onDeployed();
    } catch (err) {
      this.failed(err, 'Deploy failed');
    } finally {
      btn.disabled = false;
    }
  }

  failed(err, what) {
    if (!(err instanceof ApiError)) {
      this.status(`${what}: ${err.message}`, 'err');
      return;
    }
    const {line, field, tests} = err.body;
    if (tests) {
      this.testReport(tests);
      this.status(`${what}: ${tests.failed} of ${tests.passed + tests.failed} test cases failed; the running version is unchanged`, 'err');
    } else if (line) {
      this.editor.setError(line, err.message);
      this.status(`${what}: error at line ${line}`, 'err');
    } else {
      this.status(`${what}: ${err.message}`, 'err');
      if (field) $(`fn-${field}`)?.focus();
    }
  }

  // runTests runs the panel's tests against the editor's source on the gateway, without
  // deploying (POST .../test).
  async runTests() {
    const name = this.name ?? ($('fn-name').value.trim() || 'function');
    const body = this.body();
    if (!body.tests) {
      this.testReport({error: 'Paste or write a test file first.'});
      return;
    }
    const btn = $('tests-run');
    btn.disabled = true;
    this.editor.clearError();
    try {
      this.testReport(await api('POST', `${fnPath(name)}/test`, body));
    } catch (err) {
      if (err instanceof ApiError && err.body.line) this.editor.setError(err.body.line, err.message);
      this.testReport({error: err.message});
    } finally {
      btn.disabled = false;
    }
  }

  // testReport shows a run of tests: a summary, one line per case, a failing case's diffs
  // and log lines under it.
  testReport(r) {
    const box = $('tests-result');
    if (r.error) {
      box.replaceChildren(h('pre', {class: 'res-err', 'data-testid': 'tests-error'}, r.error));
    } else {
      const ok = r.failed === 0;
      const parts = [h('div', {class: 'res-head'},
        h('span', {class: `pill ${ok ? 'ok' : 'err'}`, 'data-testid': 'tests-state'}, ok ? 'pass' : 'fail'),
        h('span', {'data-testid': 'tests-summary'}, `${r.passed} passed, ${r.failed} failed`))];
      for (const c of r.cases) {
        parts.push(h('div', {class: 'test-case', 'data-testid': 'test-case', dataset: {ok: c.ok}},
          h('span', {class: `pill ${c.ok ? 'ok' : 'err'}`}, c.ok ? 'ok' : 'fail'), h('span', {class: 'name'}, c.case)));
        if (!c.ok) {
          parts.push(h('pre', {class: 'res-err', 'data-testid': 'test-diffs'}, (c.diffs || []).join('\n')));
          if (c.logs && c.logs.length) parts.push(h('pre', {'data-testid': 'test-logs'}, c.logs.join('\n')));
        }
      }
      box.replaceChildren(...parts);
    }
    box.hidden = false;
  }

  async invoke() {
    if (this.name === null) {
      this.status('Deploy the function before invoking it.', 'err');
      return;
    }
    let event;
    try {
      event = JSON.parse($('invoke-event').value || '{}');
    } catch (err) {
      this.result({error: `The test event is not valid JSON: ${err.message}`});
      return;
    }
    const btn = $('invoke');
    btn.disabled = true;
    const dry = $('invoke-dry').checked;
    try {
      const res = await api('POST', `${fnPath(this.name)}/invoke${dry ? '?dry_run=1' : ''}`, event);
      this.result(res);
      if (res.error && res.line) this.editor.setError(res.line, res.error);
      else this.editor.clearError();
      this.loadKV();
    } catch (err) {
      this.result({error: err.message});
    } finally {
      btn.disabled = false;
    }
  }

  result(res) {
    const box = $('invoke-result');
    const ok = !res.error;
    const parts = [h('div', {class: 'res-head'},
      h('span', {class: `pill ${ok ? 'ok' : 'err'}`, 'data-testid': 'invoke-state'}, ok ? 'ok' : 'error'),
      res.dry_run ? h('span', {class: 'pill idle', 'data-testid': 'invoke-dry-run'}, 'dry run') : null,
      res.duration_us != null ? h('span', {'data-testid': 'invoke-duration'}, micros(res.duration_us)) : null,
      res.version ? h('span', {class: 'muted'}, `v${res.version}`) : null)];
    // The error names its file and line already.
    if (!ok) parts.push(h('pre', {class: 'res-err', 'data-testid': 'invoke-error'}, res.error));
    if (ok || res.result != null) {
      parts.push(h('div', {class: 'muted'}, 'Result'), h('pre', {'data-testid': 'invoke-value'}, JSON.stringify(res.result ?? null, null, 2)));
    }
    if (res.logs && res.logs.length) {
      parts.push(h('div', {class: 'muted'}, 'Logs'),
        h('pre', {'data-testid': 'invoke-logs'}, res.logs.map((l) => `${(l.level || 'info').padEnd(5)} ${l.msg}`).join('\n')));
    }
    if (res.dry_run) parts.push(would(res.would || {}));
    box.replaceChildren(...parts);
    box.hidden = false;
  }

  // versions lists the history page of doc; with more, appends it to what is listed.
  versions(doc, more = false) {
    const items = (doc.versions || []).map((v) => {
      const current = v.version === doc.version;
      return h('li', {'data-testid': 'version', dataset: {version: v.version}},
        h('span', {class: 'vnum'}, `v${v.version}`),
        h('span', {class: 'vdate', title: v.created || ''},
          `${ago(v.created)}${v.size ? ` · ${bytes(v.size)}` : ''}${v.rollback_of ? ` · from v${v.rollback_of}` : ''}`),
        current ? h('span', {class: 'pill ok'}, 'current') : [
          h('button', {class: 'btn small ghost', onclick: () => this.view(v.version)}, 'View'),
          h('button', {class: 'btn small', 'data-testid': `rollback-${v.version}`, onclick: (ev) => this.armRollback(ev.currentTarget, v.version)}, 'Roll back'),
        ]);
    });
    const list = $('versions');
    if (more) {
      list.querySelector('[data-testid=versions-more]')?.remove();
      list.append(...items);
    } else {
      list.replaceChildren(...(items.length ? items : [h('li', {class: 'muted'}, 'No history.')]));
    }
    const oldest = (doc.versions || []).at(-1);
    if (doc.versions_more && oldest) {
      list.append(h('li', {'data-testid': 'versions-more'},
        h('button', {class: 'btn small ghost', onclick: () => this.olderVersions(doc.version, oldest.version)}, 'Older versions')));
    }
  }

  async olderVersions(current, before) {
    try {
      const doc = await get(`${fnPath(this.name)}?history_before=${before}`);
      this.versions({...doc, version: current}, true);
    } catch (err) {
      this.status(err.message, 'err');
    }
  }

  async view(version) {
    try {
      const doc = await get(`${fnPath(this.name)}?version=${version}`);
      this.editor.value = doc.source || '';
      this.fill(doc);
      this.status(`Viewing v${version}: deploy to make it current, or roll back.`);
    } catch (err) {
      toast(`Version ${version}: ${err.message}`);
    }
  }

  // armRollback asks for a second click instead of a blocking confirm() dialog.
  armRollback(btn, version) {
    if (btn.dataset.armed) {
      this.rollback(version);
      return;
    }
    btn.dataset.armed = '1';
    btn.textContent = `Confirm v${version}?`;
    btn.classList.add('danger');
    setTimeout(() => {
      delete btn.dataset.armed;
      btn.textContent = 'Roll back';
      btn.classList.remove('danger');
    }, 4000);
  }

  async rollback(version) {
    try {
      const doc = await api('POST', `${fnPath(this.name)}/rollback`, {version});
      this.show(doc);
      this.editor.value = doc.source || this.editor.value;
      this.fill(doc);
      this.status(`Rolled back: v${doc.version} runs v${version}'s code`, 'ok');
      this.onDeployed();
    } catch (err) {
      this.status(`Rollback failed: ${err.message}`, 'err');
    }
  }

  // askDelete asks for confirmation in a dialog, with the choice to purge the KV data.
  askDelete() {
    if (this.name === null) return;
    $('delete-name').textContent = this.name;
    $('delete-purge').checked = false;
    $('delete-dialog').showModal();
  }

  async remove(name, purge) {
    try {
      await api('DELETE', `${fnPath(name)}${purge ? '?purge=1' : ''}`);
      this.kept.delete(name);
      this.onDeployed();
      toast(`Deleted ${name}${purge ? ' and its KV data' : ''}.`);
      location.hash = '#/functions';
    } catch (err) {
      this.status(`Delete failed: ${err.message}`, 'err');
    }
  }

  async loadKV() {
    if (this.name === null) return;
    const name = this.name;
    const prefix = $('kv-prefix').value;
    const box = $('kv-table');
    try {
      const data = await get(`${fnPath(name)}/kv?prefix=${encodeURIComponent(prefix)}`);
      if (this.name !== name) return;
      const items = (data && data.items) || [];
      if (!items.length) {
        // Say whether the function has keys at all, not only none under this prefix.
        const any = prefix ? ((await get(`${fnPath(this.name)}/kv?limit=1`))?.items || []).length > 0 : false;
        if (this.name !== name) return;
        box.replaceChildren(h('p', {class: 'muted', 'data-testid': 'kv-empty'}, !prefix ? 'This function has no keys stored yet.'
          : any ? `No keys start with “${prefix}”; the function has other keys: clear the prefix to list them.`
            : `This function has no keys stored yet (none start with “${prefix}”).`));
        return;
      }
      const table = h('table', {}, h('tbody', {}, items.map((it) =>
        h('tr', {'data-testid': 'kv-row'}, h('td', {}, it.key), h('td', {title: it.expires ? `expires ${it.expires}` : ''},
          // A value too large for a listing is left out by the gateway, with its size.
          it.omitted ? h('span', {class: 'muted', 'data-testid': 'kv-omitted'}, `${bytes(it.size)}, too large to list`) : JSON.stringify(it.value))))));
      box.replaceChildren(table);
      if (data.truncated) box.append(h('p', {class: 'muted'}, 'More keys match: narrow the prefix.'));
    } catch (err) {
      box.replaceChildren(h('p', {class: 'muted'}, `KV: ${err.message}`));
    }
  }

  // live receives every live message while the page is open.
  live(m) {
    if (this.name === null || m.function !== this.name) return;
    const list = $('fn-logs');
    list.querySelector('.muted')?.remove();
    const add = (level, text, ts) => {
      list.prepend(h('li', {class: `lvl-${level}`, 'data-testid': 'fn-log'}, h('span', {class: 'time'}, clock(ts)), text));
    };
    if (m.type === 'log') {
      add(m.level, [m.file ? h('span', {class: 'at'}, `${m.file}:${m.line}`) : null, m.msg], m.ts);
    }
    else if (m.type === 'invocation') {
      add(m.error ? 'error' : 'debug', m.error ? `✖ ${m.error}` : `✓ v${m.version} in ${micros(m.duration_us)}`, m.ts);
    }
    while (list.childElementCount > 200) list.lastElementChild.remove();
  }
}

// would shows what a dry run would have done: KV writes, emits, publishes, GPIO writes.
function would(w) {
  const groups = [
    ['KV writes', w.kv, (e) => e.deleted ? `del ${e.key}` : `set ${e.key} = ${short(e.value ?? null, 120)}`],
    ['Emits', w.emits, (e) => `${e.stream} ← ${short(e.data ?? null, 120)}`],
    ['Publishes', w.publishes, (e) => `${e.topic} ← ${short(e.payload ?? '', 120)}${e.qos ? ` · qos ${e.qos}` : ''}${e.retain ? ' · retained' : ''}`],
    ['GPIO writes', w.gpio, (e) => `${e.pin} → ${e.level}`],
  ].filter(([, list]) => list && list.length);
  if (!groups.length) return h('div', {class: 'res-would muted', 'data-testid': 'invoke-would'}, 'Dry run: it would have changed nothing.');
  return h('div', {class: 'res-would', 'data-testid': 'invoke-would'},
    h('div', {class: 'muted'}, 'Dry run: nothing was applied. It would have made:'),
    groups.flatMap(([title, list, line]) => [h('h3', {}, title), h('ul', {}, list.map((e) => h('li', {}, line(e))))]));
}
