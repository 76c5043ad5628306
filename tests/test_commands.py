"""Every `python -m rs...` command the documentation names exists and answers --help.

The commands are collected from README.md, docs/, scripts/, configs/ and the package's own
docstrings, so renaming or moving a command without updating every mention fails here.
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMAND = re.compile(r'python -m (rs(?:\.\w+)+)')


def documented_commands() -> dict[str, list[str]]:
  """{module: [files that mention it]}."""
  files = [ROOT / 'README.md', *ROOT.glob('docs/*.md'), *ROOT.glob('scripts/*.sh'),
           *ROOT.glob('configs/*.py'), *ROOT.glob('rs/**/*.py'), *ROOT.glob('notebooks/*.ipynb')]
  found = {}
  for path in files:
    for module in COMMAND.findall(path.read_text()):
      found.setdefault(module, []).append(str(path.relative_to(ROOT)))
  return found


COMMANDS = documented_commands()


def test_the_documentation_names_the_user_commands_and_the_tools():
  assert {'rs.main', 'rs.evaluate', 'rs.export', 'rs.predict', 'rs.convert'} <= set(COMMANDS)
  assert {'rs.tools.benchmark', 'rs.tools.summary', 'rs.tools.pareto'} <= set(COMMANDS)


@pytest.mark.parametrize('module', sorted(COMMANDS))
def test_documented_command_answers_help(module):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'} | {'PYTHONPATH': str(ROOT)}
  run = subprocess.run([sys.executable, '-m', module, '--help'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=180)
  # absl prints the module's docstring and its flags to stdout, then exits with status 1.
  assert run.returncode == 1 and 'Traceback' not in run.stderr, (
      f'{module} (named in {sorted(set(COMMANDS[module]))}): {run.stderr[-2000:]}')
  path = module.replace('.', '/') + '.py:'  # the heading of the module's own flags
  assert path in run.stdout and '  --' in run.stdout, run.stdout
