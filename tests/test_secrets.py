"""No secret printed or written, and a line where a traceback was.

A storage URL's password, in any shape (user info, no user name, query string, a raw or an
encoded ``@``, a URL that SQLAlchemy cannot parse), never appears in what ``otransfer`` prints
(stdout, stderr, ``--help``, ``--debug`` tracebacks) or writes (results, logs, records): on an
unreachable server, on a real PostgreSQL, and on one that refuses the password. Errors of the
machine or the input (``--results`` a file, a link loop or read-only, a full disk, Ctrl-C, an
unknown or misspelt driver, a driver not installed) are one line; a bug keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest

from harness.cli import STORAGE_ENV, main
from harness.experiments.records import redact

ROOT = Path(__file__).resolve().parents[1]
SECRET = "Sx9hunter2"
DOWN = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once

#: every shape a password takes in a URL; ``{pw}`` is the secret, ``{hp}`` host:port
SHAPES = {
    "userinfo": "postgresql+psycopg2://otransfer:{pw}@{hp}/postgres",
    "no-user": "postgresql+psycopg2://:{pw}@{hp}/postgres",
    "query": "postgresql+psycopg2://otransfer@{hp}/postgres?password={pw}",
    "raw-at": "postgresql+psycopg2://otransfer:s@{pw}@{hp}/postgres",
    "encoded-at": "postgresql+psycopg2://otransfer:p%40{pw}@{hp}/postgres",
    "sslpassword": "postgresql+psycopg2://otransfer@{hp}/postgres?sslmode=disable&sslpassword={pw}",
    "colon": "postgresql+psycopg2://otransfer:a:{pw}@{hp}/postgres",
    "brace": "postgresql+psycopg2://otransfer:{{{pw}}}@{hp}/postgres",
    "bad-port": "postgresql+psycopg2://otransfer:{pw}@127.0.0.1:noport/postgres",
    "no-scheme": "otransfer:{pw}@{hp}/postgres",
}

TINY = """\
name: {name}
seeds: [0]
stages:
  teacher:
    model: mlp
    model_params: {{widths: [16]}}
    dataset: digits
    train: {{epochs: 1, batch_size: 64, lr: 0.05}}
  students:
    model: mlp
    model_params: {{widths: [4]}}
    dataset: digits
    dataset_params: {{n_per_class: 5}}
    teacher: teacher
    train: {{epochs: 1, batch_size: 25, lr: 0.05}}
    regularizers:
      - none
      - kd: {{tau: 4}}
"""


def _url(shape: str, hp: str = DOWN, pw: str = SECRET) -> str:
    return SHAPES[shape].format(pw=pw, hp=hp)


def _suite(tmp_path, name: str | None = None) -> Path:
    name = name or f"tiny-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name))
    return path


def _files_without(root: Path, *secrets: str) -> list[Path]:
    """Every file under ``root``; fails naming the first that holds one of ``secrets``."""
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"{s!r} written to {p}"
    return files


def _one_line_error(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"otransfer {command}"), err
    return lines[0]


# --------------------------------------------------------------------------- redact, scrub


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_redact_hides_the_password_of_every_url_shape(shape):
    url = _url(shape)
    shown = redact(url)
    assert SECRET not in shown and "***" in shown, shown
    assert shown.split("://")[0] == url.split("://")[0] or "://" not in url  # still readable


@pytest.mark.parametrize(
    "url,shown",
    [
        ("postgresql+psycopg2://u:pw@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
        ("postgresql+psycopg2://:pw@h/db", "postgresql+psycopg2://:***@h/db"),
        (
            "postgresql+psycopg2://u@h/db?password=pw&sslmode=require",
            "postgresql+psycopg2://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql+psycopg2://u:s@cret@h/db", "postgresql+psycopg2://u:***@h/db"),
        ("postgresql://u:pa%40ss@h/db", "postgresql://u:***@h/db"),
        ("mysql+pymysql://root:pw@h/db", "mysql+pymysql://root:***@h/db"),
        ("redis://:pw@h:6379", "redis://:***@h:6379"),
        (
            "postgresql://u:pw@h/db?token=t0k&api_key=k3y",
            "postgresql://u:***@h/db?api_key=***&token=***",
        ),
        ("sqlite:////abs/path/runs.sqlite3?mode=ro", "sqlite:////abs/path/runs.sqlite3?mode=ro"),
        ("sqlite:///results/mini/runs.sqlite3", "sqlite:///results/mini/runs.sqlite3"),
        ("postgresql://u:pw@h1:1,h2:2/db", "postgresql://u:***@h1:1,h2:2/db"),  # unparseable
        ("u:pw@h/db", "u:***@h/db"),
    ],
)
def test_redact_is_sqlalchemys_rendering_with_query_secrets_masked(url, shown):
    assert redact(url) == shown


def test_scrub_masks_a_password_and_its_pieces_in_a_drivers_message():
    from harness.experiments.secrets import scrub

    url = "postgresql+psycopg2://otransfer:s@cretAT1@127.0.0.1:1/db"
    msg = 'could not translate host name "cretAT1@127.0.0.1" to address'  # psycopg2's
    assert "cretAT1" not in scrub(msg, url)
    other = "see postgresql://a:bcdef@h/x or mysql://q:r@s@t?pwd=zz9&x=1 for details"
    out = scrub(other)  # a URL it was not told about
    assert "bcdef" not in out and "r@s" not in out and "zz9" not in out and "x=1" in out


# --------------------------------------------------------------------------- unreachable


@pytest.fixture
def fast_retry(monkeypatch):
    monkeypatch.setenv("OTRANSFER_STORAGE_RETRY", "1")


@pytest.mark.parametrize("via", ["option", "environment"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_command_prints_the_password_of_an_unreachable_storage(
    shape, via, tmp_path, monkeypatch, capsys, fast_retry
):
    url = _url(shape)
    suite = str(_suite(tmp_path))
    results = tmp_path / "r"
    storage = ["--storage", url] if via == "option" else []
    if via == "environment":
        monkeypatch.setenv(STORAGE_ENV, url)
    for cmd in (
        ["status", suite, "--results", str(results)],
        ["run", suite, "--no-progress", "--results", str(results)],
        ["worker", suite, "--no-progress", "--results", str(results)],
        ["resume", suite, "--no-progress", "--results", str(results)],
        ["report", suite],
        ["status", suite, "--json", "--results", str(results)],
    ):
        assert main([*cmd, *storage]) == 1, cmd
        out, err = capsys.readouterr()
        assert SECRET not in out + err, (cmd, out, err)
        line = _one_line_error(err, cmd[0] if cmd[0] != "report" else f"report {suite}")
        assert "storage" in line
    _files_without(tmp_path, SECRET)


def test_tune_and_launch_print_no_password_and_write_none(
    tmp_path, monkeypatch, capsys, fast_retry
):
    url = _url("query")
    monkeypatch.setenv(STORAGE_ENV, url)
    results = tmp_path / "r"
    assert main(["tune", "mini", "--results", str(results), "--storage", url]) == 1
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "storage" in _one_line_error(err, "tune")
    # launch: the URL reaches the worker through the environment (not its pickle or its
    # log); its status at the end says the storage cannot be opened, in one line
    code = main(
        [
            "launch",
            str(_suite(tmp_path)),
            "--local",
            "--wait",
            "--array",
            "1",
            "--results",
            str(results),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1 and SECRET not in out + err
    assert "storage" in _one_line_error(err, "launch")
    assert _files_without(results, SECRET)  # launches.jsonl, submitit's pickles and logs


def test_the_help_never_shows_the_storage_of_the_environment(monkeypatch, capsys):
    monkeypatch.setenv(STORAGE_ENV, _url("userinfo"))
    for cmd in ("run", "resume", "worker", "status", "report", "tune", "launch"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert SECRET not in capsys.readouterr().out


def test_debug_shows_the_traceback_without_the_password(tmp_path, monkeypatch, capsys):
    url = _url("raw-at", hp="127.0.0.1:1")
    for argv, env in (
        (["--debug", "status", "mini"], None),
        (["status", "mini", "--debug"], None),
        (["status", "mini"], "1"),
    ):
        if env:
            monkeypatch.setenv("OTRANSFER_DEBUG", env)
        assert main([*argv, "--storage", url, "--results", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and SECRET not in err
        assert err.strip().splitlines()[-1].startswith("otransfer status: storage")


# --------------------------------------------------------------------------- real PostgreSQL


def _database_text(storage: str) -> str:
    """Every row of every table of the storage (records, their attributes, claims), as text."""
    import sqlalchemy as sa

    engine = sa.create_engine(storage)
    try:
        with engine.connect() as c:
            return "\n".join(
                str(c.execute(sa.text(f'select * from "{t}"')).all())
                for t in sa.inspect(c).get_table_names()
            )
    finally:
        engine.dispose()


def test_a_real_postgresql_run_prints_and_writes_no_password(pg_url, tmp_path, monkeypatch, capfd):
    """The throwaway server trusts every connection, so the URL's password is not checked:
    the runs go through, two workers write their logs (a terminal's bar), and not one file,
    line or record holds the password."""
    from sqlalchemy.engine import make_url

    import harness.experiments.progress as progress

    base = make_url(pg_url)
    hp = f"{base.host}:{base.port}"
    results = tmp_path / "r"
    suite = _suite(tmp_path)
    name = suite.stem
    with_user = f"postgresql+psycopg2://{base.username}:{SECRET}@{hp}/{base.database}"
    in_query = f"postgresql+psycopg2://{base.username}@{hp}/{base.database}?password={SECRET}"
    monkeypatch.setattr(progress, "is_terminal", lambda: True)  # logs/worker-K.log, a bar
    monkeypatch.setenv(STORAGE_ENV, with_user)
    assert main(["run", str(suite), "--workers", "2", "--results", str(results)]) == 0
    monkeypatch.delenv(STORAGE_ENV)
    assert (
        main(
            [
                "resume",
                str(suite),
                "--no-progress",
                "--results",
                str(results),
                "--storage",
                in_query,
            ]
        )
        == 0
    )
    for cmd in (["status", str(suite), "--verbose"], ["status", str(suite), "--json"]):
        assert main([*cmd, "--results", str(results), "--storage", in_query]) == 0
    assert main(["report", str(suite), "--storage", with_user, "--out", str(results / name)]) == 0
    out, err = capfd.readouterr()
    assert SECRET not in out + err
    assert f"{base.username}:***@" in out and "password=***" in out
    written = {p.name for p in _files_without(results, SECRET)}
    assert {"runs.csv", "leaderboard.md", "worker-0.log", "worker-1.log"} <= written
    assert SECRET not in _database_text(pg_url)


@pytest.fixture(scope="session")
def pg_password():
    """A throwaway PostgreSQL that checks passwords (scram-sha-256): ``(url without the
    password, the password)``; skipped where PostgreSQL's initdb is not on PATH."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("no PostgreSQL (initdb) to start a server that checks passwords")
    password = f"Right@{uuid.uuid4().hex[:6]}"
    out = subprocess.run(
        [str(ROOT / "scripts" / "pg-throwaway")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PG_THROWAWAY_PASSWORD": password},
    )
    if out.returncode != 0:
        pytest.skip(f"could not start PostgreSQL: {out.stderr.strip()[-300:]}")
    pgdir = out.stderr.strip().splitlines()[-1]
    try:
        yield out.stdout.strip(), password
    finally:
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*as_pg, "pg_ctl", "-D", f"{pgdir}/data", "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(pgdir, ignore_errors=True)


@pytest.mark.parametrize("shape", ["userinfo", "no-user", "query", "encoded-at", "colon", "brace"])
def test_a_refused_password_is_one_line_without_it(shape, pg_password, tmp_path, capsys):
    from sqlalchemy.engine import make_url

    base = make_url(pg_password[0])
    url = _url(shape, hp=f"{base.host}:{base.port}")
    assert main(["status", "mini", "--storage", url, "--results", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    line = _one_line_error(err, "status")
    assert SECRET not in out + err and "password authentication failed" in line, line


def test_the_right_password_works_encoded_and_is_refused_raw(pg_password, tmp_path, capsys):
    """A password with an '@': percent-encoded it opens the storage (and is never shown);
    raw, SQLAlchemy would read the rest of it as the host, so it is refused before any
    connection, with the fix."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    base, password = make_url(pg_password[0]), pg_password[1]
    hp = f"{base.host}:{base.port}"
    encoded = f"postgresql+psycopg2://otransfer:{quote(password, safe='')}@{hp}/postgres"
    assert main(["status", "mini", "--storage", encoded, "--results", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert password not in out + err and quote(password, safe="") not in out + err
    assert "otransfer:***@" in out
    raw = f"postgresql+psycopg2://otransfer:{password}@{hp}/postgres"
    assert main(["status", "mini", "--storage", raw, "--results", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    line = _one_line_error(err, "status")
    assert "%40" in line and "raw '@'" in line
    for piece in [password, *password.split("@")]:
        assert piece not in out + err


# --------------------------------------------------------------------------- one line


def test_results_that_is_a_file_or_a_link_loop_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    cases = {
        a_file: "is a file, not a folder",
        tmp_path / "loop1": "symbolic link",
        a_file / "sub": "where a folder is expected",
    }
    for results, says in cases.items():
        for cmd in (
            ["run", "mini", "--no-progress"],
            ["status", "mini"],
            ["tune", "mini"],
            ["worker", "mini", "--no-progress"],
        ):
            assert main([*cmd, "--results", str(results)]) == 1, cmd
            line = _one_line_error(capsys.readouterr().err, cmd[0])
            assert says in line and str(results) in line, line
    assert a_file.read_text() == "x"


def test_a_read_only_results_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import harness.experiments.errors as errors
    import harness.experiments.records as records

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway: the file system refuses in its stead

            def refuse(*a, **k):
                raise PermissionError(errno.EACCES, "Permission denied", str(ro))

            monkeypatch.setattr(errors, "tempfile", types.SimpleNamespace(TemporaryFile=refuse))
        assert main(["run", "mini", "--no-progress", "--results", str(ro)]) == 1
        line = _one_line_error(capsys.readouterr().err, "run")
        assert "cannot be written to" in line and "Permission denied" in line
    finally:
        ro.chmod(0o755)
    monkeypatch.undo()

    # deeper down (results/SUITE read-only, a full disk): the same, from wherever it is raised
    def no_dir(suite, results_root="results"):
        raise PermissionError(errno.EACCES, "Permission denied", f"{results_root}/{suite}")

    monkeypatch.setattr(records, "default_storage", no_dir)
    assert (
        main(["run", str(_suite(tmp_path)), "--no-progress", "--results", str(tmp_path / "r")]) == 1
    )
    line = _one_line_error(capsys.readouterr().err, "run")
    assert "Permission denied" in line and "not writable" in line


def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import harness.experiments.runner as runner

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.ckpt"))

    monkeypatch.setattr(runner, "run_suite", full)
    assert main(["run", "mini", "--no-progress", "--results", str(tmp_path)]) == 1
    line = _one_line_error(capsys.readouterr().err, "run")
    assert "disk is full" in line and "x.ckpt" in line and "resume" in line


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import harness.experiments.runner as runner

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runner, "run_suite", bug)
    with pytest.raises(ZeroDivisionError):
        main(["run", "mini", "--no-progress", "--results", str(tmp_path)])
    with pytest.raises(KeyError):  # any exception that is not the machine's or the input's
        monkeypatch.setattr(runner, "run_suite", lambda *a, **k: {}["x"])
        main(["run", "mini", "--no-progress", "--results", str(tmp_path)])


@pytest.mark.parametrize(
    "url,says",
    [
        ("postgresql+psycopg3://u:{pw}@127.0.0.1:1/db", "did you mean 'postgresql+psycopg2'"),
        ("postgres://u:{pw}@127.0.0.1:1/db", "did you mean 'postgresql'"),
        ("foo://u:{pw}@127.0.0.1:1/db", "knows no database driver 'foo'"),
        ("redis://:{pw}@127.0.0.1:1", "knows no database driver 'redis'"),
        ("mysql+pymysql://u:{pw}@127.0.0.1:1/db", "pip install pymysql"),
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which otransfer[postgres] is not
        ("postgresql://u:{pw}@127.0.0.1:1/db", "postgresql+psycopg2://"),
    ],
)
def test_an_unknown_or_misspelt_driver_is_one_line_with_the_fix(url, says, tmp_path, capsys):
    import importlib.util

    driver = {"mysql+pymysql": "pymysql", "postgresql": "psycopg"}.get(url.split("://")[0])
    if driver and importlib.util.find_spec(driver):
        pytest.skip(f"{driver} is installed")
    assert (
        main(["status", "mini", "--storage", url.format(pw=SECRET), "--results", str(tmp_path)])
        == 1
    )
    out, err = capsys.readouterr()
    line = _one_line_error(err, "status")
    assert says in line and SECRET not in out + err, line


def test_a_missing_postgresql_driver_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if not installed
    for cmd in (["status", "mini"], ["run", "mini", "--no-progress"]):
        assert main([*cmd, "--storage", _url("userinfo"), "--results", str(tmp_path)]) == 1
        out, err = capsys.readouterr()
        line = _one_line_error(err, cmd[0])
        assert "pip install 'otransfer[postgres]'" in line and "psycopg2" in line, line
        assert SECRET not in out + err


def test_ctrl_c_is_one_line_saying_what_is_kept_and_how_to_resume(tmp_path, monkeypatch, capsys):
    import harness.experiments.runner as runner
    from harness.experiments.records import records_frame

    suite = _suite(tmp_path)
    results = tmp_path / "r"
    real, calls = runner.run_job, []

    def interrupted_at_the_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "run_job", interrupted_at_the_second)
    try:
        code = main(
            ["run", str(suite), "--no-progress", "--results", str(results), "--set", "seeds=[0]"]
        )
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left main as a traceback")
    out, err = capsys.readouterr()
    assert code == 130
    line = _one_line_error(err, "run")
    assert "interrupted (Ctrl-C): 1 job(s) finished and recorded" in line
    assert f"`otransfer resume {suite} --results {results} --set 'seeds=[0]'` runs the rest" in line
    monkeypatch.setattr(runner, "run_job", real)
    assert (
        main(
            ["resume", str(suite), "--no-progress", "--results", str(results), "--set", "seeds=[0]"]
        )
        == 0
    )
    assert "2 run, 1 already done" in capsys.readouterr().out
    storage = f"sqlite:///{results / suite.stem / 'runs.sqlite3'}"
    assert len(records_frame(storage, suite.stem)) == 3  # the finished one kept, not re-run


def test_ctrl_c_of_any_command_is_one_line(tmp_path, monkeypatch, capsys):
    import harness.experiments.status as status

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(status, "suite_status", stop)
    try:
        assert main(["status", "mini", "--results", str(tmp_path)]) == 130
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left main as a traceback")
    assert (
        _one_line_error(capsys.readouterr().err, "status")
        == "otransfer status: interrupted (Ctrl-C)"
    )


def test_an_output_path_that_is_a_file_or_a_folder_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert main(["report", "mini", "--out", str(a_file)]) == 1
    line = _one_line_error(capsys.readouterr().err, "report")
    assert "a file where a folder is expected" in line or "is a file, not a folder" in line
    assert main(["schema", "--out", str(tmp_path)]) == 1
    assert "a folder stands where a file is expected" in _one_line_error(
        capsys.readouterr().err, "schema"
    )
    assert a_file.read_text() == "x"


def test_a_retry_budget_that_is_not_seconds_names_the_variable(tmp_path, monkeypatch, capsys):
    suite = _suite(tmp_path)
    for bad in ("abc", "nan", "-1"):
        monkeypatch.setenv("OTRANSFER_STORAGE_RETRY", bad)
        assert main(["run", str(suite), "--no-progress", "--results", str(tmp_path / bad)]) == 1
        line = _one_line_error(capsys.readouterr().err, "run")
        assert f"OTRANSFER_STORAGE_RETRY={bad!r} is not a number of seconds" in line, line


def test_a_url_typed_into_an_override_is_shown_masked(tmp_path, capsys):
    url = _url("userinfo", hp="db.example:5432")
    assert main(["run", "mini", "--set", f"name={url}", "--results", str(tmp_path)]) == 1
    line = _one_line_error(capsys.readouterr().err, "run")
    assert "key 'name'" in line and SECRET not in line and "otransfer:***@" in line
