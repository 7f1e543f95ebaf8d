"""Will a tree start its init and let someone log in (issue 14 item 4): the checks on the
finished tree, each problem named with its line."""

from __future__ import annotations

from composer.system.readiness import check_inittab, check_login_shells
from composer.tree import FileTree


def tree_with(inittab: str | None, *programs: str) -> FileTree:
    tree = FileTree()
    tree.add_file("bin/busybox", b"\x7fELF", mode=0o755)
    tree.add_symlink("sbin/init", "/bin/busybox")
    for program in programs:
        tree.add_symlink(program, "/bin/busybox")
    if inittab is not None:
        tree.add_file("etc/inittab", inittab.encode())
    return tree


def test_every_inittab_program_is_looked_up() -> None:
    text = ("# comment\n\n::sysinit:/sbin/openrc sysinit\n"
            "ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n"
            "::shutdown:umount -a -r\n::wait:echo $HOME > /dev/null\nnot an entry\n")
    problems = [str(p) for p in check_inittab(tree_with(text, "sbin/getty", "bin/umount"))]
    assert problems == [
        "/etc/inittab line 3: runs /sbin/openrc, which is not an executable file in the image "
        "(add the package that provides it, or change /etc/inittab)",
        "/etc/inittab line 6: runs /bin/sh, which is not an executable file in the image (add "
        "the package that provides it, or change /etc/inittab)",
        "/etc/inittab line 7: not an inittab entry 'id:runlevels:action:process' with an "
        "action of sysinit, wait, once, respawn, askfirst, ctrlaltdel, shutdown, restart"]
    ok = tree_with("::sysinit:/sbin/openrc sysinit\n::shutdown:umount -a -r\n",
                   "sbin/openrc", "bin/umount")
    assert check_inittab(ok) == []


def test_init_itself_and_busyboxs_default_inittab() -> None:
    tree = FileTree()
    assert [str(p) for p in check_inittab(tree)] == [
        "/sbin/init: missing or not executable; the kernel starts it as the first process "
        "(add busybox)",
        "/etc/inittab: absent, so busybox init runs /bin/sh, which the image lacks"]
    assert check_inittab(tree_with(None, "bin/sh")) == []


def test_only_accounts_someone_can_log_into_need_a_shell() -> None:
    tree = tree_with(None, "bin/sh")
    tree.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/ash\n"
                                b"daemon:x:2:2::/sbin:/bin/zsh\nops:x:1000:1000::/home/ops:/bin/sh\n")
    tree.add_file("etc/shadow", b"root:$6$s$h:0:::::\ndaemon:!:0:::::\nops:*:0:::::\n")
    assert [str(p) for p in check_login_shells(tree)] == [
        "/etc/passwd root: login shell /bin/ash is not an executable file in the image (add the "
        "package that provides it, or choose another shell)"]
