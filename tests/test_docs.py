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
