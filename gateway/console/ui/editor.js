// The code editor: a transparent <textarea> over a highlighted <pre>, with a line
// gutter and an error marker at a line. Light on purpose: a full editor library would
// weigh more than the rest of the console together.

import {$, h} from './dom.js';
import {highlight} from './lua.js';

const OPENERS = /(\bthen|\bdo|\belse|\brepeat|\bfunction\b.*\)|[{(])\s*(--.*)?$/;

export class Editor {
  constructor({onSave, onRun}) {
    this.ta = $('editor-input');
    this.code = $('editor-hl');
    this.pre = this.code.parentElement;
    this.gutter = $('editor-gutter');
    this.pill = $('editor-error');
    this.band = h('div', {class: 'err-band', hidden: true});
    this.pre.before(this.band);
    this.lines = 0;
    this.error = null;
    this.onSave = onSave;
    this.onRun = onRun;
    this.ta.addEventListener('input', () => this.render());
    this.ta.addEventListener('scroll', () => this.sync());
    this.ta.addEventListener('keydown', (ev) => this.key(ev));
    window.addEventListener('resize', () => this.sync());
  }

  get value() { return this.ta.value; }

  set value(src) {
    this.ta.value = src;
    this.clearError();
    this.render();
    this.ta.scrollTop = 0;
    this.ta.scrollLeft = 0;
    this.sync();
  }

  render() {
    this.code.innerHTML = highlight(this.ta.value);
    const n = this.ta.value.split('\n').length;
    if (n !== this.lines) {
      this.lines = n;
      const frag = document.createDocumentFragment();
      for (let i = 1; i <= n; i++) frag.append(h('div', {}, i));
      this.gutter.replaceChildren(frag);
      this.markGutter();
    }
    this.sync();
  }

  metrics() {
    const cs = getComputedStyle(this.ta);
    return {lh: parseFloat(cs.lineHeight) || 20, pad: parseFloat(cs.paddingTop) || 12};
  }

  // sync moves the highlight layer, gutter and error marker with the textarea's scroll.
  sync() {
    const {scrollTop: y, scrollLeft: x} = this.ta;
    this.pre.style.transform = `translate(${-x}px, ${-y}px)`;
    this.gutter.style.transform = `translateY(${-y}px)`;
    if (this.error) {
      const {lh, pad} = this.metrics();
      const top = pad + (this.error.line - 1) * lh - y;
      this.band.style.top = `${top}px`;
      this.band.style.height = `${lh}px`;
      this.pill.style.top = `${top + (lh - 20) / 2}px`;
    }
  }

  // setError marks a 1-based line with msg and scrolls it into view.
  setError(line, msg) {
    // "Line 2: boom", not "Line 2: f v1: f.lua:2: boom": the pill gives the place once.
    msg = msg.replace(new RegExp(`^[^\n]*?:${line | 0}: `), '');
    const n = this.ta.value.split('\n').length;
    line = Math.min(Math.max(1, line | 0), n);
    this.error = {line, msg};
    this.pill.textContent = `Line ${line}: ${msg}`;
    this.pill.title = msg;
    this.pill.dataset.line = String(line);
    this.pill.hidden = false;
    this.band.hidden = false;
    this.markGutter();
    const {lh} = this.metrics();
    const view = this.ta.clientHeight;
    const y = (line - 1) * lh;
    if (y < this.ta.scrollTop || y > this.ta.scrollTop + view - 3 * lh) {
      this.ta.scrollTop = Math.max(0, y - view / 3);
    }
    this.sync();
  }

  clearError() {
    this.error = null;
    this.pill.hidden = true;
    this.band.hidden = true;
    delete this.pill.dataset.line;
    this.markGutter();
  }

  markGutter() {
    for (const el of this.gutter.querySelectorAll('.err')) el.classList.remove('err');
    if (this.error) this.gutter.children[this.error.line - 1]?.classList.add('err');
  }

  insert(text) {
    // execCommand keeps the browser's undo history; setRangeText is the fallback.
    if (!document.execCommand('insertText', false, text)) {
      this.ta.setRangeText(text, this.ta.selectionStart, this.ta.selectionEnd, 'end');
      this.render();
    }
  }

  key(ev) {
    const mod = ev.ctrlKey || ev.metaKey;
    if (mod && ev.key === 's') {
      ev.preventDefault();
      this.onSave();
    } else if (mod && ev.key === 'Enter') {
      ev.preventDefault();
      this.onRun();
    } else if (ev.key === 'Tab' && !ev.shiftKey && !mod && !ev.altKey) {
      // Escape then Tab leaves the editor, so the keyboard is never trapped.
      if (this.escaped) return;
      ev.preventDefault();
      this.insert('  ');
    } else if (ev.key === 'Enter' && !mod && !ev.shiftKey && !ev.altKey && !ev.isComposing) {
      const before = this.ta.value.slice(0, this.ta.selectionStart);
      const line = before.slice(before.lastIndexOf('\n') + 1);
      let indent = /^\s*/.exec(line)[0];
      if (OPENERS.test(line)) indent += '  ';
      ev.preventDefault();
      this.insert('\n' + indent);
    }
    this.escaped = ev.key === 'Escape';
  }
}
