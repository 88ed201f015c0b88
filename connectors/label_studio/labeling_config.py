"""Label Studio labeling configs: generated from the task kind and label set, or checked.

A config has one *object* tag that shows the item (``<Image value="$image">`` or
``<Text value="$text">``) and one *control* tag that collects the answer (``<Choices>`` for
classification, ``<RectangleLabels>`` for detection) whose children are the labels.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from alloop.errors import ConfigError, format_list

#: task kind -> (object tag, data key, control tag, child tag, result type)
KINDS = {
    "classification": ("Image", "image", "Choices", "Choice", "choices"),
    "text": ("Text", "text", "Choices", "Choice", "choices"),
    "detection": ("Image", "image", "RectangleLabels", "Label", "rectanglelabels"),
}


@dataclass(frozen=True)
class ConfigInfo:
    """What alloop needs to know about a labeling config."""

    xml: str
    from_name: str
    to_name: str
    data_key: str
    result_type: str
    labels: tuple[str, ...]


def _kind(task: str) -> tuple[str, str, str, str, str]:
    try:
        return KINDS[task]
    except KeyError:
        raise ConfigError(f"Label Studio supports task kinds {sorted(KINDS)}; got {task!r}.") from None


def generate(task: str, labels: tuple[str, ...] | list[str]) -> str:
    """The labeling config for ``task`` with ``labels`` (values XML-escaped)."""
    obj, key, control, child, _ = _kind(task)
    extra = ' choice="single" showInline="true"' if control == "Choices" else ""
    children = "\n".join(f"    <{child} value={quoteattr(lb)}/>" for lb in labels)
    return (
        f"<View>\n  <{obj} name={quoteattr(key)} value=\"${key}\"/>\n"
        f"  <{control} name=\"label\" toName={quoteattr(key)}{extra}>\n{children}\n  </{control}>\n</View>"
    )


def inspect(xml: str, task: str, labels: tuple[str, ...] | list[str], where: str = "the labeling config") -> ConfigInfo:
    """Parse ``xml`` and check it against the task kind and label set.

    Raises
    ------
    ConfigError
        Unparseable XML, no object/control tag of the right kind, or labels that differ from the
        project's (the message names the missing and the extra ones).
    """
    obj_tag, _, control_tag, child_tag, result_type = _kind(task)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigError(f"{where} is not valid XML: {exc}.") from None
    controls = [e for e in root.iter(control_tag)]
    if len(controls) != 1:
        raise ConfigError(
            f"{where} must have exactly one <{control_tag}> tag for a {task!r} project; found {len(controls)}."
        )
    control = controls[0]
    from_name, to_name = control.get("name"), control.get("toName")
    objects = {e.get("name"): e for e in root.iter(obj_tag)}
    if not from_name or not to_name or to_name not in objects:
        raise ConfigError(
            f"{where}: <{control_tag}> needs a name and a toName pointing at an <{obj_tag}> tag "
            f"(found name={from_name!r}, toName={to_name!r}, {obj_tag} tags: {sorted(k for k in objects if k)})."
        )
    value = objects[to_name].get("value", "")
    if not value.startswith("$"):
        raise ConfigError(f"{where}: <{obj_tag} name={to_name!r}> must read a task field like value=\"$image\".")
    found = tuple(c.get("value", "") for c in control.iter(child_tag))
    missing = [lb for lb in labels if lb not in found]
    extra = [lb for lb in found if lb not in labels]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing labels {format_list(missing, 10)}")
        if extra:
            parts.append(f"extra labels {format_list(extra, 10)}")
        raise ConfigError(
            f"{where} does not match the project's label set: {'; '.join(parts)}. Make the "
            f"<{child_tag}> values equal [project] labels in alloop.toml, or drop the custom config "
            "to let alloop generate one."
        )
    return ConfigInfo(xml, from_name, to_name, value[1:], result_type, found)
