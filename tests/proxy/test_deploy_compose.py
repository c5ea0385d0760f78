"""docker-compose.yml hangs together: every flag the proxy gets exists, kv routing reaches LMCache.

``docker compose config`` cannot run here (the docker CLI has no compose
plugin and there is no engine), so the file is parsed as YAML and checked
against the proxy's own CLI parser and settings model.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from proxy.cli import build_parser
from proxy.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _proxy_settings(services: dict):
    command = services["semcache"]["command"]
    script = command[-1] if isinstance(command, list) else command
    argv = shlex.split(script.split("exec ", 1)[1])
    assert argv[0] == "semcache"
    args = build_parser().parse_args(argv[1:])  # an unknown flag exits here
    overrides = {k: getattr(args, k) for k in ("upstreams", "host", "port", "iccache", "routing")}
    return load_settings(overrides, ROOT / args.config), args  # an unknown config key raises here


def _service_of(url: str, services: dict) -> str:
    host = urlsplit(url).hostname
    assert host in services, f"{url}: no service {host}"
    return host


def test_every_service_the_proxy_names_exists_and_depends_on_is_complete():
    services = _compose()["services"]
    settings, args = _proxy_settings(services)
    assert (ROOT / args.iccache).is_file()
    named = {_service_of(u.split("=", 1)[1], services) for u in settings.upstreams}
    named.add(_service_of(settings.routing_options.lmcache_controller_url, services))
    assert named <= set(services["semcache"]["depends_on"])
    assert set(services["semcache"]["depends_on"]) <= set(services)


def test_kv_routing_maps_each_lmcache_instance_to_its_replica():
    services = _compose()["services"]
    settings, _ = _proxy_settings(services)
    assert settings.routing_by_model == {"large": "kv"}
    opts = settings.routing_options
    large = [u.split("=", 1)[1] for u in settings.upstreams if u.startswith("large=")]
    assert len(large) == 2 and sorted(opts.lmcache_instances.values()) == sorted(large)
    controller = services[_service_of(opts.lmcache_controller_url, services)]
    entry = controller["entrypoint"]
    assert str(urlsplit(opts.lmcache_controller_url).port) == entry[entry.index("--port") + 1]
    monitor = entry[entry.index("--monitor-port") + 1]
    for instance, url in opts.lmcache_instances.items():
        engine = services[_service_of(url, services)]
        args = engine["command"]
        assert args[args.index("--served-model-name") + 1] == "large"
        assert args[args.index("--port") + 1] == str(urlsplit(url).port)
        kv = json.loads(args[args.index("--kv-transfer-config") + 1])
        assert kv == {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
        env = engine["environment"]
        assert env["PYTHONHASHSEED"] == controller["environment"]["PYTHONHASHSEED"]  # same chunk hashes
        mount = next(v for v in engine["volumes"] if v.startswith("./deploy:"))
        inside = mount.split(":")[1]
        lmcache = yaml.safe_load((ROOT / "deploy" / Path(env["LMCACHE_CONFIG_FILE"]).relative_to(inside)).read_text())
        assert lmcache["lmcache_instance_id"] == instance and lmcache["enable_controller"] is True
        host, port = lmcache["controller_pull_url"].split(":")
        assert services[host] is controller and port == monitor
