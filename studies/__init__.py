"""Studies built on the library: the demo, the analysis framework, and what only they need.

Nothing in `distort`, `deepcorrect` or `qrnet` imports this package, except the
`deepcorrect demo` command, which runs `studies.demo`.

- `demo`: the whole story on Fashion-MNIST or CIFAR-10 (train a baseline, rank, repair every
  way, evaluate), with every stage cached for resuming; `demo_report` writes its table,
  report and figures.
- `analysis`: the shared framework of the CIFAR-10 analysis examples (ideal correction,
  ranked vs random filters, local vs global ranking, training curves, Zhou et al.).
- `imagenet`: the stages of the DeepCorrect study on a pretrained ImageNet classifier
  (photos, split, ranking, training, evaluation, costs), shared by the MobileNetV2 examples;
  `imagenet_report` writes its tables, report and figure.
- `networks`: the small CNNs that train on a CPU (`lenet5`, `cifar10_quick`,
  `allconv_small`).
- `restoration`: classical restorers (non-local means, Wiener deconvolution), the demo's
  non-learned baseline.

Example:

>>> from studies.networks import build_network
>>> build_network("lenet5", (28, 28, 1)).output_shape
(None, 10)
"""
