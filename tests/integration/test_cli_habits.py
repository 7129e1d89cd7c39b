"""Command-line habits (issue 15, part 4): --help and --version as in GNU programs on the master
and on every subcommand, `dlq list` saying how many it shows of how many, `status` saying when
the Redis figures were polled, and the bash completion. The real binary, a real redis-server,
a real fleet; the completion script is sourced in a real bash."""
import json
import re
import subprocess
import time

import pytest

from conftest import REPO, TIMEOUT, free_port, run_binary, wait_until, write_ini
from reliability_helpers import dlq_cli, log_pool

COMPLETION = REPO / "etc" / "bash-completion" / "streamfleet"

# Every command line that has a help of its own, and an option its help must name.
HELPS = [
    ([], "--config"),
    (["dlq"], "replay"),
    (["dlq", "list"], "--count"),
    (["dlq", "replay"], "--all"),
    (["dlq", "purge"], "--before"),
    (["status"], "--watch"),
]


def fake_dead_letter(client, dlq, n):
    return client.xadd(dlq, {"n": str(n), "dlq.stream": "src", "dlq.id": f"{n + 1}-0",
                             "dlq.reason": "http_422", "dlq.attempts": "1",
                             "dlq.error": "http 422", "dlq.time": str(int(time.time() * 1000))})


def cli_config(tmp_path, redis_url, **pools):
    sections = {"fleet": {"redis": redis_url, "listen": f"127.0.0.1:{free_port()}"}}
    for name, stream in (pools or {"p": "src"}).items():
        sections[f"pool:{name}"] = log_pool(stream)
    return write_ini(tmp_path / "cli.ini", sections)


# --------------------------------------------------------------------------------------------
# --help, --version, mistakes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("words,option", HELPS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_help_prints_usage_on_stdout_and_exits_0(words, option):
    for flag in ("--help", "-h"):
        res = run_binary([*words, flag])
        assert res.returncode == 0, (words, flag, res.stderr)
        assert res.stdout.startswith("usage: streamfleet"), res.stdout
        assert option in res.stdout, res.stdout
        assert res.stderr == "", res.stderr


@pytest.mark.parametrize("words,option", HELPS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_version_prints_the_version_on_stdout_and_exits_0(words, option):
    version = re.search(r"^VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    for flag in ("--version", "-V"):
        res = run_binary([*words, flag])
        assert res.returncode == 0, (words, flag, res.stderr)
        assert res.stdout == f"streamfleet {version}\n"


def test_help_goes_before_the_checks_of_the_other_options():
    # --help with what would be a usage error (no --pool) or a missing config: still the help.
    res = run_binary(["dlq", "purge", "-c", "/nonexistent.ini", "--help"])
    assert res.returncode == 0 and "--before" in res.stdout, res.stderr
    res = run_binary(["-c", "/nonexistent.ini", "--help"])
    assert res.returncode == 0 and "--config" in res.stdout, res.stderr


@pytest.mark.parametrize("args,hint", [
    (["--bogus"], "streamfleet --help"),
    (["-x"], "streamfleet --help"),
    (["frobnicate"], "streamfleet --help"),
    (["dlq"], "streamfleet dlq --help"),
    (["dlq", "explode"], "streamfleet dlq --help"),
    (["dlq", "list", "--bogus"], "streamfleet dlq list --help"),
    (["dlq", "list", "-c", "/nonexistent.ini"], "streamfleet dlq list --help"),   # no --pool
    (["dlq", "replay", "--nope"], "streamfleet dlq replay --help"),
    (["dlq", "purge", "--nope"], "streamfleet dlq purge --help"),
    (["status", "--bogus"], "streamfleet status --help"),
    (["status", "extra"], "streamfleet status --help"),
])
def test_a_usage_mistake_says_what_and_where_help_is_on_stderr_and_exits_2(args, hint):
    res = run_binary(args)
    assert res.returncode == 2, (args, res.returncode, res.stdout, res.stderr)
    assert res.stdout == "", res.stdout
    first = res.stderr.splitlines()[0]
    assert first.startswith("streamfleet"), res.stderr
    # the message names what was wrong
    wrong = [a for a in args if a.startswith("-") or a in ("frobnicate", "explode", "extra")]
    if wrong and not args[-1].endswith(".ini"):
        assert wrong[-1].lstrip("-")[:4] in first, res.stderr
    assert f"Try '{hint}'" in res.stderr, res.stderr


# --------------------------------------------------------------------------------------------
# dlq list: how many of how many
# --------------------------------------------------------------------------------------------

def test_dlq_list_says_how_many_it_shows_of_how_many_there_are(redis_server, tmp_path):
    r = redis_server.client()
    for i in range(5):
        fake_dead_letter(r, "events:dlq", i)
    cfg = cli_config(tmp_path, redis_server.url, events="events")
    res = dlq_cli(cfg, "list", "--pool", "events", "--count", "3")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1 + 3 + 1, res.stdout
    assert lines[-1] == "3 of 5 dead letters in events:dlq"
    # all of them shown: no "of"
    res = dlq_cli(cfg, "list", "--pool", "events", "--count", "5")
    assert res.stdout.splitlines()[-1] == "5 dead letters in events:dlq"
    r.xtrim("events:dlq", maxlen=1, approximate=False)
    res = dlq_cli(cfg, "list", "--pool", "events", "--count", "3")
    assert res.stdout.splitlines()[-1] == "1 dead letter in events:dlq"


# --------------------------------------------------------------------------------------------
# status: when the Redis figures were polled
# --------------------------------------------------------------------------------------------

POLLED = re.compile(r"^redis figures polled (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d), (.+) before this status")


def age_seconds(text):
    """'0.4s', '12s', '3m 05s' -> seconds."""
    m = re.fullmatch(r"(?:(\d+)m )?(\d+(?:\.\d+)?)s", text)
    assert m, text
    return int(m.group(1) or 0) * 60 + float(m.group(2))


def status_json(fl):
    code, _, body = fl.http_get("/status.json")
    assert code == 200
    return json.loads(body)


def test_status_says_when_the_masters_redis_figures_were_polled(redis_server, fleet):
    fl = fleet({"fleet": {"poll_interval": "1s"}, "pool:a": log_pool("a")})
    doc = wait_until(lambda: (d := status_json(fl)) and d["pools"][0]["redis_polled"] and d,
                     what="a first poll")
    polled = doc["pools"][0]["redis_polled"]
    assert doc["time"] - 3 <= polled <= doc["time"] + 0.01, doc
    res = run_binary(["status", "-c", str(fl.config_path)])
    assert res.returncode == 0, res.stderr
    line = [l for l in res.stdout.splitlines() if POLLED.match(l)]
    assert len(line) == 1, res.stdout
    stamp, age = POLLED.match(line[0]).groups()
    assert abs(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) - time.time()) < 4 + TIMEOUT / 10
    assert age_seconds(age) <= 3 * 1 + 2, line   # poll_interval 1s, generous

    # Redis gone: the master keeps the last figures, and the status says how old they are.
    redis_server.stop()
    wait_until(lambda: (d := status_json(fl))["time"] - d["pools"][0]["redis_polled"] > 5,
               what="figures older than 5 s")
    res = run_binary(["status", "-c", str(fl.config_path)])
    line = [l for l in res.stdout.splitlines() if POLLED.match(l)]
    assert len(line) == 1, res.stdout
    assert age_seconds(POLLED.match(line[0]).group(2)) > 4, line
    assert json.loads(run_binary(["status", "-c", str(fl.config_path), "--json"]).stdout)[
        "pools"][0]["redis_polled"] <= time.time() - 4


def test_status_from_redis_directly_says_the_figures_are_polled_now(redis_server, tmp_path):
    cfg = cli_config(tmp_path, redis_server.url)      # no master listens there
    res = run_binary(["status", "-c", str(cfg)])
    assert res.returncode == 1, res.stderr
    now = [l for l in res.stdout.splitlines() if l.startswith("redis figures polled now, ")]
    assert len(now) == 1, res.stdout
    stamp = now[0].removeprefix("redis figures polled now, ")
    assert abs(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) - time.time()) < 5
    doc = json.loads(run_binary(["status", "-c", str(cfg), "--json"]).stdout)
    assert abs(doc["pools"][0]["redis_polled"] - doc["time"]) < 0.01


# --------------------------------------------------------------------------------------------
# bash completion
# --------------------------------------------------------------------------------------------

def complete(*words, cwd=None):
    """The completions bash gives for `streamfleet WORDS` (the last word is being typed)."""
    script = (f"source {COMPLETION}\n"
              "COMP_WORDS=(\"$@\"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
              "COMP_LINE=\"${COMP_WORDS[*]}\"; COMP_POINT=${#COMP_LINE}\n"
              "_streamfleet streamfleet \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", "streamfleet", *words],
                       capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    return sorted(w for w in r.stdout.splitlines() if w)


def test_completion_registers_for_streamfleet():
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"source {COMPLETION}; complete -p streamfleet"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and "_streamfleet" in r.stdout, r.stdout + r.stderr


def test_completion_gives_the_subcommands_and_options():
    assert {"dlq", "status"} <= set(complete(""))
    assert complete("st") == ["status"]
    assert set(complete("--")) == {"--config", "--test", "--version", "--help"}
    assert complete("dlq", "") == ["list", "purge", "replay"]
    assert complete("dlq", "re") == ["replay"]
    assert {"--pool", "--count", "--fields", "--config"} <= set(complete("dlq", "list", "--"))
    assert "--before" in complete("dlq", "purge", "--")
    assert "--before" not in complete("dlq", "list", "--")
    assert {"--json", "--watch"} <= set(complete("status", "--"))


def test_completion_gives_the_options_the_binary_accepts():
    # every long option completed is one the binary takes (its --help names it)
    for words in (["dlq", "list"], ["dlq", "replay"], ["dlq", "purge"], ["status"], []):
        helptext = run_binary([*words, "--help"]).stdout
        for opt in complete(*words, "--"):
            assert opt in helptext, (words, opt)


def test_completion_gives_the_pool_names_of_the_config(tmp_path):
    cfg = cli_config(tmp_path, "redis://127.0.0.1:1", orders="o", emails="e", events="ev")
    assert complete("dlq", "list", "-c", str(cfg), "--pool", "") == ["emails", "events", "orders"]
    assert complete("dlq", "replay", "--config", str(cfg), "--pool", "e") == ["emails", "events"]
    assert complete("dlq", "list", f"--config={cfg}", "-p", "o") == ["orders"]
    # as bash splits them at the = (COMP_WORDBREAKS)
    assert complete("dlq", "list", "--config", "=", str(cfg), "--pool", "=", "em") == ["emails"]
    assert complete("dlq", "list", "--config", "=", str(cfg), "--pool", "=") == ["=emails", "=events", "=orders"]
    # a config file completes as a file
    assert complete("-c", str(tmp_path / "cl")) == [str(cfg)]
