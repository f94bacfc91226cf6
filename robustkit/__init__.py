"""The plumbing that `distort`, `deepcorrect` and `qrnet` share; none of it is about distortion.

One module per job:

- `io`: atomic writes that end with the mode the umask gives (`atomic_path`,
  `atomic_dir`, `atomic_write_text`).
- `training_state`: a training run's resumable state (weights, optimizer, record).
- `data`: dataset loaders that accept local paths (CIFAR-10, Fashion-MNIST, image folders,
  `.npz`), centre crops and resizing.
- `preprocessing`: the input conventions of Keras applications (`"tf"`, `"torch"`,
  `"caffe"`, ...) and the one resolver that turns a name into a function.
- `seeds`: the one check for a seed (`check_seed`) and its command-line type.
- `checks`, `training_checks`: argument checks that name the argument and its range; the
  divergence guard of every trainer.
- `cli_common`: what the three command lines share (quiet start, clean errors, model
  loading).

Importing `robustkit` loads nothing heavy; import the module you need.

Example:

>>> from robustkit.seeds import check_seed
>>> check_seed(7)
7
"""
