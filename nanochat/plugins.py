"""The plugin manager: finds plugins, asks them what they contribute, keeps faulty ones apart.

First-party plugins (backends, optimizers, datasets, tasks) are registered through the same
`nanochat` entry-point group a third-party package uses. A plugin that fails to import or to
register is quarantined: it is listed as broken with its error and everything else keeps working.

`NANOCHAT_PLUGINS` limits which third-party plugins load: unset = all installed, "" = none,
"a,b" = only those (entry-point or distribution names). First-party plugins always load.
Nothing here imports torch; plugins import it lazily inside their methods.
"""
import os
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from nanochat import hookspecs
from nanochat.errors import NanochatError

GROUP = "nanochat"
FIRST_PARTY = "nanochat"
KINDS = ("backend", "optimizer", "dataset", "task", "observer")


class PluginError(NanochatError):
    """Something about plugins is wrong; the message says what and how to fix it."""


class NameClash(PluginError):
    pass


class UnknownName(PluginError, LookupError):
    pass


@dataclass
class Plugin:
    """One loaded (or quarantined) plugin module and what it contributed."""

    name: str
    distribution: str
    version: str
    status: str = "ok"  # "ok" or "broken"
    error: str | None = None
    traceback: str | None = None  # the full traceback of a broken plugin (`nanochat plugins -v`)
    contributions: list = field(default_factory=list)  # [(kind, thing_name)]


def _short_error(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last


class Registry:
    """Everything plugins contributed, by kind and name."""

    def __init__(self):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, Plugin] = {}
        self._things: dict[str, dict[str, tuple[object, str]]] = {k: {} for k in KINDS}

    # -- registration -------------------------------------------------------------------------
    def add(self, module, name: str, distribution: str = "(local)", version: str = "") -> Plugin:
        """Register a plugin module (or any object with hook functions) and collect its things.

        Raises NameClash if it contributes a name another plugin already has; the registry is left
        as it was. Any other failure inside the plugin quarantines it and is recorded, not raised.
        """
        plugin = Plugin(name=name, distribution=distribution, version=version)
        if name in self.plugins:
            raise NameClash(f"a plugin named {name!r} is already loaded "
                            f"(from {self.plugins[name].distribution}); rename one of them")
        try:
            self.pm.register(module, name=name)
            self._check_hook_names(module, name)
            collected = self._collect(module)
        except NameClash:
            self._forget(module)
            raise
        except Exception as exc:  # a faulty plugin must not take the others down
            self._forget(module)
            return self._quarantine(plugin, f"failed to register: {_short_error(exc)}", traceback.format_exc())
        for kind, thing in collected:
            self._things[kind][thing.name] = (thing, name)
            plugin.contributions.append((kind, thing.name))
        self.plugins[name] = plugin
        return plugin

    def remove(self, name: str) -> None:
        """Unregister a plugin and everything it contributed (tests use throwaway plugins)."""
        plugin = self.plugins.pop(name)
        for kind, thing_name in plugin.contributions:
            self._things[kind].pop(thing_name, None)
        module = self.pm.get_plugin(name)
        if module is not None:
            self.pm.unregister(module)

    def _check_hook_names(self, module, name):
        known = {f"nanochat_{k}" for k in KINDS}
        for attr in dir(module):
            if attr.startswith("nanochat_") and attr not in known and callable(getattr(module, attr)):
                raise PluginError(f"plugin {name!r} implements unknown hook {attr!r}; "
                                  f"known hooks: {', '.join(sorted(known))}")

    def _collect(self, module):
        """Call this plugin's hooks (only this plugin's) and check its names are free."""
        collected = []
        for kind in KINDS:
            caller = getattr(self.pm.hook, f"nanochat_{kind}")
            for impl in caller.get_hookimpls():
                if impl.plugin is not module:
                    continue
                impl.function(register=collected_for(kind, collected))
        seen = set()
        for kind, thing in collected:
            key = (kind, thing.name)
            if key in seen or thing.name in self._things[kind]:
                owner = self._things[kind].get(thing.name, (None, self.pm.get_name(module)))[1]
                raise NameClash(f"{kind} {thing.name!r} is registered by plugin {owner!r} and again "
                                f"by plugin {self.pm.get_name(module)!r}; names must be unique per kind")
            seen.add(key)
        return collected

    def _forget(self, module):
        if self.pm.is_registered(module):
            self.pm.unregister(module)

    def _quarantine(self, plugin: Plugin, error: str, trace: str | None = None) -> Plugin:
        plugin.status, plugin.error, plugin.traceback = "broken", error, trace
        self.plugins[plugin.name] = plugin
        print(f"nanochat: plugin {plugin.name!r} is broken and was skipped: {error} "
              f"(`nanochat plugins -v` shows its traceback)", file=sys.stderr)
        return plugin

    # -- failures at run time -------------------------------------------------------------------
    def disable(self, kind: str, name: str, error: str) -> Plugin:
        """Take a thing that failed at run time out of use; its plugin is listed as broken with the error."""
        plugin = self.owner(kind, name)
        del self._things[kind][name]
        plugin.status, plugin.error = "broken", f"{kind} {name!r} failed at run time: {error}"
        return plugin

    def culprit(self, exc: BaseException) -> tuple[str, str, Plugin] | None:
        """(kind, name, plugin) of the innermost registered thing (a task, an observer, ...) whose own method
        raised `exc`, or None when no plugin's code is on the traceback."""
        things = [(thing, kind, name) for kind in KINDS for name, (thing, _) in self._things[kind].items()]
        frames, tb = [], exc.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in reversed(frames):
            obj = frame.f_locals.get("self")
            # the registered object itself, or a copy of its class (a task used as NAME:ARG is bound anew)
            for thing, kind, name in things:
                if obj is thing or (obj is not None and type(obj) is type(thing) and type(obj).__module__ != "builtins"):
                    return kind, name, self.owner(kind, name)
        return None

    # -- lookup ---------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._things[_kind(kind)])

    def all(self, kind: str) -> list:
        return [self._things[_kind(kind)][n][0] for n in self.names(kind)]

    def get(self, kind: str, name: str):
        things = self._things[_kind(kind)]
        if name not in things:
            valid = ", ".join(self.names(kind)) or "(none installed)"
            raise UnknownName(f"unknown {kind} {name!r}; valid {kind}s: {valid}")
        return things[name][0]

    def owner(self, kind: str, name: str) -> Plugin:
        self.get(kind, name)
        return self.plugins[self._things[kind][name][1]]

    def listing(self, kind: str | None = None) -> list[dict]:
        """One row per contributed thing (and one per broken plugin): what `nanochat plugins` shows.

        A broken plugin is in every listing, whatever `kind` asks for: what it would have given is unknown.
        """
        rows = []
        for plugin in self.plugins.values():
            base = {"version": plugin.version, "distribution": plugin.distribution,
                    "status": plugin.status, "error": plugin.error, "plugin": plugin.name,
                    "traceback": plugin.traceback}
            if plugin.status == "broken":
                rows.append({"name": plugin.name, "kind": None, **base})
            for k, thing_name in plugin.contributions:
                rows.append({"name": thing_name, "kind": k, **base})
        if kind is not None:
            rows = [r for r in rows if r["kind"] == _kind(kind) or r["status"] == "broken"]
        return sorted(rows, key=lambda r: (r["kind"] or "~", r["name"]))


def how_to_leave_out(plugin: Plugin) -> str:
    """What a user types to stop using a plugin."""
    if plugin.distribution == FIRST_PARTY:
        return "it ships with nanochat: please report the error"
    short = plugin.name.split(":")[-1]
    return (f"leave it out by listing only the plugins you want in NANOCHAT_PLUGINS (without {short!r}), "
            f"or uninstall it: pip uninstall {plugin.distribution}")


def collected_for(kind, collected):
    def register(thing):
        if not isinstance(getattr(thing, "name", None), str) or not thing.name:
            raise PluginError(f"a {kind} was registered without a string `name`: {thing!r}")
        collected.append((kind, thing))
    return register


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise UnknownName(f"unknown plugin kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def _selected(env_value: str | None):
    """None = every third-party plugin; otherwise the set of names allowed."""
    if env_value is None:
        return None
    return {part.strip() for part in env_value.split(",") if part.strip()}


def load(env: dict | None = None) -> Registry:
    """Build a registry from the installed entry points."""
    env = os.environ if env is None else env
    allowed = _selected(env.get("NANOCHAT_PLUGINS"))
    registry = Registry()
    third_party_seen = set()
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: (e.dist.name != FIRST_PARTY, e.name)):
        dist = ep.dist.name if ep.dist else "(unknown)"
        version = ep.dist.version if ep.dist else ""
        if dist != FIRST_PARTY:
            third_party_seen.update({ep.name, dist})
            if allowed is not None and ep.name not in allowed and dist not in allowed:
                continue
        name = ep.name if dist == FIRST_PARTY else f"{dist}:{ep.name}"
        if name in registry.plugins:  # the same distribution found twice on sys.path
            continue
        try:
            module = ep.load()
        except Exception as exc:
            registry._quarantine(Plugin(name, dist, version), f"failed to import {ep.value!r}: {_short_error(exc)}",
                                 traceback.format_exc())
            continue
        try:
            registry.add(module, name=name, distribution=dist, version=version)
        except NameClash as exc:
            registry._quarantine(Plugin(name, dist, version), str(exc), traceback.format_exc())
    for missing in sorted((allowed or set()) - third_party_seen):
        installed = ", ".join(sorted(third_party_seen)) or "none"
        registry._quarantine(Plugin(missing, "(not installed)", ""),
                             f"NANOCHAT_PLUGINS names {missing!r} but no such plugin is installed; "
                             f"installed third-party plugins: {installed}")
    return registry


_registry: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load()
    return _registry


def reset() -> None:
    """Forget the process-wide registry (tests change NANOCHAT_PLUGINS between cases)."""
    global _registry
    _registry = None


__all__ = ["Registry", "Plugin", "PluginError", "NameClash", "UnknownName", "KINDS", "load", "registry",
           "reset", "how_to_leave_out"]
