"""The README is short and names every method up front; every page it and the docs link to
exists; nothing points at files a user does not have."""
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))
METHODS = ('MixMAE', 'MAE', 'UM-MAE', 'SimMIM', 'MixedAE')


def test_readme_is_short_and_names_the_five_methods_first():
  lines = (REPO / 'README.md').read_text().splitlines()
  assert len(lines) <= 150
  opening = '\n'.join(lines[:20])
  for method in METHODS:
    assert f'[{method}]' in opening, method
  assert any('test-command' in line for line in lines)  # .ci/run reads the command after it


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
  for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', page.read_text()):
    if re.match(r'[a-z]+:', target):
      continue  # a URL
    assert (page.parent / target).exists(), f'{page.name} links to {target}'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_no_page_points_at_files_a_user_does_not_have(page):
  text = page.read_text()
  assert '../shared' not in text and 'SPEC' not in text


def test_every_docs_page_is_reachable_from_the_readme():
  readme = (REPO / 'README.md').read_text()
  for page in sorted((REPO / 'docs').glob('*.md')):
    assert f'(docs/{page.name})' in readme, page.name


def test_the_weights_page_shows_the_table_as_the_code_has_it():
  from mixmae_jax.weights import __main__ as weights_cli  # pylint: disable=import-outside-toplevel
  assert weights_cli.markdown() in (REPO / 'docs' / 'weights.md').read_text()


def _expand(pattern: str):
  """`a_{b,c}[_d]` -> a_b, a_c, a_b_d, a_c_d."""
  match = re.search(r'\{([^{}]*)\}|\[([^\[\]]*)\]', pattern)
  if not match:
    return {pattern}
  options = match.group(1).split(',') if match.group(1) is not None else ['', match.group(2)]
  return {name for option in options
          for name in _expand(pattern[:match.start()] + option + pattern[match.end():])}


def test_the_readme_names_every_published_release():
  from mixmae_jax.weights.table import RELEASES  # pylint: disable=import-outside-toplevel
  readme = (REPO / 'README.md').read_text()
  section = readme[readme.index('Published names'):readme.index('examples/pretrained_weights')]
  named = set()
  for pattern in re.findall(r'`([a-z0-9_{},\[\]]+)`', section):
    named |= _expand(pattern)
  assert named == set(RELEASES)
