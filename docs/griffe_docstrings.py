"""Griffe extension (mkdocs.yml, mkdocstrings ``extensions``): tritonn's docstrings as Markdown.

The docstrings are written for Sphinx: roles such as ``:class:`torch.nn.Linear``` and shapes
such as ``(*, in_features)``. Rendered as Markdown the role names would show as text and two
asterisks on a line would turn the text between them into italics. This drops the role names
and escapes the asterisks outside code spans, on the docstrings only (the code is untouched).
"""

from __future__ import annotations

import re

import griffe

_CODE = re.compile(r"(``.+?``|`[^`\n]+`)")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):(?=`)")


def markdown(text: str) -> str:
    text = _ROLE.sub("", text)
    parts = _CODE.split(text)
    return "".join(p if i % 2 else p.replace("*", r"\*") for i, p in enumerate(parts))


class SphinxToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
