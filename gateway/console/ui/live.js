// The live stream: one websocket for the whole page, reconnecting with backoff. Browsers
// cannot set an Authorization header on a websocket, so the token rides in a
// "bearer.TOKEN" subprotocol next to "moongate.v1" (the server answers with moongate.v1
// only), or in ?token= when it has characters a subprotocol cannot carry.

import {token, get} from './api.js';

const TCHAR = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;

export class Live {
  constructor({onMessage, onState}) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.delay = 1000;
    this.ws = null;
    this.opened = false;
    this.state = 'connecting';
    // A page kept in the back/forward cache would otherwise hold its socket open and
    // count against the gateway's client cap while nobody looks at it.
    window.addEventListener('pagehide', () => this.stop());
    window.addEventListener('pageshow', (ev) => { if (ev.persisted) this.reconnect(); });
  }

  stop() {
    const old = this.ws;
    this.ws = null;
    if (old) old.close(1000);
  }

  connect() {
    const url = new URL('api/v1/live', document.baseURI);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const t = token();
    const protocols = ['moongate.v1'];
    if (t && TCHAR.test(t)) protocols.push(`bearer.${t}`);
    else if (t) url.searchParams.set('token', t);
    this.setState('connecting');
    const ws = new WebSocket(url, protocols);
    this.ws = ws;
    this.opened = false;
    ws.onopen = () => {
      this.opened = true;
      this.delay = 1000;
      this.setState('open');
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.setState('closed', this.opened);
      // A handshake refused before opening is most often a missing or stale token: an
      // API call shows the token prompt on 401, then we retry with the new token.
      const check = this.opened ? Promise.resolve() : get('status').catch(() => {});
      check.then(() => setTimeout(() => this.connect(), this.delay));
      this.delay = Math.min(this.delay * 2, 15000);
    };
  }

  // setState tells the page; wasOpen says a socket that worked was lost.
  setState(state, wasOpen = false) {
    this.state = state;
    this.onState(state, wasOpen);
  }

  // reconnect drops the current socket and opens a new one at once, e.g. after the token
  // changed.
  reconnect() {
    this.stop();
    this.delay = 1000;
    this.connect();
  }
}
