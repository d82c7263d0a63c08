"""Seeds into a table a reviewer accepts: mean, spread, ties, and accuracy against cost.

`summarise` turns {seed: {row: {score: value}}} into {row: {score: Stat}}; `markdown` writes the
table (mean ± standard deviation over the seeds, with n); `compare` says whether one row beats
another: a difference under two standard errors (of the difference of the two means) is a tie,
not a win. `plot` draws top-1 against CPU seconds per pretraining image as a PNG (Pillow only).
"""
import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw


@dataclasses.dataclass(frozen=True)
class Stat:
  mean: float
  std: float  # sample standard deviation (ddof 1); 0 for one seed
  n: int

  @property
  def sem(self) -> float:
    """Standard error of the mean; infinite for one seed (one run cannot tell a difference)."""
    return self.std / math.sqrt(self.n) if self.n > 1 else math.inf


def summarise(per_seed: Mapping[str, Mapping[str, Mapping[str, float]]]
              ) -> Dict[str, Dict[str, Stat]]:
  """{seed: {row: {score: value}}} -> {row: {score: Stat over the seeds that have it}}."""
  values: Dict[str, Dict[str, List[float]]] = {}
  for rows in per_seed.values():
    for row, scores in rows.items():
      for key, value in scores.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          values.setdefault(row, {}).setdefault(key, []).append(float(value))
  return {row: {key: Stat(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                          len(v)) for key, v in scores.items()}
          for row, scores in values.items()}


def compare(a: Stat, b: Stat) -> Tuple[float, float, str]:
  """(a - b, the standard error of that difference, 'win' | 'loss' | 'tie' for a)."""
  diff = a.mean - b.mean
  se = math.sqrt(a.sem**2 + b.sem**2)
  if not abs(diff) >= 2 * se:  # also a tie when se is infinite (one seed)
    return diff, se, 'tie'
  return diff, se, 'win' if diff > 0 else 'loss'


def _cell(stat: Optional[Stat], digits: int, best: bool) -> str:
  if stat is None:
    return '-'
  text = f'{stat.mean:.{digits}f}' + (f' ± {stat.std:.{digits}f}' if stat.n > 1 else '')
  return f'**{text}**' if best else text


def tied_best(summary: Mapping[str, Mapping[str, Stat]], key: str) -> set:
  """The rows with the highest mean of `key` and every row tied with it."""
  have = {row: s[key] for row, s in summary.items() if key in s}
  if not have:
    return set()
  top = max(have.values(), key=lambda s: s.mean)
  return {row for row, s in have.items() if s is top or compare(top, s)[2] == 'tie'}


def markdown(summary: Mapping[str, Mapping[str, Stat]],
             columns: Sequence[Tuple[str, str, int]], rows: Sequence[str]) -> str:
  """A Markdown table: one line per row present with its number of seeds, columns (title, score
  key, decimals) as mean ± standard deviation; the best of each accuracy column and the rows tied
  with it (two standard errors) in bold."""
  bold = {key: tied_best({r: summary[r] for r in rows if r in summary}, key)
          for _, key, _ in columns if key.endswith('top1')}
  lines = ['| row | seeds | ' + ' | '.join(t for t, _, _ in columns) + ' |',
           '|---|---|' + '---|' * len(columns)]
  for row in rows:
    if row not in summary:
      continue
    cells = [_cell(summary[row].get(key), digits, row in bold.get(key, ()))
             for _, key, digits in columns]
    seeds = max(s.n for s in summary[row].values())
    lines.append(f'| {row} | {seeds} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def comparison_lines(summary: Mapping[str, Mapping[str, Stat]],
                     pairs: Sequence[Tuple[str, str]], keys: Sequence[str]) -> List[str]:
  """'a vs b, key: +d ± se (win/tie/loss)' for every pair and score both rows have."""
  out = []
  for a, b in pairs:
    for key in keys:
      if key in summary.get(a, {}) and key in summary.get(b, {}):
        diff, se, verdict = compare(summary[a][key], summary[b][key])
        out.append(f'- {a} vs {b}, {key}: {diff:+.1f} ± {se:.1f} ({verdict})')
  return out


def plot(summary: Mapping[str, Mapping[str, Stat]], x_key: str, y_key: str, path: str,
         title: str, size: Tuple[int, int] = (720, 480)) -> None:
  """A scatter of y (mean, with a ± standard deviation bar) against x per row, labelled."""
  points = [(row, s[x_key].mean, s[y_key]) for row, s in summary.items()
            if x_key in s and y_key in s]
  image = Image.new('RGB', size, 'white')
  draw = ImageDraw.Draw(image)
  left, top, right, bottom = 70, 40, size[0] - 20, size[1] - 50
  draw.rectangle([left, top, right, bottom], outline='black')
  draw.text((left, 10), title, fill='black')
  draw.text((left + (right - left) // 2 - 60, bottom + 25), x_key, fill='black')
  draw.text((5, top - 20), y_key, fill='black')
  if not points:
    image.save(path)
    return
  xs = [x for _, x, _ in points]
  ys = [y.mean - y.std for *_, y in points] + [y.mean + y.std for *_, y in points]
  x0, x1 = _padded(min(xs), max(xs))
  y0, y1 = _padded(min(ys), max(ys))
  px = lambda x: left + (x - x0) / (x1 - x0) * (right - left)  # noqa: E731
  py = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
  for value in np.linspace(y0, y1, 5):
    draw.text((5, py(value) - 6), f'{value:.1f}', fill='gray')
  for value in np.linspace(x0, x1, 5):
    draw.text((px(value) - 15, bottom + 5), f'{value:.3g}', fill='gray')
  for row, x, y in points:
    draw.line([px(x), py(y.mean - y.std), px(x), py(y.mean + y.std)], fill='steelblue', width=2)
    draw.ellipse([px(x) - 4, py(y.mean) - 4, px(x) + 4, py(y.mean) + 4], fill='darkred')
    draw.text((px(x) + 6, py(y.mean) - 6), row, fill='black')
  image.save(path)


def _padded(low: float, high: float) -> Tuple[float, float]:
  pad = (high - low) * 0.1 or max(abs(high) * 0.1, 1e-3)
  return low - pad, high + pad
