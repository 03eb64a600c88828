"""Names parsed once: a granularity or criterion object *is* its name (a ``str``).

Plans, JSON, labels and comparisons use it as the string (``lp.granularity == "channel"``); the engine uses
it as the object (``lp.granularity.layout(layer)``). Instances are immutable: they copy as themselves and
pickle as their name, parsed back by the class's ``parse``.
"""
from __future__ import annotations


class Named(str):
    NAME: str = ""
    label: str = ""
    tooltip: str = ""

    @staticmethod
    def parse(name: str) -> "Named":   # set by each family: name -> instance
        raise NotImplementedError

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __reduce__(self):
        return type(self).parse, (self.name,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self
