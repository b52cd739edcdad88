// A bar chart of accuracy per condition with 95% intervals, as a standalone SVG (no dependencies,
// opens in any browser).
import type { ConditionSummary } from './summary.js';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function accuracySvg(conditions: readonly ConditionSummary[], title: string): string {
  const W = 120 * Math.max(conditions.length, 1) + 100, H = 360, left = 60, top = 40, bottom = 70, plotH = H - top - bottom;
  const y = (v: number) => top + plotH * (1 - v);
  const bars = conditions.map((c, i) => {
    const x = left + 20 + i * 120, w = 70;
    const lo = Math.max(0, c.accuracy - c.ci95), hi = Math.min(1, c.accuracy + c.ci95);
    return [
      `<rect x="${x}" y="${y(c.accuracy).toFixed(1)}" width="${w}" height="${(plotH * c.accuracy).toFixed(1)}" fill="${i >= conditions.length - 2 && /SEAL/.test(c.name) ? '#d9480f' : '#4c6ef5'}"/>`,
      `<line x1="${x + w / 2}" x2="${x + w / 2}" y1="${y(lo).toFixed(1)}" y2="${y(hi).toFixed(1)}" stroke="#222" stroke-width="1.5"/>`,
      `<line x1="${x + w / 2 - 8}" x2="${x + w / 2 + 8}" y1="${y(lo).toFixed(1)}" y2="${y(lo).toFixed(1)}" stroke="#222"/>`,
      `<line x1="${x + w / 2 - 8}" x2="${x + w / 2 + 8}" y1="${y(hi).toFixed(1)}" y2="${y(hi).toFixed(1)}" stroke="#222"/>`,
      `<text x="${x + w / 2}" y="${(y(hi) - 6).toFixed(1)}" text-anchor="middle" font-size="12">${(100 * c.accuracy).toFixed(1)}%</text>`,
      `<text x="${x + w / 2}" y="${H - bottom + 18}" text-anchor="middle" font-size="12">${esc(c.name)}</text>`,
      `<text x="${x + w / 2}" y="${H - bottom + 34}" text-anchor="middle" font-size="10" fill="#666">n=${c.questions}</text>`,
    ].join('');
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => `<line x1="${left}" x2="${W - 20}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/><text x="${left - 6}" y="${y(t) + 4}" text-anchor="end" font-size="11">${t * 100}%</text>`);
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>
${ticks.join('\n')}
${bars.join('\n')}
<text x="16" y="${top + plotH / 2}" transform="rotate(-90 16 ${top + plotH / 2})" text-anchor="middle" font-size="12">closed-book accuracy (95% CI)</text>
</svg>
`;
}
