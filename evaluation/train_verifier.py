"""``python -m evaluation.train_verifier``: the command issue #17 names, kept after the move of the
trainers to :mod:`evaluation.training` (same options: ``--cross-encoder`` trains the cross-encoder)."""

from evaluation.training.train_verifier import main

if __name__ == "__main__":
    main()
