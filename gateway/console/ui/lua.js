// A Lua 5.1 highlighter for the editor overlay: one pass over the source, emitting
// escaped HTML with <span class> tokens. It never fails on broken code (unterminated
// strings and comments just run to the end), since it runs on every keystroke.

import {esc} from './dom.js';

const KEYWORDS = new Set(('and break do else elseif end false for function if in local nil not or ' +
  'repeat return then true until while').split(' '));
const BUILTINS = new Set(('mqtt kv cloud gpio log json time env gateway string table math ' +
  'pairs ipairs next select tostring tonumber type pcall error assert unpack rawget rawset rawequal ' +
  'setmetatable getmetatable print').split(' '));

// longBracket returns the length of "[==[" at i (its level + 2), or 0.
function longBracket(src, i) {
  if (src[i] !== '[') return 0;
  let j = i + 1;
  while (src[j] === '=') j++;
  return src[j] === '[' ? j - i + 1 : 0;
}

function span(cls, text) {
  return `<span class="${cls}">${esc(text)}</span>`;
}

// tokens yields [class, text] pairs; class '' is plain text.
export function* tokens(src) {
  let i = 0;
  const n = src.length;
  let prevWord = '';
  while (i < n) {
    const c = src[i];
    const start = i;
    if (c === '-' && src[i + 1] === '-') {
      const lb = longBracket(src, i + 2);
      if (lb) {
        const close = ']' + '='.repeat(lb - 2) + ']';
        const end = src.indexOf(close, i + 2 + lb);
        i = end < 0 ? n : end + close.length;
      } else {
        const end = src.indexOf('\n', i);
        i = end < 0 ? n : end;
      }
      yield ['com', src.slice(start, i)];
      continue;
    }
    if (c === '"' || c === "'") {
      i++;
      while (i < n && src[i] !== c && src[i] !== '\n') i += src[i] === '\\' ? 2 : 1;
      i = Math.min(n, i + 1);
      yield ['str', src.slice(start, i)];
      continue;
    }
    const lb = longBracket(src, i);
    if (lb) {
      const close = ']' + '='.repeat(lb - 2) + ']';
      const end = src.indexOf(close, i + lb);
      i = end < 0 ? n : end + close.length;
      yield ['str', src.slice(start, i)];
      continue;
    }
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(src[i + 1] || ''))) {
      const m = /^(0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)/.exec(src.slice(i, i + 64));
      i += m ? m[0].length : 1;
      yield ['num', src.slice(start, i)];
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      while (i < n && /[A-Za-z0-9_]/.test(src[i])) i++;
      const w = src.slice(start, i);
      let cls = '';
      if (KEYWORDS.has(w)) cls = 'kw';
      else if (prevWord === 'function') cls = 'fn';
      else if (BUILTINS.has(w) && src[start - 1] !== '.' && src[start - 1] !== ':') cls = 'bi';
      prevWord = w;
      yield [cls, w];
      continue;
    }
    if (/\s/.test(c)) {
      while (i < n && /\s/.test(src[i])) i++;
      yield ['', src.slice(start, i)];
      continue;
    }
    // Field access keeps "function a.b" naming b as the function.
    if (c !== '.' && c !== ':') prevWord = '';
    i++;
    yield ['+-*/%^#=<>~'.includes(c) ? 'op' : '', c];
  }
}

// highlight returns HTML for src. Multi-line tokens are cut at each newline so that
// every line of the output is self-contained markup.
export function highlight(src) {
  let out = '';
  for (const [cls, text] of tokens(src)) {
    if (!cls) out += esc(text);
    else out += text.split('\n').map((part) => (part ? span(cls, part) : '')).join('\n');
  }
  // A trailing newline in a <pre> is swallowed; keep the last empty line visible.
  return out + '\n';
}
