"""Training the query side of an existing index, and the rules every trainer follows.

Shared by all trainers (JPQ now, the sparse trainer next to it):

- :mod:`~braid.retrieval.train.leakage`: nothing is fitted on the split that is reported
  (:func:`~braid.retrieval.train.leakage.check_training_split`, also used by ``braid tune``), and a
  trained model records the dataset and split it was trained on;
- :mod:`~braid.retrieval.train.pairs`: (query, relevant document) training pairs from qrels;
- :mod:`~braid.retrieval.train.checkpoint`: resumable checkpoints, replaced atomically, refused
  when they belong to another run.

One sub-package per trainer: :mod:`braid.retrieval.train.jpq`. Trainers build on the encoders'
trainable towers (:mod:`braid.encoders.towers`); query-time code (``braid.encoders``,
``braid.retrieval.retrievers``) never imports this package. Importing it loads no torch.
"""
