"""griffe extension for the API reference: vislab's docstrings as the site shows them.

- an ``Example:`` section (singular, as vislab writes it) is read as Google style's ``Examples:``, so its
  ``>>>`` lines render as code instead of nested quotes;
- Sphinx roles (``:func:`predict```, ``:mod:`vislab.api```) become plain inline code.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj|exc):`~?([^`]+)`")
EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class VislabDocstrings(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is None:
            return
        text = EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
        obj.docstring.value = ROLE.sub(r"`\1`", text)
