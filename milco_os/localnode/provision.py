"""The distributions under ``<cache>/<engine>/dist/`` a node runs from: the plain one (with the modules the
integration-test zip lacks), and, for OpenSearch, derived copies with the security plugin or with plugins."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from milco_os.errors import ClusterError
from milco_os.localnode.distribution import (
    READY_MARK,
    ModuleSpec,
    _extract,
    _link_or_copy,
    _maven_copy,
    _maven_copy_with_dependencies,
    _unzip,
    archive_version,
    plugin_class,
    plugin_descriptor,
)
from milco_os.localnode.engine import EngineSpec
from milco_os.localnode.plugins import PLUGIN_MODULES, PLUGINS, plugin_closure
from milco_os.localnode.security import (
    SECURITY_PLUGIN,
    SECURITY_PLUGIN_ARTIFACT,
    security_plugin_version,
    widen_descriptor,
)


class Provisioner:
    """Provisions the distributions of ``engine`` under ``root`` (``<cache>/<engine>/``);
    :class:`~milco_os.localnode.node.LocalNode` is one, for the node it starts."""

    root: Path
    engine: EngineSpec

    def install(self, version: str | None = None, archive: Path | None = None) -> tuple[Path, str]:
        """Make an unpacked, runnable distribution available (``version``: the engine's default when None);
        returns (home, version)."""
        engine = self.engine
        version = version or engine.default_version
        if archive is not None:
            archive = Path(archive)
            if not archive.is_file():
                msg = f"--archive {archive}: no such file"
                raise ClusterError(msg)
            staging = self.root / "dist" / f".unpack-{archive.name}"
            shutil.rmtree(staging, ignore_errors=True)
            home = _extract(archive, staging, engine.binary, engine.title)
            version = archive_version(home, engine.binary)
            final = self.root / "dist" / f"{engine.binary}-{version}-{archive.stem.split('.')[0]}"
            shutil.rmtree(final, ignore_errors=True)
            home.rename(final)
            shutil.rmtree(staging, ignore_errors=True)
            home = final
        else:
            home = self.root / "dist" / f"{engine.binary}-{version}"
            if not (home / READY_MARK).exists():
                archives = self.root / "archives"
                zip_path = archives / f"{engine.binary}-{version}.zip"
                if not zip_path.exists():
                    _maven_copy(engine.distribution_artifact.format(version=version), archives)
                staging = self.root / "dist" / f".unpack-{version}"
                shutil.rmtree(staging, ignore_errors=True)
                unpacked = _extract(zip_path, staging, engine.binary, engine.title)
                shutil.rmtree(home, ignore_errors=True)
                unpacked.rename(home)
                shutil.rmtree(staging, ignore_errors=True)
        for spec in engine.extra_modules:
            self._add_module(home, archive_version(home, engine.binary), spec)
        (home / READY_MARK).touch()
        return home, archive_version(home, engine.binary)

    def install_secure(self, version: str | None = None, archive: Path | None = None) -> tuple[Path, str]:
        """Like ``install``, plus OpenSearch's security plugin, in a copy of its own (``<home>-secure``): the plain
        distribution must stay free of it, since the plugin refuses to start without TLS configured. A
        distribution that carries its security (Elasticsearch's x-pack) is the plain one."""
        base, version = self.install(version, archive)
        if self.engine.security_bundled:
            return base, version

        def add_security(staging: Path) -> None:
            plugin = staging / "plugins" / SECURITY_PLUGIN
            if (plugin / "plugin-descriptor.properties").exists():  # the official tarball already has it
                return
            plugin_version = security_plugin_version(version)
            self._unzip_plugin(SECURITY_PLUGIN_ARTIFACT.format(version=plugin_version), plugin,
                               f"the security plugin {plugin_version} for OpenSearch {version}")
            descriptor = plugin / "plugin-descriptor.properties"
            descriptor.write_text(widen_descriptor(descriptor.read_text(encoding="utf-8"), version), encoding="utf-8")

        return self._derived(base, "-secure", archive, add_security), version

    def install_plugins(
        self, plugins: list[str], version: str | None = None, archive: Path | None = None
    ) -> tuple[Path, str]:
        """Like ``install``, plus ``plugins`` and the plugins they need, in a copy of its own
        (``<home>-with-<plugins>``), so the plain distribution stays the small default."""
        names = plugin_closure(plugins)
        base, version = self.install(version, archive)

        def add_plugins(staging: Path) -> None:
            for module in PLUGIN_MODULES:
                self._add_module_with_dependencies(staging, version, module)
            for name in names:
                folder = staging / "plugins" / PLUGINS[name].folder
                if not (folder / "plugin-descriptor.properties").exists():  # the official tarball has them all
                    self._unzip_plugin(PLUGINS[name].artifact.format(version=version), folder,
                                       f"plugin {name} {version}.0 (for OpenSearch {version})")

        # Not "+": OpenSearch 3.x reads plugin policy files through URLs, where a "+" in the path means a space.
        return self._derived(base, "-with-" + "_".join(sorted(names)), archive, add_plugins), version

    def _derived(self, base: Path, suffix: str, archive: Path | None, build: Callable[[Path], None]) -> Path:
        """``<base><suffix>``: a copy of the distribution ``base`` that ``build`` adds to, made once (an
        --archive is unpacked anew every time, and so is its copy)."""
        home = base.with_name(base.name + suffix)
        if (home / READY_MARK).exists() and archive is None:
            return home
        staging = base.with_name(f".stage-{home.name}")
        shutil.rmtree(staging, ignore_errors=True)
        # Hard links: the copy costs no space and is fast (both are read-only at run time).
        shutil.copytree(base, staging, symlinks=True, copy_function=_link_or_copy)
        (staging / READY_MARK).unlink(missing_ok=True)
        build(staging)
        shutil.rmtree(home, ignore_errors=True)
        staging.rename(home)
        (home / READY_MARK).touch()
        return home

    def _unzip_plugin(self, artifact: str, folder: Path, what: str) -> None:
        """The plugin zip ``artifact`` (Maven coordinates, downloaded once into archives/) unpacked into ``folder``."""
        archives = self.root / "archives"
        _group, artifact_id, plugin_version = artifact.split(":")[:3]
        zip_path = archives / f"{artifact_id}-{plugin_version}.zip"
        if not zip_path.exists():
            try:
                _maven_copy(artifact, archives)
            except ClusterError as e:
                msg = (f"{what} is not on Maven Central; use an OpenSearch version it has, or --archive with the "
                       f"official tarball ({e})")
                raise ClusterError(msg) from None
        _unzip(zip_path, folder)

    def _add_module_with_dependencies(self, home: Path, version: str, spec: ModuleSpec) -> None:
        """A module from its Maven jar and that jar's runtime dependencies, a descriptor and its policy."""
        module = home / "modules" / spec.name
        if (module / "plugin-descriptor.properties").exists():
            return
        jars = self.root / "archives" / f"{spec.name}-{version}"
        if not (jars / READY_MARK).exists():
            _maven_copy_with_dependencies(spec.artifact.format(version=version), jars)
            (jars / READY_MARK).touch()
        module.mkdir(parents=True, exist_ok=True)
        for jar in jars.glob("*.jar"):
            shutil.copy2(jar, module / jar.name)
        if spec.policy:
            (module / "plugin-security.policy").write_text(spec.policy, encoding="utf-8")
        classname = plugin_class(spec, jars / spec.jar_name(version))
        descriptor = plugin_descriptor(spec, version, classname)
        (module / "plugin-descriptor.properties").write_text(descriptor, encoding="utf-8")

    def _add_module(self, home: Path, version: str, spec: ModuleSpec) -> None:
        module = home / "modules" / spec.name
        if module.is_dir() and any(module.glob("*.jar")):
            return
        archives = self.root / "archives"
        jar = archives / spec.jar_name(version)
        if not jar.exists():
            _maven_copy(spec.artifact.format(version=version), archives)
        module.mkdir(parents=True, exist_ok=True)
        shutil.copy2(jar, module / jar.name)
        descriptor = plugin_descriptor(spec, version, plugin_class(spec, jar))
        (module / "plugin-descriptor.properties").write_text(descriptor, encoding="utf-8")
