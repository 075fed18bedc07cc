"""Storage URLs without their secrets: the one way a URL, or text that may hold one, is shown.

A storage URL (``--storage``, ``$OTRANSFER_STORAGE``) may carry a password in its user info
(``postgresql+psycopg2://user:PASSWORD@host/db``, ``://:PASSWORD@host``), percent-encoded or
not, or in its query (``?password=...``, ``?sslpassword=...``, ``?token=...``). Everything the
harness prints or writes about a storage goes through :func:`redact` (a URL) or :func:`scrub`
(a message, such as a driver's exception, that may quote one or part of one).
:func:`check_url` refuses, before any connection, the URLs that cannot mean what their author
meant (a raw ``@`` in a password) and :func:`open_error` turns the exception of a storage that
cannot be opened into one line with the fix.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["redact", "scrub", "check_url", "open_error", "secret_key"]

MASK = "***"

#: query parameters whose values are secrets (libpq's ``password``/``sslpassword``, MySQL's
#: ``passwd``, ODBC's ``pwd``, tokens and keys of cloud drivers ...)
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature", re.I)
_QUERY_ITEM = re.compile(r"([?&;])([^=&;#\s'\"]+)=([^&;#\s'\"]*)")
#: ``scheme://user:password@`` anywhere in a text; the password runs to the last ``@``
#: before white space or a quote (a raw ``@`` may sit in it)
_USERINFO = re.compile(r"([A-Za-z][\w+.-]*://)([^\s'\"/?#@:]*)(:[^\s'\"]*)?@")
#: secrets shorter than this are not masked inside free text (they would mask common words)
_MIN_SECRET = 3


def secret_key(name: str) -> bool:
    """Whether a URL query parameter ``name`` carries a secret."""
    return bool(_SECRET_KEY.search(unquote(name)))


def _mask_query(text: str) -> str:
    return _QUERY_ITEM.sub(
        lambda m: m.group(0) if not secret_key(m.group(2)) else f"{m.group(1)}{m.group(2)}={MASK}",
        text,
    )


def _mask_userinfo(text: str, bare: bool = False) -> str:
    """``text`` with every ``scheme://user:password@`` shown as ``scheme://user:***@`` (the
    password up to the last ``@`` of the URL), without parsing it; with ``bare``, a text that
    is ``user:password@...`` without a scheme too."""
    text = _USERINFO.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{':' + MASK if m.group(3) else ''}@", text
    )
    if bare and "://" not in text and "@" in text:  # ``user:password@host/db``: still a secret
        text = re.sub(r"^[^\s:@/]*:[^\s]*@", lambda m: m.group(0).split(":")[0] + f":{MASK}@", text)
    return text


def _parsed(url: str):
    """SQLAlchemy's reading of ``url``, or None where it cannot parse it or reads it other than
    its author meant (a raw ``@`` in the password puts the rest of the password in the host)."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:  # ArgumentError, a ValueError on a non-numeric port ...
        return None
    return None if u.host and "@" in u.host else u


def redact(url) -> str:
    """``url`` as it may be shown: SQLAlchemy's rendering with the password hidden
    (``render_as_string(hide_password=True)``) and the secret query parameters masked; a URL
    that SQLAlchemy cannot parse is masked from ``://`` to its last ``@`` instead. Never the
    raw string."""
    text = "" if url is None else str(url)
    u = _parsed(text)
    shown = (
        u.render_as_string(hide_password=True) if u is not None else _mask_userinfo(text, bare=True)
    )
    return _mask_query(shown)


def _secrets(url: str) -> list[str]:
    """The secret substrings of ``url`` (its password, raw and decoded, as SQLAlchemy and as
    the last-``@`` rule read it; its secret query values), longest first."""
    out: set[str] = set()
    u = _parsed(url)
    if u is not None:
        if u.password:
            out.add(str(u.password))
        for k, v in u.query.items():
            if secret_key(k):
                out.update([v] if isinstance(v, str) else v)
    rest = url.split("://", 1)[-1]
    userinfo = rest.rsplit("@", 1)[0] if "@" in rest else ""
    if ":" in userinfo:
        pw = userinfo.split(":", 1)[1]
        for p in (pw, unquote(pw)):  # and its pieces, which a driver may quote as a host
            out |= {p, *(piece for piece in re.split(r"[@:/]", p) if len(piece) > _MIN_SECRET)}
    for m in _QUERY_ITEM.finditer(url):
        if secret_key(m.group(2)):
            out |= {m.group(3), unquote(m.group(3))}
    return sorted((s for s in out if len(s) >= _MIN_SECRET), key=len, reverse=True)


def scrub(text, *urls) -> str:
    """``text`` (a message, a log line, an exception's text) safe to show: each of ``urls``
    replaced by its :func:`redact` form, their secrets (password, its pieces, secret query
    values of at least 3 characters) masked wherever they appear, and any other URL's
    password masked too."""
    text = str(text)
    for url in (str(u) for u in urls if u):
        text = text.replace(url, redact(url))
        for secret in _secrets(url):
            text = text.replace(secret, MASK)
    return _mask_query(_mask_userinfo(text)) if ("://" in text or "@" in text) else text


#: the storage URLs a message suggests (a password: in PGPASSWORD or ~/.pgpass, or as
#: USER:PASSWORD@ with '@', ':' and '/' percent-encoded)
_FORMS = "sqlite:///PATH or postgresql+psycopg2://USER@HOST:PORT/DB"


def check_url(url: str) -> None:
    """Raise ValueError (one line, the URL redacted) for a storage URL that cannot mean what
    its author meant: one SQLAlchemy cannot parse, or a raw ``@`` in its user or password."""
    shown = redact(url)
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception as exc:
        why = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
        raise ValueError(
            f"storage {shown!r} is not a database URL ({why}); give {_FORMS}"
        ) from None
    if u.host and "@" in u.host:
        raise ValueError(
            f"storage {shown!r}: its password (or user name) holds a raw '@'; "
            "percent-encode it as %40 (and ':' as %3A, '/' as %2F), or leave the "
            "password out of the URL and set PGPASSWORD or ~/.pgpass"
        )


#: SQLAlchemy dialects suggested for a misspelt one (Optuna's RDB storage: SQLite,
#: PostgreSQL, MySQL; PostgreSQL through psycopg2, the driver of otransfer[postgres])
_DIALECTS = (
    "sqlite",
    "postgresql",
    "postgresql+psycopg2",
    "postgresql+pg8000",
    "mysql",
    "mysql+pymysql",
    "mysql+mysqldb",
    "mysql+mysqlconnector",
)
#: drivers shipped as an extra of this project
_EXTRAS = {
    "psycopg2": "pip install 'otransfer[postgres]'",
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3)
    "psycopg": "pip install psycopg, or name the driver otransfer[postgres] installs: "
    "postgresql+psycopg2://...",
}


def _missing_module(exc: BaseException) -> str | None:
    """The module an exception (or one it was raised from: Optuna wraps the driver's
    ImportError in its own) says is not installed."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError):
            named = re.search(r"No module named '([\w.]+)'", str(exc))
            name = exc.name or (named.group(1) if named else None)
            if name:
                return name.split(".")[0]
        exc = exc.__cause__
    return None


def open_error(exc: BaseException, url: str) -> str:
    """One line: why the storage ``url`` cannot be opened (``exc``) and how to fix it; no
    secret of the URL in it."""
    shown = redact(url)
    missing = _missing_module(exc)
    if missing is not None:
        how = _EXTRAS.get(missing, f"pip install {missing}")
        return (
            f"storage {shown!r} needs the database driver {missing!r}, which is not "
            f"installed: {how}"
        )
    if type(exc).__name__ == "NoSuchModuleError":
        name = url.split("://", 1)[0]
        from solvers.registry import close_matches  # an error's path only: solvers loads torch

        close = close_matches(name, _DIALECTS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (
            f"storage {shown!r}: SQLAlchemy knows no database driver {name!r}; {hint}give {_FORMS}"
        )
    first = (str(exc).strip().splitlines() or [""])[0]
    hint = ""
    if "file is not a database" in str(exc):
        hint = (
            " (not an SQLite file: move it away, or give --results a new folder or "
            "--storage another database)"
        )
    return f"storage {shown!r} cannot be opened: {type(exc).__name__}: {scrub(first, url)}{hint}"
