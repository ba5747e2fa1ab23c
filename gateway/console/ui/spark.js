// Sparklines as small SVGs: a line with a soft area under it, plus red ticks where a
// point is flagged (an invocation that failed).

const NS = 'http://www.w3.org/2000/svg';

export function spark(values, {flags, min, max, label} = {}) {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 100 40');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  if (label) svg.setAttribute('aria-label', label);
  const n = values.length;
  if (n === 0) return svg;
  let lo = min ?? Math.min(...values);
  let hi = max ?? Math.max(...values);
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (i) => (n === 1 ? 50 : (i / (n - 1)) * 100);
  const y = (v) => 37 - ((v - lo) / (hi - lo)) * 33;
  let d = '';
  values.forEach((v, i) => { d += `${i ? 'L' : 'M'}${x(i).toFixed(2)},${y(v).toFixed(2)}`; });
  const area = document.createElementNS(NS, 'path');
  area.setAttribute('class', 'area');
  area.setAttribute('d', `${d}L${x(n - 1).toFixed(2)},40L${x(0).toFixed(2)},40Z`);
  const line = document.createElementNS(NS, 'path');
  line.setAttribute('class', 'line');
  line.setAttribute('d', n === 1 ? `M0,${y(values[0])}L100,${y(values[0])}` : d);
  svg.append(area, line);
  if (flags) {
    let ticks = '';
    flags.forEach((f, i) => { if (f) ticks += `M${x(i).toFixed(2)},34L${x(i).toFixed(2)},40`; });
    if (ticks) {
      const t = document.createElementNS(NS, 'path');
      t.setAttribute('d', ticks);
      t.setAttribute('class', 'tick');
      svg.append(t);
    }
  }
  return svg;
}
