"""Adapters: read the toolboxes' attack formats, write defense outputs in their layouts.

Importing this package registers every built-in adapter in ``ADAPTERS``:
``backdoorbench``, ``backdoor-toolbox``, ``backdoorbox`` (in-process) and ``arrays``
(numpy / ART). Run a defense on a record with :func:`advrbd_plugin.interop.run_record`.
"""
from . import arrays, backdoor_toolbox, backdoorbench, backdoorbox, names, safe_load  # noqa: F401
from .base import Adapter, ToolboxRecord
from .names import ATTACK_NAMES, our_attack
from .safe_load import RecordError, UnsafeRecordError

__all__ = ["Adapter", "ToolboxRecord", "ATTACK_NAMES", "our_attack", "RecordError",
           "UnsafeRecordError", "arrays", "backdoor_toolbox", "backdoorbench", "backdoorbox",
           "names", "safe_load"]
