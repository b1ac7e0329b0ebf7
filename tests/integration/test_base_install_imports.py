"""Every module of the base install imports in a Python that has only the base install's packages: an
optional part (libvirt-python, the test tools) imported at module level is caught here, not by a newcomer's
`make run`. The modules that are the optional parts themselves fail with a one-line error naming the extra."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Modules that exist to drive an optional part: importing them without it must say what to install.
OPTIONAL_MODULES = ("canopy.agent.virt.libvirt",)

PROBE = textwrap.dedent('''
    import importlib, importlib.abc, importlib.metadata as md, json, pathlib, re, sys
    from packaging.requirements import Requirement

    def closure(dist, seen):
        """The distributions the base install brings: canopy's requirements without extras, recursively."""
        for spec in md.requires(dist) or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = re.sub(r"[-_.]+", "-", req.name).lower()
            if name not in seen:
                seen.add(name)
                try:
                    closure(name, seen)
                except md.PackageNotFoundError:
                    pass
        return seen

    base = closure("canopy", {"canopy"})
    provided = {}
    for module, dists in md.packages_distributions().items():
        for d in dists:
            provided.setdefault(module, set()).add(re.sub(r"[-_.]+", "-", d).lower())
    blocked = {m for m, ds in provided.items() if not ds & base and m not in sys.stdlib_module_names}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r} (not in the base install)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import canopy
    results = {}
    root = pathlib.Path(canopy.__file__).parent
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if ".migrations" in name:
            continue
        try:
            importlib.import_module(name)
            results[name] = "ok"
        except Exception as e:
            results[name] = f"{type(e).__name__}: {e}"
    print(json.dumps({"blocked": sorted(blocked), "results": results}))
''')


def _probe() -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_every_base_module_imports_without_the_optional_packages() -> None:
    probe = _probe()
    blocked, results = probe["blocked"], probe["results"]
    assert "libvirt" in blocked and "pytest" in blocked  # the probe really hid the optional parts
    assert len(results) > 150  # type: ignore[arg-type]
    optional = {m: r for m, r in results.items() if m.startswith(OPTIONAL_MODULES)}  # type: ignore[union-attr]
    broken = {m: r for m, r in results.items() if r != "ok" and m not in optional}  # type: ignore[union-attr]
    assert broken == {}
    for module, result in optional.items():
        assert result == "ok" or (result.startswith("MissingDependency") and "[libvirt]" in result), module
