"""Container types the SDK needs at run time, without importing the ``collections`` package.

``collections.abc`` only re-exports the abstract types defined in ``_collections_abc`` (which
every interpreter has loaded before user code runs: ``os`` imports it), and ``collections``
re-exports the C ``OrderedDict`` of ``_collections``; importing either public module imports
the whole ``collections`` package first, milliseconds of a Lambda's cold start.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import OrderedDict
    from collections.abc import Mapping, MutableMapping
else:
    try:
        from _collections import OrderedDict
        from _collections_abc import Mapping, MutableMapping
    except ImportError:  # another Python implementation
        from collections import OrderedDict
        from collections.abc import Mapping, MutableMapping

__all__ = ["Mapping", "MutableMapping", "OrderedDict"]
