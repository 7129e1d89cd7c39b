"""The Debian package (issue 15, part 3): `make deb` builds it with Debian's own tools into a
folder of the test's, and the package is inspected (dpkg-deb -c / -I / the conffiles, the unit
through systemd-analyze verify, lintian, the man pages), never installed on this machine."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, SLOWNESS, run_binary

BUILD_TIMEOUT = 600 * SLOWNESS       # about 15 s here with a warm cache; a loaded machine is slower


def sh(*args, cwd=None, timeout=120 * SLOWNESS, check=True, **kw):
    r = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def version():
    return re.search(r"^VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)


def tree_state():
    """What `git status` says of the tree: a build must leave it as it was. (Ignored files are
    left out: the tests that run beside this one write build/ and __pycache__.)"""
    return sh("git", "status", "--porcelain", "--untracked-files=all", cwd=REPO).stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """Build the package once for this file: {path, dir, log, extracted, control}."""
    for tool in ("dpkg-buildpackage", "dh", "lintian", "dpkg-deb"):
        assert shutil.which(tool), f"{tool} missing: run scripts/bootstrap"
    out = tmp_path_factory.mktemp("deb")
    before = tree_state()
    # without a network: in a network namespace of its own (only a loopback, down), as root
    offline = ["unshare", "--net"] if os.geteuid() == 0 and shutil.which("unshare") else []
    r = sh(*offline, "make", "--no-print-directory", "deb", f"DEB_DIR={out}", cwd=REPO,
           timeout=BUILD_TIMEOUT)
    arch = sh("dpkg", "--print-architecture").stdout.strip()
    path = out / f"streamfleet_{version()}_{arch}.deb"
    assert path.is_file(), f"no {path.name} in {sorted(os.listdir(out))}\n{r.stdout[-3000:]}"
    x = out / "extracted"
    sh("dpkg-deb", "-x", str(path), str(x))
    ctl = out / "control"
    sh("dpkg-deb", "-e", str(path), str(ctl))
    return {"path": path, "dir": out, "log": r.stdout + r.stderr, "x": x, "ctl": ctl,
            "arch": arch, "tree_before": before, "offline": bool(offline)}


def test_make_deb_builds_offline_leaves_the_tree_as_it_was_and_runs_no_tests(deb):
    assert deb["offline"], "the build could not be cut off the network (needs root and unshare)"
    assert tree_state() == deb["tree_before"]
    # dh would run `make test` (redis, sinks, sanitizers) as dh_auto_test: debian/rules skips it
    assert "override_dh_auto_build" in deb["log"]
    assert not re.search(r"^\s*(debian/rules override_)?dh_auto_test", deb["log"], re.M)


def test_the_package_holds_binary_unit_conffile_logrotate_man_pages_and_completion(deb):
    listing = sh("dpkg-deb", "-c", str(deb["path"])).stdout
    files = {line.split()[-1]: line.split()[0] for line in listing.splitlines()}
    for f in ("./usr/bin/streamfleet", "./lib/systemd/system/streamfleet.service",
              "./etc/streamfleet/streamfleet.ini", "./etc/logrotate.d/streamfleet",
              "./usr/share/man/man8/streamfleet.8.gz", "./usr/share/man/man5/streamfleet.ini.5.gz",
              "./usr/share/bash-completion/completions/streamfleet",
              "./usr/share/doc/streamfleet/copyright"):
        assert f in files, f"{f} not in the package:\n{listing}"
    assert files["./usr/bin/streamfleet"] == "-rwxr-xr-x"
    # it may hold the Redis password: not world-readable
    assert files["./etc/streamfleet/streamfleet.ini"] == "-rw-r-----"
    assert not [f for f in files if "/usr/local" in f]
    assert (deb["x"] / "usr/share/bash-completion/completions/streamfleet").read_bytes() == \
        (REPO / "etc/bash-completion/streamfleet").read_bytes()


def test_the_packaged_binary_is_the_plain_build_and_runs(deb):
    b = deb["x"] / "usr/bin/streamfleet"
    syms = sh("nm", "-D", str(b)).stdout
    assert "__asan_init" not in syms and "__ubsan" not in syms, "a sanitizer build was packaged"
    r = sh(str(b), "--version")
    assert r.stdout == f"streamfleet {version()}\n"
    # hardened by dpkg-buildflags: fortified calls, full RELRO
    assert "_chk" in syms
    assert "BIND_NOW" in sh("readelf", "-d", str(b)).stdout


def test_control_names_package_architecture_and_library_dependencies(deb):
    info = sh("dpkg-deb", "-I", str(deb["path"])).stdout
    fields = dict(re.findall(r"^ ([A-Z][\w-]*): (.*)$", info, re.M))
    assert fields["Package"] == "streamfleet"
    assert fields["Version"] == version()
    assert fields["Architecture"] == deb["arch"]
    depends = [d.strip().split()[0] for d in fields["Depends"].split(",")]
    # from dpkg-shlibdeps (${shlibs:Depends}): what the binary links, nothing by hand
    for lib in ("libc6", "libhiredis0.14", "libcurl4", "libssl3", "libinih1", "libmicrohttpd12",
                "libjansson4", "adduser"):
        assert lib in depends, fields["Depends"]


def test_the_config_and_logrotate_snippet_are_conffiles(deb):
    conffiles = (deb["ctl"] / "conffiles").read_text().split()
    assert "/etc/streamfleet/streamfleet.ini" in conffiles
    assert "/etc/logrotate.d/streamfleet" in conffiles


def test_the_packaged_config_is_valid_and_runs_as_the_streamfleet_user(deb):
    ini = deb["x"] / "etc/streamfleet/streamfleet.ini"
    assert re.search(r"^user = streamfleet\s", ini.read_text(), re.M)
    assert re.search(r"^group = streamfleet\s*$", ini.read_text(), re.M)
    r = run_binary(["-t", "-c", str(ini)])
    assert r.returncode == 0, r.stderr


def test_postinst_creates_the_system_user_and_the_scripts_parse(deb):
    postinst = (deb["ctl"] / "postinst").read_text()
    assert re.search(r"adduser --system\b.*\bstreamfleet$", postinst, re.M), postinst
    for script in ("postinst", "postrm", "prerm"):
        sh("sh", "-n", str(deb["ctl"] / script))
    # not started on install (not enabled): the config must be edited first
    assert "deb-systemd-helper enable" not in postinst.split("was-enabled")[0]


def test_logrotate_snippet_reopens_the_log_with_sigusr1(deb):
    snippet = (deb["x"] / "etc/logrotate.d/streamfleet").read_text()
    unit = (deb["x"] / "lib/systemd/system/streamfleet.service").read_text()
    # the files of the unit's LogsDirectory, a new one for the user, and SIGUSR1 to the master
    assert "LogsDirectory=streamfleet" in unit
    assert snippet.lstrip("# \n").count("/var/log/streamfleet/") >= 1
    assert re.search(r"^\s*create 0640 streamfleet ", snippet, re.M)
    post = snippet.split("postrotate", 1)[1].split("endscript", 1)[0]
    assert "--signal=USR1" in post and "--kill-whom=main" in post and "streamfleet.service" in post


def test_the_unit_passes_systemd_analyze_verify(deb, tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: run scripts/bootstrap"
    unit = (deb["x"] / "lib/systemd/system/streamfleet.service").read_text()
    assert "ExecStart=/usr/bin/streamfleet -c /etc/streamfleet/streamfleet.ini" in unit
    # verify checks that ExecStart's program exists: point it at the extracted one
    local = tmp_path / "streamfleet.service"
    local.write_text(unit.replace("/usr/bin/streamfleet", str(deb["x"] / "usr/bin/streamfleet")))
    r = sh("systemd-analyze", "verify", str(local), check=False)
    # it exits 0 on unknown keys and bad values too, and says them on stderr
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stdout + r.stderr


def test_lintian_finds_no_errors(deb):
    changes = next(deb["dir"].glob("*.changes"))
    r = sh("lintian", "--allow-root", str(changes), check=False, timeout=300 * SLOWNESS)
    errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
    assert not errors and r.returncode == 0, r.stdout + r.stderr


def man_text(path, tmp_path):
    r = sh("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(path), check=False,
           env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return sh("man", "-l", str(path), env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "200",
                                          "MAN_KEEP_FORMATTING": ""}).stdout


def test_man_pages_render_cleanly_and_name_every_option_and_key(deb, tmp_path):
    page8 = man_text(deb["x"] / "usr/share/man/man8/streamfleet.8.gz", tmp_path)
    page5 = man_text(deb["x"] / "usr/share/man/man5/streamfleet.ini.5.gz", tmp_path)
    page8 = page8.replace("\u2010", "-")      # a hyphen at a line break
    for words in ([], ["dlq"], ["dlq", "list"], ["dlq", "replay"], ["dlq", "purge"], ["status"]):
        helptext = run_binary([*words, "--help"]).stdout
        for opt in set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", helptext)):
            assert opt in page8, f"streamfleet(8) lacks {opt} of `streamfleet {' '.join(words)} --help`"
    for cmd in ("dlq list", "dlq replay", "dlq purge", "status", "SIGUSR1", "SIGHUP"):
        assert cmd in page8
    reference = (REPO / "docs/configuration.md").read_text()
    keys = set()
    for row in re.findall(r"^\| (`[^|]*`) \|", reference, re.M):
        keys.update(re.findall(r"`([a-z_.A-Z]+)", row))
    assert len(keys) > 50
    missing = [k for k in sorted(keys) if not re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", page5)]
    assert not missing, f"streamfleet.ini(5) lacks {missing}"
