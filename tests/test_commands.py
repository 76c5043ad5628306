"""Every `python -m rs...` command the documentation names exists and answers --help.

The commands are collected from README.md, docs/, scripts/, configs/ and the package's own
docstrings, so renaming or moving a command without updating every mention fails here.
"""
import importlib
import pathlib
import re

import pytest

from conftest import run_command

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
  # In this process (conftest.run_command): every command defines its flags in define_flags()
  # and starts through rs.cli.run, which the next test checks.
  run = run_command(module, '--help')
  # absl prints the module's docstring and its flags to stdout, then exits with status 1.
  assert run.status == 1 and 'Traceback' not in run.stderr, (
      f'{module} (named in {sorted(set(COMMANDS[module]))}): {run.stderr[-2000:]}')
  assert f'{module}:' in run.stdout and '  --' in run.stdout, run.stdout  # its flags' heading
  assert run.stdout.lstrip().startswith(importlib.import_module(module).__doc__.strip()[:40])


@pytest.mark.parametrize('module', sorted(COMMANDS))
def test_documented_command_starts_as_a_program_through_rs_cli(module):
  """`python -m module` runs define_flags() then cli.run(main): the same path as run_command,
  and the one error mechanism (tests/test_cli_errors.py)."""
  source = (ROOT / (module.replace('.', '/') + '.py')).read_text()
  assert source.rstrip().endswith("if __name__ == '__main__':\n  define_flags()\n  cli.run(main)")
