"""One reader per checkpoint format, each yielding the same tensor table.

- :mod:`pyaudit.formats.safetensors`: ``.safetensors`` headers (pyaudit.headers).
- :mod:`pyaudit.formats.torch_pickle`: ``torch.save`` files (``.bin``/``.pt``; zip and the
  legacy format), their pickle walked as data by the native core, never unpickled.
- :mod:`pyaudit.formats.dcp`: ``torch.distributed.checkpoint`` directories (``.metadata`` +
  ``*.distcp``), as accelerate's FSDP saves them.
- :mod:`pyaudit.formats.deepspeed`: DeepSpeed ``global_step*/`` directories.

Every reader returns a :class:`~pyaudit.formats.table.TensorTable` (names, dtypes, shapes,
bytes, errors as values); what follows (manifest, compare, findings) is shared.
"""

from __future__ import annotations

from pyaudit.formats.table import Problem, TableEntry, TensorTable, read_table, sniff

__all__ = ["Problem", "TableEntry", "TensorTable", "read_table", "sniff"]
