"""cloud-config parts merged by cloud-init's merge rules (``merge_how``, Merge-Type).

guestha's injection appends its own cloud-config part to the user's; whether the user's
runcmd and write_files survive depends on these rules, so they are cloud-init's: the
default (dict(replace)+list()+str(): later top-level keys replace earlier ones), and the
list/dict/str mergers with their options (append, prepend, no_replace, recurse_*).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from kubevirtsim.cloudinit.parts import UserDataError

Mergers = list[tuple[str, list[str]]]

_MERGER_NAME = re.compile(r"^([a-zA-Z_][A-Za-z0-9_]*)\((.*?)\)$")
DEFAULT_MERGERS: Mergers = [("dict", ["replace"]), ("list", []), ("str", [])]


def parse_mergers(spec: Any) -> Mergers:
    """Read a ``merge_how``/``merge_type`` value: ``"list(append)+dict(no_replace)"`` or a
    list of ``{name, settings}`` mappings."""
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        mergers: Mergers = []
        for item in spec.split("+"):
            item = item.strip().lower().replace("-", "_")
            if not item:
                continue
            match = _MERGER_NAME.match(item)
            if match is None:
                raise UserDataError(f"merge_how: {item!r} is not of the form name(options)")
            opts = [o.strip().lower() for o in match.group(2).split(",") if o.strip()]
            mergers.append((match.group(1), opts))
        return _check_mergers(mergers)
    if isinstance(spec, list):
        mergers = []
        for index, item in enumerate(spec):
            if isinstance(item, dict):
                name = str(item.get("name", "")).replace("-", "_").strip().lower()
                settings = item.get("settings") or []
                if not isinstance(settings, list):
                    raise UserDataError(f"merge_how[{index}].settings: must be a list")
                opts = [str(s).strip().lower() for s in settings]
            elif isinstance(item, list) and item:
                name, opts = str(item[0]).lower(), [str(s).lower() for s in item[1:]]
            else:
                raise UserDataError(f"merge_how[{index}]: must be a mapping with name/settings")
            if name:
                mergers.append((name, opts))
        return _check_mergers(mergers)
    raise UserDataError(f"merge_how: must be a string or a list, not {type(spec).__name__}")


def _check_mergers(mergers: Mergers) -> Mergers:
    for name, _ in mergers:
        if name not in ("dict", "list", "str"):
            raise UserDataError(f"merge_how: unknown merger {name!r} (dict, list, str)")
    return mergers


class _Merger:
    """cloud-init's merger semantics: a lookup by the type of the value merged into."""

    def __init__(self, mergers: Mergers) -> None:
        self._opts: dict[str, list[str]] = {}
        for name, opts in mergers:
            self._opts.setdefault(name, opts)  # the first merger for a type wins

    def merge(self, old: Any, new: Any) -> Any:
        if isinstance(old, dict) and "dict" in self._opts:
            return self._dict(old, new, self._opts["dict"])
        if isinstance(old, list | tuple) and "list" in self._opts:
            return self._list(list(old), new, self._opts["list"])
        if isinstance(old, str) and "str" in self._opts:
            return self._str(old, new, self._opts["str"])
        return old  # no merger for this type: the old value stays

    def _dict(self, old: dict[str, Any], new: Any, opts: list[str]) -> dict[str, Any]:
        if not isinstance(new, dict):
            return old
        replace = "replace" in opts  # default is no_replace
        recurse_array = "recurse_array" in opts or "recurse_list" in opts
        recurse_str = "recurse_str" in opts
        allow_delete = "allow_delete" in opts
        merged = dict(old)
        for key, value in new.items():
            if key not in merged:
                merged[key] = value
            elif value is None and allow_delete:
                merged.pop(key)
            elif replace:
                merged[key] = value
            elif (
                (isinstance(value, list | tuple) and recurse_array)
                or (isinstance(value, str) and recurse_str)
                or isinstance(value, dict)
            ):
                merged[key] = self.merge(merged[key], value)
        return merged

    def _list(self, old: list[Any], new: Any, opts: list[str]) -> Any:
        method = "replace"
        for candidate in ("append", "prepend", "replace", "no_replace"):
            if candidate in opts:
                method = candidate
                break
        if method == "replace" and not isinstance(new, list | tuple):
            return new
        new_list = list(new) if isinstance(new, list | tuple) else list(new or [])
        if method == "append":
            return old + new_list
        if method == "prepend":
            return new_list + old
        recurse_array = "recurse_array" in opts or "recurse_list" in opts
        recurse_str = "recurse_str" in opts
        recurse_dict = "recurse_dict" in opts
        merged = list(old)
        for i in range(min(len(merged), len(new_list))):
            value = new_list[i]
            if method == "no_replace":
                continue
            if (
                (isinstance(value, list | tuple) and recurse_array)
                or (isinstance(value, str) and recurse_str)
                or (isinstance(value, dict) and recurse_dict)
            ):
                merged[i] = self.merge(merged[i], value)
            else:
                merged[i] = value
        return merged

    @staticmethod
    def _str(old: str, new: Any, opts: list[str]) -> Any:
        if "append" in opts and isinstance(new, str):
            return old + new
        return new


def merge_config(base: dict[str, Any], part: dict[str, Any], mergers: Mergers) -> dict[str, Any]:
    """Merge one cloud-config part into what the earlier parts built."""
    result = _Merger(mergers or DEFAULT_MERGERS).merge(base, part)
    assert isinstance(result, dict)
    return result


def load_cloud_config(payload: bytes, merge_header: str = "") -> tuple[dict[str, Any], Mergers]:
    """Parse one ``#cloud-config`` part; return it without its merge keys, and its mergers
    (the part's ``merge_how``/``merge_type`` first, then its Merge-Type header)."""
    try:
        loaded = yaml.safe_load(payload.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserDataError(f"cloud-config is not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserDataError(
            f"cloud-config must be a mapping at the top level, not {type(loaded).__name__}"
        )
    config: dict[str, Any] = dict(loaded)
    how = config.pop("merge_how", None)
    if how is None:
        how = config.pop("merge_type", None)
    else:
        config.pop("merge_type", None)
    mergers = parse_mergers(how) + parse_mergers(merge_header)
    return config, mergers
