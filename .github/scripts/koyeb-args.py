#!/usr/bin/env python3
"""Turns ollama-proxy/koyeb.yaml (Koyeb's service `definition` shape) into Koyeb CLI arguments.

Prints `APP/SERVICE` on the first line, then one argument per line (for `mapfile`), for
`koyeb services update APP/SERVICE ...` or `koyeb services create SERVICE --app APP ...`.
The image is not among them: the deploy workflow passes the commit's image with --docker.
"""

import sys

import yaml


def koyeb_args(document):
    """(service, [arguments]) from a parsed koyeb.yaml."""
    definition = document["definition"]
    service = f'{document["app"]}/{definition["name"]}'
    args = []
    for instance in definition.get("instance_types", []):
        args += ["--instance-type", instance["type"]]
    for region in definition.get("regions", []):
        args += ["--regions", region]
    for scaling in definition.get("scalings", []):
        args += ["--min-scale", str(scaling["min"]), "--max-scale", str(scaling["max"])]
    for port in definition.get("ports", []):
        args += ["--ports", f'{port["port"]}:{port.get("protocol", "http")}']
    for route in definition.get("routes", []):
        args += ["--routes", f'{route["path"]}:{route["port"]}']
    for env in definition.get("env", []):
        if "secret" in env:
            args += ["--env", f'{env["key"]}={{{{secret.{env["secret"]}}}}}']
        else:
            args += ["--env", f'{env["key"]}={env.get("value", "")}']
    for check in definition.get("health_checks", []):
        http = check.get("http")
        if http:
            args += ["--checks", f'{http["port"]}:http:{http["path"]}']
            if "grace_period" in check:
                args += ["--checks-grace-period", f'{http["port"]}={check["grace_period"]}']
    return service, args


def main(path):
    with open(path, encoding="utf-8") as file:
        service, args = koyeb_args(yaml.safe_load(file))
    print(service)
    for arg in args:
        if "\n" in arg:
            raise SystemExit(f"koyeb-args: a value in {path} spans lines: {arg!r}")
        print(arg)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: koyeb-args.py KOYEB_YAML")
    main(sys.argv[1])
