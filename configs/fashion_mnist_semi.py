"""Semi-supervised Fashion-MNIST: 6,000 labeled images (10% of the training split), the next
48,000 unlabeled, labeled by a teacher for its students (paper section 7.3, Noisy Student's way).

The embedded default's network and recipe (configs/fashion_mnist.py) on train[:6000]; epochs
count the labeled images. Its evaluation reads a minival, the last 6,000 training images,
held out of everything a run trains on (labeled or pseudo-labeled: a student trained on the
minival's images would score them too well); its labels only choose hyperparameters. The test
split is read once, by the final evaluations (scripts/semi_supervised_study.sh). The teacher is
this config as it is (data.pseudo.ratio is 0 until a pseudo-label directory is given); k
rounds of teacher -> pseudo-labels -> student:

  python -m rs.tools.noisy_student --config=configs/fashion_mnist_semi.py --out=runs/semi \\
      --data=fashion_mnist --split='train[6000:54000]' --rounds=2

Expected figures: docs/semi_supervised.md.
"""
from configs import fashion_mnist


def get_config():
  c = fashion_mnist.get_config()
  c.data.train_split = 'train[:6000]'
  c.data.eval_split = 'train[54000:]'  # minival
  c.batch_size = 128
  c.train_epochs = 60.0  # 2,812 steps of 128 labeled images
  c.warmup_epochs = 2.0
  c.optimizer.base_learning_rate = 0.1  # 0.2 x 128/256, as the default's per-image rate
  c.eval_every_epochs = 10.0
  c.checkpoint_every_steps = 250
  # The students' mix: rs.tools.noisy_student sets data.pseudo.dir and --ratio (default 1: as
  # many pseudo-labeled images as labeled ones per step, Noisy Student's B0) for each round;
  # soft targets at T=1, each image weighing the same (its teacher_softmax_temp=1).
  c.data.pseudo.targets = 'soft'
  c.data.pseudo.temperature = 1.0
  return c
