"""How right a teacher's pseudo-labels are, against labels the student never saw.

  python -m rs.tools.pseudo_calibration --pseudo=DIR --out=calibration.png [--bins=10]

DIR is an rs.pseudo_label output made from an in-memory dataset's split (its labels are
hidden from training: e.g. Fashion-MNIST train[6000:] in docs/semi_supervised.md). Each
pseudo-label's id is its row in that split, so its true label is known: the tool prints the
accuracy of the pseudo-labels overall, of the selected ones (copies counted), and per
confidence bin, and plots accuracy against confidence (a calibrated teacher lies on the
diagonal). With --json, one JSON object.
"""
import json

import numpy as np
from absl import app, flags

from rs import cli
from rs.errors import UserError


def calibration(directory: str, bins: int = 10) -> dict:
  """Accuracy of the pseudo-labels in `directory` against the split's hidden labels."""
  from rs.data import pseudo, sources
  pseudo_set = pseudo.PseudoSet(directory, field='--pseudo')
  data = pseudo_set.manifest['data']
  if data['name'] not in sources.ARRAY_DATASETS:
    raise UserError(f'--pseudo={directory} labels {data["description"]}: the hidden labels are '
                    'known for in-memory datasets only (fashion_mnist, lfw_faces, digits)')
  truth = sources.load_array_split(data['name'], data['split'], data.get('data_dir')).labels
  arrays = [pseudo_set.arrays(i) for i in range(pseudo_set.num_shards)]
  ids = np.concatenate([a['ids'] for a in arrays])
  labels = np.concatenate([a['labels'] for a in arrays])
  confidence = np.concatenate([a['confidences'] for a in arrays])
  copies = pseudo_set.copies()
  right = labels == truth[ids]
  edges = np.linspace(0, 1, bins + 1)
  which = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
  per_bin = [{'from': float(edges[b]), 'to': float(edges[b + 1]),
              'count': int(np.sum(which == b)),
              'accuracy': float(right[which == b].mean()) if np.any(which == b) else None,
              'mean_confidence': (float(confidence[which == b].mean()) if np.any(which == b)
                                  else None)} for b in range(bins)]
  return {'pseudo': directory, 'examples': int(len(ids)), 'accuracy': float(right.mean()),
          'selected': int(copies.sum()),
          'selected_accuracy': float(np.sum(right * copies) / max(copies.sum(), 1)),
          'bins': per_bin}


def plot(result: dict, out: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  filled = [b for b in result['bins'] if b['count']]
  fig, ax = plt.subplots(figsize=(5, 4.5))
  ax.plot([0, 1], [0, 1], color='gray', linestyle='--', label='calibrated')
  ax.plot([b['mean_confidence'] for b in filled], [b['accuracy'] for b in filled], marker='o',
          label=f"teacher ({result['accuracy']:.1%} right overall)")
  for b in filled:
    ax.annotate(f"{b['count']:,}", (b['mean_confidence'], b['accuracy']), fontsize=7,
                textcoords='offset points', xytext=(4, -10))
  ax.set(xlabel='confidence (max probability)', ylabel='pseudo-label accuracy',
         xlim=(0, 1), ylim=(0, 1.02), title='Pseudo-labels against the hidden labels')
  ax.legend(loc='upper left')
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def define_flags():
  flags.DEFINE_string('pseudo', None, 'An rs.pseudo_label output directory.')
  flags.DEFINE_string('out', None, 'A .png for the plot (optional).')
  flags.DEFINE_integer('bins', 10, 'Confidence bins.', lower_bound=1)
  flags.DEFINE_bool('json', False, 'Print one JSON object.')
  flags.mark_flags_as_required(['pseudo'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  if f.out and not f.out.endswith('.png'):
    raise UserError(f'--out={f.out}: give the path of a .png')
  result = calibration(f.pseudo, f.bins)
  if f.out:
    plot(result, f.out)
  if f.json:
    print(json.dumps(result))
    return
  print(f"{result['examples']:,} pseudo-labels, {result['accuracy']:.2%} right; selected "
        f"{result['selected']:,} (copies counted), {result['selected_accuracy']:.2%} right")
  for b in result['bins']:
    if b['count']:
      print(f"  confidence {b['from']:.2f}-{b['to']:.2f}: {b['count']:>7,} images, "
            f"{b['accuracy']:.2%} right (mean confidence {b['mean_confidence']:.3f})")


if __name__ == '__main__':
  define_flags()
  cli.run(main)
