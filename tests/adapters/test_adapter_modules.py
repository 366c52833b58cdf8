import importlib
import pkgutil

import adapters


def test_every_adapter_module_imports():
    """Each adapter module imports on its own (a typo in a rarely used one fails here, not in production)."""
    names = [info.name for info in pkgutil.walk_packages(adapters.__path__, "adapters.")]
    assert "adapters.discord._cog" in names and "adapters.console" in names
    for name in names:
        importlib.import_module(name)


def test_discord_package_exports_only_setup():
    import adapters.discord

    assert adapters.discord.__all__ == ["setup"]
