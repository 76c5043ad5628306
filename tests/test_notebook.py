"""notebooks/finetune.ipynb runs top to bottom in a fresh kernel, as a user would run it."""
import os
import re

import pytest

from conftest import FAST_COMPILE_XLA_FLAGS, ROOT

NOTEBOOK = os.path.join(ROOT, 'notebooks', 'finetune.ipynb')


def test_finetune_notebook_executes_and_transfers(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  # The kernel is a new process: one CPU device, as on a laptop (not the tests' 8).
  monkeypatch.setenv('XLA_FLAGS', FAST_COMPILE_XLA_FLAGS)
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Any cell error raises CellExecutionError naming the cell.
  nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  text = '\n'.join(output.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                   for output in cell.outputs if output.output_type == 'stream')
  finetuned, scratch = map(float, re.search(
      r'test top-1: fine-tuned ([\d.]+), from scratch ([\d.]+)', text).groups())
  assert finetuned > 0.75 and scratch > 0.5  # two balanced classes: chance is 0.5
  shown = float(re.search(r'([\d.]+) of the 40 test images right', text).group(1))
  assert shown == finetuned  # the exported weights predict as the trainer evaluated
  figures = [output for cell in notebook.cells if cell.cell_type == 'code'
             for output in cell.outputs if 'image/png' in output.get('data', {})]
  assert len(figures) == 2  # the curves and the grid of predictions
