#!/usr/bin/env bash
# Static checks of the deployment files; no Docker engine, network or root needed.
# Each external tool is used when it is installed and skipped, with a line saying so, when not.
# Usage: deploy/check.sh   (from anywhere)
set -euo pipefail

deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$deploy")"
cd "$repo"

passed=0
skipped=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
skip() { skipped=$((skipped + 1)); printf 'skip  %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Placeholders for everything the files expect from their environment; never real values.
cp deploy/jobhook.env.example "$tmp/jobhook.env"
echo JOBHOOK_PG_PASSWORD=placeholder >> "$tmp/jobhook.env"
printf '%s\n' LITESTREAM_BUCKET=jobhook-backups LITESTREAM_ENDPOINT= LITESTREAM_REGION=us-east-1 \
    LITESTREAM_ACCESS_KEY_ID=placeholder LITESTREAM_SECRET_ACCESS_KEY=placeholder > "$tmp/litestream.env"

# ---- docker compose ------------------------------------------------------------------------------
if command -v docker > /dev/null 2>&1 && docker compose version > /dev/null 2>&1; then
    for files in "deploy/compose.yaml" "deploy/compose.yaml deploy/compose.litestream.yaml" "deploy/compose.postgresql.yaml"; do
        args=()
        for f in $files; do args+=(-f "$f"); done
        if out="$(JOBHOOK_ENV_FILE="$tmp/jobhook.env" LITESTREAM_ENV_FILE="$tmp/litestream.env" \
            docker compose "${args[@]}" --env-file "$tmp/jobhook.env" config -q 2>&1)"; then
            pass "docker compose config: $files"
        else
            fail "docker compose config: $files"$'\n'"$out"
        fi
    done
elif command -v check-jsonschema > /dev/null 2>&1; then
    skip "docker compose config (no compose plugin); checking against the Compose schema instead"
    if out="$(check-jsonschema --builtin-schema vendor.compose-spec \
        deploy/compose.yaml deploy/compose.litestream.yaml deploy/compose.postgresql.yaml 2>&1)"; then
        pass "compose files match the Compose specification schema"
    else
        fail "compose schema"$'\n'"$out"
    fi
else
    skip "docker compose config (no docker CLI with the compose plugin, no check-jsonschema)"
fi

# ---- systemd -------------------------------------------------------------------------------------
if command -v systemd-analyze > /dev/null 2>&1; then
    # verify insists that ExecStart's program exists: point it at a stand-in, check all the rest.
    printf '#!/bin/sh\n' > "$tmp/jobhook" && chmod +x "$tmp/jobhook"
    sed "s#/opt/jobhook/venv/bin/jobhook#$tmp/jobhook#g" deploy/jobhook.service > "$tmp/jobhook.service"
    # It warns (unknown key, bad value) with status 0: any output is a failure.
    if out="$(systemd-analyze verify "$tmp/jobhook.service" 2>&1)" && [ -z "$out" ]; then
        pass "systemd-analyze verify deploy/jobhook.service"
    else
        fail "systemd-analyze verify deploy/jobhook.service"$'\n'"$out"
    fi
else
    skip "systemd-analyze verify (no systemd-analyze)"
fi

# ---- Caddy ---------------------------------------------------------------------------------------
if command -v caddy > /dev/null 2>&1; then
    if out="$(JOBHOOK_DOMAIN=hooks.example.com XDG_DATA_HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy" \
        caddy validate --config deploy/Caddyfile --adapter caddyfile 2>&1)"; then
        pass "caddy validate deploy/Caddyfile"
    else
        fail "caddy validate deploy/Caddyfile"$'\n'"$out"
    fi
else
    skip "caddy validate (no caddy)"
fi

# ---- Litestream ----------------------------------------------------------------------------------
if command -v litestream > /dev/null 2>&1; then
    set -a
    # shellcheck source=/dev/null
    . "$tmp/litestream.env"
    set +a
    if out="$(litestream databases -config deploy/litestream.yml 2>&1)" \
        && grep -q '^/data/jobhook.db[[:space:]]' <<< "$out"; then
        pass "litestream reads deploy/litestream.yml"
    else
        fail "litestream databases -config deploy/litestream.yml"$'\n'"$out"
    fi
else
    skip "litestream config (no litestream)"
fi

# ---- hadolint --------------------------------------------------------------------------------------
if command -v hadolint > /dev/null 2>&1; then
    if out="$(hadolint --no-color deploy/Dockerfile 2>&1)"; then
        pass "hadolint deploy/Dockerfile"
    else
        fail "hadolint deploy/Dockerfile"$'\n'"$out"
    fi
else
    skip "hadolint (no hadolint)"
fi

if command -v shellcheck > /dev/null 2>&1; then
    if out="$(shellcheck deploy/check.sh 2>&1)"; then
        pass "shellcheck deploy/check.sh"
    else
        fail "shellcheck deploy/check.sh"$'\n'"$out"
    fi
else
    skip "shellcheck (no shellcheck)"
fi

# ---- our own rules: the image's user and health check, the env example's completeness -------------
spec="$(cd "$repo/.." && pwd)/shared/SPEC.md"
if out="$(python3 - "$spec" <<'PY' 2>&1
import pathlib
import re
import sys

problems, notes = [], []

# The Dockerfile's final stage: its last USER must not be root, and it must have a HEALTHCHECK.
text = pathlib.Path("deploy/Dockerfile").read_text()
instructions = []
for line in re.sub(r"\\\n", " ", text).splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
final = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"][-1]
stage = instructions[final:]
users = [rest for keyword, rest in stage if keyword == "USER"]
user = users[-1].split(":")[0] if users else "root"
if user in ("root", "0", "") or "$" in user:
    problems.append(f"Dockerfile: the final stage must run as a fixed non-root USER, found {user!r}")
else:
    notes.append(f"Dockerfile runs as USER {users[-1]}")
checks = [rest for keyword, rest in stage if keyword == "HEALTHCHECK"]
if not checks or checks[-1].upper().startswith("NONE") or "/healthz" not in checks[-1]:
    problems.append("Dockerfile: the final stage needs a HEALTHCHECK calling /healthz")
else:
    notes.append("Dockerfile has a HEALTHCHECK on /healthz")

# Every JOBHOOK_* variable of SPEC §1's table appears in the env example (commented or not).
spec = pathlib.Path(sys.argv[1])
if spec.is_file():
    example = pathlib.Path("deploy/jobhook.env.example").read_text()
    present = set(re.findall(r"^[ \t]*#?[ \t]*(JOBHOOK_[A-Z0-9_]+)=", example, re.M))
    wanted = set()
    for row in spec.read_text().splitlines():
        if not row.startswith("|"):
            continue
        cells = row.strip().strip("|").split("|")
        for name in re.findall(r"`(JOBHOOK_[A-Z0-9_<>]+)`", cells[0]):
            if "<P>" in name:  # `<P>` in `AIVIDEOAPI`, `APIFRAME`, …
                rest = "|".join(cells[1:])
                for provider in re.findall(r"`([A-Z][A-Z0-9]+)`", rest.partition("<P>")[2]):
                    wanted.add(name.replace("<P>", provider))
            else:
                wanted.add(name)
    missing = sorted(wanted - present)
    if not wanted:
        problems.append(f"{spec}: found no JOBHOOK_* variables in its tables")
    elif missing:
        problems.append("deploy/jobhook.env.example lacks: " + ", ".join(missing))
    else:
        notes.append(f"all {len(wanted)} JOBHOOK_* variables of {spec.name} are in jobhook.env.example")
else:
    notes.append(f"SKIP {spec} not found: env example completeness not checked")

print("\n".join(notes + problems))
sys.exit(1 if problems else 0)
PY
)"; then
    while IFS= read -r line; do
        case "$line" in
            SKIP\ *) skip "${line#SKIP }" ;;
            *) pass "$line" ;;
        esac
    done <<< "$out"
else
    fail "Dockerfile and env example rules"$'\n'"$out"
fi

printf '\n%d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
