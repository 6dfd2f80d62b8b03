"""docker-compose.yml cannot run here (no Docker engine); check what can be checked statically."""

from __future__ import annotations

from pathlib import Path

import yaml

from milco_os.localnode import OPENSEARCH_VERSION

ROOT = Path(__file__).resolve().parents[2]


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_services_ports_and_healthchecks() -> None:
    compose = load_compose()
    services = compose["services"]
    assert set(services) == {"opensearch", "milco-os", "ml-commons"}
    assert [name for name, service in services.items() if not service.get("profiles")] == ["opensearch", "milco-os"]
    assert "127.0.0.1:9200:9200" in services["opensearch"]["ports"]
    assert "127.0.0.1:8080:8080" in services["milco-os"]["ports"]
    for name in ("opensearch", "milco-os"):
        assert services[name]["healthcheck"]["test"], name
    assert services["milco-os"]["depends_on"]["opensearch"]["condition"] == "service_healthy"
    assert services["milco-os"]["environment"]["MILCO_OS_OPENSEARCH_URL"] == "http://opensearch:9200"


def test_opensearch_image_is_pinned_to_the_local_version() -> None:
    image = load_compose()["services"]["opensearch"]["image"]
    assert image == f"opensearchproject/opensearch:{OPENSEARCH_VERSION}"


def test_named_volume_and_dockerfile_exist() -> None:
    compose = load_compose()
    assert "opensearch-data" in compose["volumes"]
    assert "opensearch-data:/usr/share/opensearch/data" in compose["services"]["opensearch"]["volumes"]
    build = compose["services"]["milco-os"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    assert dockerfile.is_file()
    text = dockerfile.read_text(encoding="utf-8")
    assert "milco-os" in text and "serve" in text and "EXPOSE 8080" in text


def test_ml_commons_profile_registers_the_service_it_waits_for() -> None:
    job = load_compose()["services"]["ml-commons"]
    assert job["profiles"] == ["ml-commons"] and job["restart"] == "no"
    assert job["depends_on"]["milco-os"]["condition"] == "service_healthy"
    script = job["command"][-1]
    assert "ml-commons register --index docs --service-url http://milco-os:8080 --configure-cluster" in script
    assert job["build"] == load_compose()["services"]["milco-os"]["build"]
