"""``forge.Repository(url)``: a repository URL parsed once into host, owner and name.

An AgentRun names its repository by whatever URL a person would paste: an HTTPS clone
URL, a browser URL, or git's SSH forms (``git@host:owner/name.git``,
``ssh://git@host/owner/name``). Every forge call needs the same three facts from it, and
the git proxy needs the HTTPS clone URL, so they are read here, once, and a URL that
is not a repository on a forge fails here, naming the URL.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse

from continue_orchestrator import errors

_SCP = re.compile(r"(?:[A-Za-z0-9._~-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>(?!/).+)")
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
_FIX = "use the repository's clone URL, e.g. https://github.com/OWNER/NAME.git"


def loopback(hostname: str) -> bool:
    """Whether ``hostname`` (no port, no brackets) is this machine."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _fail(url: str, what: str, fix: str = _FIX) -> errors.ForgeError:
    return errors.ForgeError(what, where=f"repository URL {url}", fix=fix)


def _redacted(url: str) -> str:
    """``url`` with any password in it replaced, safe to put in a message or a log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _split(url: str) -> tuple[str, str, str]:
    """(scheme of the HTTPS side, host[:port], path) of any accepted URL form."""
    text = url.strip()
    if "://" not in text:
        scp = _SCP.fullmatch(text)
        if scp is None:
            raise _fail(url, "is not a URL git or a forge understands")
        return "https", scp["host"].lower(), scp["path"]
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("https", "http", "ssh"):
        raise _fail(_redacted(url), f"{parts.scheme}:// is not a forge URL (https or ssh)")
    if parts.password is not None:
        raise _fail(
            _redacted(url),
            "carries a password",
            "keep the credential out of the URL; give it to the forge as its credential",
        )
    if parts.query or parts.fragment:
        raise _fail(url, "has a query or fragment; a repository URL has neither")
    if not parts.hostname:
        raise _fail(url, "names no host")
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if parts.scheme == "ssh":  # git over SSH: the forge's HTTPS side is on the default port
        return "https", host, parts.path
    default = 443 if parts.scheme == "https" else 80
    port = parts.port
    return parts.scheme, host if port in (None, default) else f"{host}:{port}", parts.path


@dataclasses.dataclass(frozen=True)
class Repository:
    """A repository on a forge: ``Repository("https://github.com/acme/payments.git")``.

    ``host`` is lowercased, with a port only when it is not the scheme's default;
    ``path_prefix`` is what a forge served under a sub-path (``https://host/git/...``)
    puts before ``owner/name`` (empty on GitHub). Raises ``errors.ForgeError`` naming
    the URL (a password in it is never repeated) when it is not a repository URL.
    """

    url: str
    scheme: str = dataclasses.field(init=False)
    host: str = dataclasses.field(init=False)
    path_prefix: str = dataclasses.field(init=False)
    owner: str = dataclasses.field(init=False)
    name: str = dataclasses.field(init=False)
    full_name: str = dataclasses.field(init=False)
    """``owner/name``, as forge APIs and messages write it."""
    web_root: str = dataclasses.field(init=False)
    """The forge's root URL: ``scheme://host`` and any sub-path."""
    clone_url: str = dataclasses.field(init=False)
    """The smart-HTTP clone URL (HTTPS, or HTTP as given), without credentials."""

    def __post_init__(self) -> None:
        scheme, host, path = _split(self.url)
        segments = [s for s in path.strip("/").split("/") if s]
        if segments and segments[-1].endswith(".git"):
            segments[-1] = segments[-1].removesuffix(".git")
        if len(segments) < 2:
            raise _fail(_redacted(self.url), "names no OWNER/NAME repository path")
        for segment in segments:
            if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
                raise _fail(
                    _redacted(self.url),
                    f"path segment {segment!r} is not a forge name",
                    "owner and repository names are letters, digits, '-', '_' and '.'",
                )
        owner, name, prefix = segments[-2], segments[-1], "".join(f"/{s}" for s in segments[:-2])
        web_root = f"{scheme}://{host}{prefix}"
        parsed = {
            "scheme": scheme,
            "host": host,
            "path_prefix": prefix,
            "owner": owner,
            "name": name,
            "full_name": f"{owner}/{name}",
            "web_root": web_root,
            "clone_url": f"{web_root}/{owner}/{name}.git",
        }
        for field, value in parsed.items():
            object.__setattr__(self, field, value)

    @property
    def hostname(self) -> str:
        """The host without its port (and an IPv6 literal without brackets)."""
        if self.host.startswith("["):
            return self.host[1:].partition("]")[0]
        return self.host.rpartition(":")[0] if ":" in self.host else self.host

    @property
    def loopback(self) -> bool:
        """Whether the host is this machine (where plain HTTP is acceptable)."""
        return loopback(self.hostname)

    def __str__(self) -> str:
        return self.clone_url
