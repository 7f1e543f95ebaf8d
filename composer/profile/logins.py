"""What a profile may write to let someone log in: password hashes and SSH public keys.

Pure checks on text, used by the profile model. A password is only ever given as a
crypt(3) hash, never in plain text: profiles live in version control and in build
manifests' digests. Only SHA-512 (``$6$``) is accepted, because it is the strongest
scheme Alpine's login path can check: busybox ``login``/``su`` and OpenSSH's ``sshd``
(Alpine 3.19's binaries import ``crypt`` from ``libc.musl`` and link no libxcrypt) call
musl's ``crypt()``, whose ``crypt_r`` knows ``$1$`` MD5, ``$2?$`` bcrypt, ``$5$``
SHA-256 and ``$6$`` SHA-512 and treats anything else as DES, so a yescrypt ``$y$`` hash
never matches and the account could not be logged into.
"""

from __future__ import annotations

import base64
import binascii
import re

_CRYPT64 = "[./0-9A-Za-z]"
SHA512_CRYPT = re.compile(rf"^\$6\$(rounds=[0-9]{{1,9}}\$)?{_CRYPT64}{{1,16}}\${_CRYPT64}{{86}}$")
HASH_HINT = ("make one with `openssl passwd -6` (or `mkpasswd -m sha-512`) and paste its "
             "output")

KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
"""The public key types OpenSSH 9 accepts in ``authorized_keys`` by default (DSA is off)."""
MAX_KEY_LINE = 16 * 1024


def check_password_hash(value: str) -> str:
    """``value`` if it is a SHA-512 crypt hash; ValueError naming what it is otherwise."""
    if SHA512_CRYPT.match(value):
        return value
    if value.startswith("$y$"):
        raise ValueError("a yescrypt ($y$) hash cannot be checked by Alpine's login, su or sshd "
                         "(they call musl's crypt(), which has no yescrypt); use a SHA-512 hash: "
                         + HASH_HINT)
    if re.match(r"^\$(1|2[abxy]?|5|md5|sha1|gy|7)\$", value):
        scheme = value.split("$")[1]
        raise ValueError(f"${scheme}$ is a weaker crypt scheme than SHA-512; " + HASH_HINT)
    if value.startswith("$6$"):
        raise ValueError("not a well-formed SHA-512 crypt hash ($6$[rounds=N$]salt$ and 86 "
                         "characters of [./0-9A-Za-z]); " + HASH_HINT)
    if value in ("", "!", "*"):
        raise ValueError("leave password out to lock the account (an empty password is never "
                         "written; see accounts.root.console_login_without_password)")
    raise ValueError("must be a crypt hash ($6$…), never the password itself; " + HASH_HINT)


def check_public_key(line: str) -> str:
    """One ``authorized_keys`` line (options, key type, base64 key, comment), checked: the
    key type is one OpenSSH accepts and the base64 blob decodes to a key of that type."""
    if len(line) > MAX_KEY_LINE:
        raise ValueError(f"longer than {MAX_KEY_LINE} characters; not a public key line")
    if "PRIVATE KEY" in line:
        raise ValueError("this is a private key; give the public key line (the .pub file)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
        raise ValueError("one key per entry, on one line, without control characters")
    text = line.strip()
    rest = text
    if not text.startswith(KEY_TYPES):
        options, rest = _split_options(text)
        if not options or not rest.startswith(KEY_TYPES):
            raise ValueError(f"not an SSH public key line (expected '<type> <base64> "
                             f"[comment]' with a type of: {', '.join(KEY_TYPES)})")
    fields = rest.split(None, 2)
    if len(fields) < 2:
        raise ValueError("the key type is not followed by the base64 key")
    key_type, blob = fields[0], fields[1]
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r} (expected one of: {', '.join(KEY_TYPES)})")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {key_type} key is not valid base64") from None
    if len(raw) < 4 or raw[4:4 + int.from_bytes(raw[:4], "big")] != key_type.encode():
        raise ValueError(f"the base64 blob is not a {key_type} key (it names another type, or "
                         "is cut)")
    return text


def _split_options(text: str) -> tuple[str, str]:
    """``authorized_keys`` options (``from="…",no-pty``) and the rest of the line: the
    options end at the first blank outside double quotes."""
    quoted = False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return text[:i], text[i:].lstrip()
    return "", text
