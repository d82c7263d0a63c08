"""Every command explains itself: `--help` lists its own flags first, configs are found by name,
and a missing config, flag value or optional dependency is one `error:` line."""
import importlib
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from mixmae_jax.cli import command, config_files, extras, startup
from mixmae_jax.interop import convert
from mixmae_jax.measurement import (benchmark, cifar_experiment, digits_experiment, gpu_check,
                                    pipeline_benchmark, profile_summary, save_stall_benchmark,
                                    topk_attention_benchmark)
from mixmae_jax.weights import __main__ as weights_cli

REPO = pathlib.Path(__file__).resolve().parents[1]

# module -> the flags its help must list (its first flag first)
IN_PROCESS = {
    convert: ['arch', 'decoder_num_heads', 'overwrite'],
    benchmark: ['config', 'compare_config', 'batch_size', 'tpu_topology'],
    pipeline_benchmark: ['config', 'image_folder', 'threads'],
    save_stall_benchmark: ['config', 'steps', 'workdir'],
    topk_attention_benchmark: ['batch', 'tokens', 'keys'],
    profile_summary: ['top'],
    cifar_experiment: ['study', 'workdir', 'data_root', 'seeds', 'rows', 'tasks'],
    digits_experiment: ['workdir', 'fast', 'data_only'],
    gpu_check: ['toy', 'official_repo', 'find_max_batch'],
}


def _env(**extra):
  env = dict(os.environ, **extra)
  env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
  return env


def _flags_listed(text: str):
  return re.findall(r'^  --(\w+)', text, re.MULTILINE)


@pytest.mark.parametrize('module', list(IN_PROCESS), ids=lambda m: m.__name__.split('.')[-1])
def test_help_lists_the_commands_own_flags_first(module, capsys):
  main = module.main
  with pytest.raises(SystemExit) as exit_info:
    main(['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith(module.__doc__.strip().splitlines()[0])
  listed = _flags_listed(out.split('\nFlags:\n', 1)[1])
  assert listed[0] == IN_PROCESS[module][0]
  assert set(IN_PROCESS[module]) <= set(listed)
  assert 'logtostderr' not in out and 'Try --helpfull' not in out


def test_the_weights_command_help_is_its_usage(capsys):
  with pytest.raises(SystemExit, match='^0$'):
    weights_cli.main(['--help'])
  out = capsys.readouterr().out
  assert out.startswith('Pretrained weights by name.') and 'mixmae-weights download NAME' in out
  with pytest.raises(SystemExit, match='^1$'):
    weights_cli.main(['fetch'])
  assert capsys.readouterr().err.startswith("error: expected `list`, `download NAME` or `path "
                                            "NAME`, got ['fetch']")


@pytest.mark.parametrize('module', ['mixmae_jax.train', 'mixmae_jax.finetune'])
def test_train_and_finetune_help_lists_config_and_workdir_first(module, tmp_path):
  out = subprocess.run([sys.executable, '-m', module, '--help'], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  listed = _flags_listed(out.stdout)
  assert listed[:2] == ['config', 'workdir'] and 'peer_timeout' in listed
  assert 'logtostderr' not in out.stdout
  assert out.stderr == ''  # neither TensorFlow's nor libtpu's start-up lines


def test_every_console_script_names_a_function_that_exists():
  spec = importlib.util.spec_from_file_location('mixmae_jax_setup', REPO / 'setup.py')
  setup = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(setup)  # `setup()` runs only as __main__
  scripts = [re.fullmatch(r'(mixmae-[\w-]+) = ([\w.]+):(\w+)', s).groups()
             for s in setup.CONSOLE_SCRIPTS]
  assert {'mixmae-train', 'mixmae-finetune', 'mixmae-convert', 'mixmae-weights',
          'mixmae-benchmark', 'mixmae-gpu-check'} <= {name for name, _, _ in scripts}
  for _, module, function in scripts:
    assert callable(getattr(importlib.import_module(module), function)), (module, function)
  # each script function runs a module that has a `main`, and every one has a script
  from mixmae_jax import scripts as script_module  # pylint: disable=import-outside-toplevel
  for module, _ in script_module.COMMANDS.values():
    assert callable(importlib.import_module(module).main), module
  assert {f for _, m, f in scripts if m == 'mixmae_jax.scripts'} == set(script_module.COMMANDS)


def test_configs_are_found_by_name_path_or_checkout_path(tmp_path, monkeypatch):
  assert 'demo' in config_files.names() and 'mixmae_swin_base_w14_600ep' in config_files.names()
  path, _, arg = config_files.resolve('mixmae_swin_base_w14_600ep:runlocal').partition(':')
  assert os.path.isfile(path) and path.endswith('mixmae_swin_base_w14_600ep.py')
  assert arg == 'runlocal'
  own = tmp_path / 'mine.py'
  own.write_text('def get_config():\n  return None\n')
  assert config_files.resolve(f'{own}:x') == f'{own}:x'
  monkeypatch.chdir(tmp_path)  # the README's `configs/demo.py` from another directory
  assert config_files.resolve('configs/demo.py').endswith(os.path.join('configs', 'demo.py'))
  with pytest.raises(config_files.ConfigNotFound, match=r"no config file 'dmeo'. Did you mean "
                     r'demo\?'):
    config_files.resolve('dmeo')
  with pytest.raises(config_files.ConfigNotFound, match='no config file'):
    config_files.resolve('elsewhere/demo.py')


def test_a_missing_config_is_one_error_line(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'mixmae_jax.train', '--config=no_such_recipe.py',
                        f'--workdir={tmp_path / "run"}'], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.splitlines() == [
      "error: --config=no_such_recipe.py: no config file 'no_such_recipe.py'. Configs by name: "
      + ', '.join(config_files.names()) + '.']
  assert not (tmp_path / 'run').exists()


def test_a_bad_flag_value_is_one_error_line(capsys):
  with pytest.raises(SystemExit, match='^1$'):
    topk_attention_benchmark.main(['--keys=many'])
  assert capsys.readouterr().err.splitlines() == [
      "error: flag --keys=many: invalid literal for int() with base 10: 'many' (see --help)"]
  with pytest.raises(SystemExit, match='^1$'):
    convert.main(['only_one_path'])
  assert capsys.readouterr().err == "error: expected SRC and DST, got ['only_one_path'] (see " \
                                    "--help)\n"


def _poison(tmp_path, name: str) -> dict:
  """An environment where importing `name` fails as an uninstalled package does."""
  (tmp_path / 'poison' / name).mkdir(parents=True)
  (tmp_path / 'poison' / name / '__init__.py').write_text(
      f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n')
  return _env(PYTHONPATH=os.pathsep.join([str(tmp_path / 'poison'), str(REPO)]))


@pytest.mark.parametrize('name, argv', [
    ('tensorflow', ['mixmae_jax.train', '--config=demo', '--config.num_train_steps=2',
                    '--config.warmup_steps=1', '--workdir=WORK']),
    ('sklearn', ['mixmae_jax.measurement.digits_experiment', '--workdir=WORK', '--data_only']),
    ('torch', ['mixmae_jax.convert', 'SRC.pth', 'WORK', '--arch=mixmim_base']),
])
def test_a_missing_extra_is_one_error_line_naming_its_install(tmp_path, name, argv):
  (tmp_path / 'SRC.pth').write_bytes(b'not read')
  argv = [a.replace('WORK', str(tmp_path / 'work')).replace('SRC.pth', str(tmp_path / 'SRC.pth'))
          for a in argv]
  out = subprocess.run([sys.executable, '-m'] + argv, cwd=tmp_path, env=_poison(tmp_path, name),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  lines = [line for line in out.stderr.splitlines() if not line.startswith(('I', 'W'))]
  what, install = extras.EXTRAS[name]
  assert len(lines) == 1 and what in lines[0] and install in lines[0], out.stderr
  assert lines[0].startswith('error: ') and 'Traceback' not in out.stderr


def test_missing_extra_names_only_optional_packages():
  assert extras.missing_extra(ModuleNotFoundError('x', name='tensorflow.io')).endswith(
      "pip install 'mixmae_jax[train]'")
  assert extras.missing_extra(ModuleNotFoundError('x', name='jax')) is None  # a broken install
  assert extras.missing_extra(ValueError('x')) is None


def test_libtpu_is_told_there_is_no_tpu_only_on_a_machine_without_one(monkeypatch):
  for name in ('TPU_ACCELERATOR_TYPE', 'TPU_HOST_BOUNDS', 'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(startup, 'tpu_chips_present', lambda: True)
  startup.tell_libtpu_there_is_no_tpu()
  assert 'TPU_ACCELERATOR_TYPE' not in os.environ
  monkeypatch.setattr(startup, 'tpu_chips_present', lambda: False)
  monkeypatch.setattr(startup.importlib.util, 'find_spec', lambda name: object())
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'mine')  # what the user set is kept
  startup.tell_libtpu_there_is_no_tpu()
  assert os.environ['TPU_ACCELERATOR_TYPE'] == 'none'
  assert os.environ['TPU_WORKER_HOSTNAMES'] == 'mine'


def test_help_text_wraps_and_shows_defaults():
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  flags.DEFINE_integer('steps', 10, 'steps timed', flag_values=fv)
  flags.DEFINE_bool('fast', False, 'short', flag_values=fv)
  text = command.help_text('Doc line.', command.own_flags(fv))
  assert text.splitlines()[:4] == ['Doc line.', '', 'Flags:', '  --steps=INT']
  assert "(default: '10')" in text and '--fast / --nofast' in text


def _install_copy(tmp_path) -> pathlib.Path:
  """A non-editable install of this checkout (no dependencies: they are this environment's)
  into a directory of its own; returns that directory."""
  import shutil  # pylint: disable=import-outside-toplevel
  source = tmp_path / 'source'
  ignore = shutil.ignore_patterns('__pycache__', '*.egg-info', 'build')
  for name in ('mixmae_jax', 'configs'):
    shutil.copytree(REPO / name, source / name, ignore=ignore)
  for name in ('setup.py', 'README.md'):
    shutil.copy(REPO / name, source / name)
  target = tmp_path / 'installed'
  isolation = [] if importlib.util.find_spec('setuptools') is None else ['--no-build-isolation']
  out = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', *isolation,
                        '--target', str(target), str(source)], capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return target


def test_a_non_editable_install_runs_the_demo_by_name_from_any_directory(tmp_path):
  target = _install_copy(tmp_path)
  assert (target / 'mixmae_jax' / 'configs' / 'demo.py').is_file()
  empty = tmp_path / 'empty'
  empty.mkdir()
  env = dict(os.environ, PYTHONPATH=str(target),
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  short = ['--config.num_train_steps=2', '--config.warmup_steps=1', '--config.batch_size=8',
           '--config.log_every_steps=1']
  for i, cmd in enumerate([[sys.executable, '-m', 'mixmae_jax.train'],
                           [sys.executable, str(target / 'bin' / 'mixmae-train')]]):
    work = tmp_path / f'run{i}'
    out = subprocess.run(cmd + ['--config=demo', f'--workdir={work}'] + short, cwd=empty,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'checkpoint   {work}' in out.stdout and 'finished in' in out.stdout
    assert (work / 'reconstructions').is_dir()
    assert str(REPO) not in out.stdout + out.stderr  # the installed copy ran, not the checkout
  again = subprocess.run([sys.executable, '-m', 'mixmae_jax.train', '--config=demo',
                         f'--workdir={tmp_path / "run0"}'] + short, cwd=empty, env=env,
                        capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'all 2 steps of this run are trained' in again.stderr and 'nothing more to do' in \
      again.stderr
  assert 'step 2' in again.stdout.splitlines()[-4]  # the summary still says where things are
  assert list(empty.iterdir()) == []


def test_the_summary_names_the_figures_and_where_things_are(tmp_path):
  from mixmae_jax.training import run_summary  # pylint: disable=import-outside-toplevel
  (tmp_path / 'checkpoints' / '20').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '100').mkdir()
  (tmp_path / 'reconstructions').mkdir()
  (tmp_path / 'reconstructions' / 'step_0000100.png').write_bytes(b'')
  (tmp_path / 'status.json').write_text('{"state": "finished", "step": 100}')
  lines = run_summary.text(str(tmp_path), {'loss': 0.41234, 'lr': 1e-4}, 192.4).splitlines()
  assert lines[0] == 'finished in 3 min 12 s: step 100, loss 0.4123'
  assert lines[1] == f'  checkpoint   {tmp_path / "checkpoints" / "100"}'  # numerically newest
  assert lines[2] == f'  pictures     {tmp_path / "reconstructions" / "step_0000100.png"}'
  assert len(lines) == 3  # no metrics file, no metrics line
  assert run_summary.text(str(tmp_path / 'none'), None, 7200) == 'finished in 2 h 0 min'


def test_a_config_that_raises_is_one_error_line(tmp_path):
  config = tmp_path / 'broken.py'
  config.write_text('def get_config(arg=None):\n  raise ValueError(f"unknown argument {arg!r}")\n')
  out = subprocess.run([sys.executable, '-m', 'mixmae_jax.train', f'--config={config}:bogus',
                        f'--workdir={tmp_path / "run"}'], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.splitlines() == [
      f"error: --config={config}:bogus: ValueError: unknown argument 'bogus' (see --help)"]
