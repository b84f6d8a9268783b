"""The whole cloud-init run of one guest boot, as a plan of steps in cloud-init's order.

``build_plan`` is the host's one entry point: user-data in, ``plan.Plan`` out, with every
module in the stage and position Debian's cloud.cfg gives it. A module whose keys cannot be
used fails in the guest (a ``Fail`` step naming the field), as cloud-init's module would,
and the rest of the run goes on.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable
from typing import Any

import yaml

from kubevirtsim.cloudinit.consume import UserData, parse_user_data
from kubevirtsim.cloudinit.modules import (
    MODULE_STAGE,
    PER_FREQUENCY_DIR,
    SCRIPTS_DIR,
    SKIPPED_KEYS,
    decode_write_file,
    hostname_and_fqdn,
    seed_files,
    shellify,
)
from kubevirtsim.cloudinit.parts import UserDataError
from kubevirtsim.guestinit import plan
from kubevirtsim.guestinit.plan import (
    Fail,
    FinalMessage,
    Hostname,
    Log,
    Module,
    Run,
    RunParts,
    Step,
    Symlink,
    Timezone,
    Write,
)


def build_plan(
    instance_id: str,
    hostname: str,
    datasource: str,
    user_data: bytes | None,
    network_data: bytes | None = None,
) -> plan.Plan:
    """The whole cloud-init run of one guest boot, in the order cloud-init 22.4 runs it.

    init-local: the seed and the instance folder. init: boothooks (user-data consumption),
    bootcmd, write_files, set/update_hostname, update_etc_hosts, users (skipped).
    modules-config: runcmd (written as a script only), timezone. modules-final:
    package installs (skipped), write_files with ``defer``, scripts-per-once/-boot/-instance,
    scripts-user (the script parts and runcmd, by file name as run-parts sorts them),
    final-message.
    """
    if not instance_id:
        raise UserDataError("instance_id: empty")
    ud = parse_user_data(user_data)
    cfg = ud.config
    short, fqdn = hostname_and_fqdn(cfg, hostname)
    now_files, deferred_files = _write_files_steps(cfg)
    stages: dict[str, list[Module]] = {
        "init-local": [
            _datasource(datasource, instance_id, hostname, user_data, network_data, cfg)
        ],
        "init": _init(instance_id, ud, now_files, short, fqdn),
        "modules-config": _modules_config(cfg),
        "modules-final": _modules_final(ud, deferred_files),
    }
    for module_name, keys in _skipped(cfg).items():
        message = (
            f"{module_name}: skipped in the simulator ({', '.join(sorted(keys))}: "
            "no package manager, users or disks in a simulated guest)"
        )
        stage = MODULE_STAGE.get(module_name, "modules-final")
        stages[stage].append(Module(module_name, [Log(message)]))
    return plan.Plan(instance_id, short, datasource, _in_order(stages), list(ud.notes))


def _datasource(
    datasource: str,
    instance_id: str,
    hostname: str,
    user_data: bytes | None,
    network_data: bytes | None,
    cfg: dict[str, Any],
) -> Module:
    """init-local: the datasource's seed and the instance folder."""
    instance_dir = plan.instance_dir(instance_id)
    ds = Module("datasource")
    for path, data in seed_files(
        datasource, instance_id, hostname, user_data, network_data
    ).items():
        ds.steps.append(Write(path, data, 0o600 if path.endswith("user-data") else 0o644))
    ds.steps.append(Write(f"{instance_dir}/user-data.txt", user_data or b"", 0o600))
    ds.steps.append(
        Write(
            f"{instance_dir}/datasource",
            f"DataSource{datasource}: DataSource{datasource}\n".encode(),
        )
    )
    ds.steps.append(Write("/var/lib/cloud/data/instance-id", f"{instance_id}\n".encode()))
    ds.steps.append(Symlink(path=plan.INSTANCE_LINK, target=instance_dir))
    merged_text = "#cloud-config\n" + (
        yaml.safe_dump(json.loads(json.dumps(cfg, default=_json_default)), sort_keys=False)
        if cfg
        else ""
    )
    ds.steps.append(Write(f"{instance_dir}/cloud-config.txt", merged_text.encode(), 0o600))
    return ds


def _init(
    instance_id: str, ud: UserData, now_files: list[Step] | None, short: str, fqdn: str
) -> list[Module]:
    """init: user-data consumed (scripts written, boothooks run), bootcmd, write_files,
    hostname and /etc/hosts."""
    cfg = ud.config
    instance_dir = plan.instance_dir(instance_id)
    env = {"INSTANCE_ID": instance_id}
    consume = Module(
        "consume-user-data", [*(Log(n) for n in ud.notes), *(Fail(e) for e in ud.errors)]
    )
    for script in ud.scripts:
        consume.steps.append(Write(f"{SCRIPTS_DIR}/{script.name}", script.content, 0o700))
    for frequency, scripts in sorted(ud.per_frequency.items()):
        for script in scripts:
            consume.steps.append(
                Write(f"{PER_FREQUENCY_DIR}/{frequency}/{script.name}", script.content, 0o700)
            )
    for hook in ud.boothooks:
        path = f"{instance_dir}/boothooks/{hook.name}"
        consume.steps.append(Write(path, hook.content, 0o700))
        consume.steps.append(Run((path,), env))
    modules = [consume]
    if "bootcmd" in cfg:
        path = f"{instance_dir}/bootcmd.sh"
        modules.append(
            _guarded(
                "bootcmd",
                lambda: [
                    Write(path, shellify(cfg["bootcmd"], "bootcmd"), 0o700),
                    Run(("/bin/sh", path), env),
                ],
            )
        )
    if now_files is not None:
        modules.append(Module("write-files", now_files))
    if not cfg.get("preserve_hostname"):
        modules.append(Module("set_hostname", [Hostname(short, fqdn)]))
    if cfg.get("manage_etc_hosts") in (True, "true", "True", "template"):
        hosts = (
            f"127.0.1.1 {fqdn} {short}\n127.0.0.1 localhost\n"
            "::1 localhost ip6-localhost ip6-loopback\n"
        )
        modules.append(Module("update_etc_hosts", [Write("/etc/hosts", hosts.encode())]))
    return modules


def _modules_config(cfg: dict[str, Any]) -> list[Module]:
    """modules-config: timezone, and runcmd written as a script (scripts-user runs it)."""
    modules = []
    if cfg.get("timezone"):
        modules.append(Module("timezone", [Timezone(str(cfg["timezone"]))]))
    if "runcmd" in cfg:
        modules.append(
            _guarded(
                "runcmd",
                lambda: [Write(f"{SCRIPTS_DIR}/runcmd", shellify(cfg["runcmd"], "runcmd"), 0o700)],
            )
        )
    return modules


def _modules_final(ud: UserData, deferred_files: list[Step]) -> list[Module]:
    """modules-final: deferred write_files, the script folders, the final message."""
    modules = []
    if deferred_files:
        modules.append(Module("write-files-deferred", deferred_files))
    for frequency in ("per-once", "per-boot", "per-instance"):
        scripts = ud.per_frequency.get(frequency, [])
        if scripts:
            paths = tuple(
                f"{PER_FREQUENCY_DIR}/{frequency}/{s.name}"
                for s in sorted(scripts, key=lambda s: s.name)
            )
            modules.append(Module(f"scripts-{frequency}", [RunParts(paths)]))
    runcmd = {"runcmd"} if "runcmd" in ud.config else set()
    user_scripts = sorted({s.name for s in ud.scripts} | runcmd)
    if user_scripts:
        paths = tuple(f"{SCRIPTS_DIR}/{name}" for name in user_scripts)
        modules.append(Module("scripts-user", [RunParts(paths)]))
    modules.append(Module("final-message", [FinalMessage()]))
    return modules


def _skipped(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """Modules the simulator does not carry out, and the keys of `cfg` that ask for them."""
    skipped: dict[str, list[str]] = {}
    for key in cfg:
        if key in SKIPPED_KEYS:
            skipped.setdefault(SKIPPED_KEYS[key], []).append(key)
    return skipped


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not serialisable: {type(value).__name__}")


def _guarded(name: str, build: Callable[[], list[Step]]) -> Module:
    """A module whose steps cannot be built fails in the guest, naming the bad field."""
    try:
        return Module(name, build())
    except UserDataError as exc:
        return Module(name, [Fail(str(exc))])


def _write_files_steps(cfg: dict[str, Any]) -> tuple[list[Step] | None, list[Step]]:
    """Steps of write-files and write-files-deferred. Entries are written in order; the first
    entry that does not decode fails its module there, as cloud-init's module does."""
    if "write_files" not in cfg:
        return None, []
    entries = cfg["write_files"] or []
    if not isinstance(entries, list):
        return [Fail("write_files: must be a list")], []
    now: list[Step] = []
    deferred: list[Step] = []
    for index, entry in enumerate(entries):
        try:
            f = decode_write_file(entry, index)
        except UserDataError as exc:
            now.append(Fail(str(exc)))
            break
        steps = deferred if f.defer else now
        if f.owner.split(":")[0] not in ("root", "0", ""):
            steps.append(
                Log(f"write_files: owner {f.owner!r} of {f.path} not supported, owned by root")
            )
        steps.append(Write(f.path, f.content, f.mode, f.append))
    return now, deferred


_ORDER: dict[str, tuple[str, ...]] = {
    "init-local": ("datasource",),
    "init": (
        "consume-user-data",
        "bootcmd",
        "write-files",
        "growpart",
        "resizefs",
        "disk_setup",
        "mounts",
        "set_hostname",
        "update_etc_hosts",
        "ca-certs",
        "rsyslog",
        "users-groups",
        "ssh",
    ),
    "modules-config": (
        "snap",
        "keyboard",
        "locale",
        "set-passwords",
        "apt-configure",
        "yum-add-repo",
        "ntp",
        "timezone",
        "runcmd",
    ),
    "modules-final": (
        "package-update-upgrade-install",
        "write-files-deferred",
        "scripts-per-once",
        "scripts-per-boot",
        "scripts-per-instance",
        "scripts-user",
        "phone-home",
        "final-message",
        "power-state-change",
    ),
}


def _in_order(stages: dict[str, list[Module]]) -> dict[str, list[Module]]:
    """Modules in each stage in the order of Debian's cloud.cfg module lists."""

    def rank(stage: str, module: Module) -> int:
        order = _ORDER[stage]
        return order.index(module.name) if module.name in order else len(order)

    return {stage: sorted(stages[stage], key=lambda m: rank(stage, m)) for stage in plan.STAGES}
