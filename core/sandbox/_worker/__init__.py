"""The REPL worker: a stdlib-only package the host starts as ``python -I -S <this directory> CONFIG``.

It never imports recursa, so nothing of the host (and none of its secrets) is loaded into the process
that runs model code. Where the kernel allows it, the worker arranges itself in three processes::

    launcher   the host's child; drops root to uid 65534, unshares user/mount/net/pid/ipc namespaces
     └─ init   pid 1 of the new pid namespace: mounts a private /proc, reaps, and when it dies the
        │      kernel kills every process of the namespace (no orphans, whatever model code forks)
        └─ repl  loads the context, applies rlimits, no_new_privs and Landlock, then runs model code

Without namespaces the launcher runs the REPL itself and reports the weaker protections honestly.
The host talks to the REPL over the launcher's stdin/stdout, which the REPL moves to private fds before
any model code runs; fds 1 and 2 then point at a memfd whose content is added to each step's output.

Modules: ``__main__`` (entry point), ``_launch`` (the three processes and the order of their steps),
``_confine`` (namespaces, minimal root, Landlock, rlimits, the network audit hook), ``_repl`` (running model
code and talking to the host) and ``_protocol`` (the wire format, which the host imports too). This file
imports nothing, so the host's import of ``_protocol`` loads nothing else of the worker.
"""
