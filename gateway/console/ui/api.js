// The HTTP API client (API_SHAPES.md). The bearer token lives in localStorage; on a 401
// the user is asked for it once, and every request waiting on it retries.

import {$} from './dom.js';

const KEY = 'moongate.token';

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export const token = () => localStorage.getItem(KEY) || '';

let asking = null;

// askToken shows the token dialog; concurrent callers share one prompt.
export function askToken(refused) {
  if (asking) return asking;
  const dlg = $('token-dialog');
  $('token-msg').textContent = refused
    ? 'The gateway refused that token. Check it and try again.'
    : 'This gateway needs its console token. moongate run prints where it keeps it (in the data directory).';
  $('token-input').value = '';
  asking = new Promise((resolve) => {
    const form = $('token-form');
    const done = (ev) => {
      ev.preventDefault();
      const t = $('token-input').value.trim();
      if (!t) return;
      localStorage.setItem(KEY, t);
      form.removeEventListener('submit', done);
      dlg.close();
      asking = null;
      resolve(t);
    };
    form.addEventListener('submit', done);
    dlg.addEventListener('cancel', (ev) => ev.preventDefault(), {once: true});
    dlg.showModal();
    $('token-input').focus();
  });
  return asking;
}

export async function api(method, path, body) {
  const headers = {Accept: 'application/json'};
  const sent = token();
  if (sent) headers.Authorization = `Bearer ${sent}`;
  const init = {method, headers};
  // The gateway refuses a state-changing request that does not say it is JSON: a page
  // of another origin cannot send that header without a preflight it never gets.
  if (method !== 'GET') headers['Content-Type'] = 'application/json';
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(new URL(`api/v1/${path}`, document.baseURI), init);
  if (res.status === 401) {
    // A request that left before the user gave a token just retries with it.
    if (token() === sent) await askToken(sent !== '');
    return api(method, path, body);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = {error: text.trim()}; }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path) => api('GET', path);
export const fnPath = (name) => `functions/${encodeURIComponent(name)}`;
