"""Analemma client SDK.

Importing this package loads only the standard library. Optional libraries
(zstandard, boto3, orjson) are imported the first time a codec or store needs them.
"""

__version__ = "0.1.0"
