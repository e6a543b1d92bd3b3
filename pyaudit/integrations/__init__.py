"""Integrations of pyaudit with training frameworks.

Each lives in its own submodule and imports its framework only when that submodule is
imported (``import pyaudit`` never imports one):

- :mod:`pyaudit.integrations.transformers`: ``AuditCallback``, a ``transformers``
  ``TrainerCallback`` that audits every checkpoint right after it is saved
  (``pip install 'pyaudit[hf]'``).
"""
