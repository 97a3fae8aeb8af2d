"""``handshake-lab``: the command line. Thin: parse, call one function, render, exit.

Heavy imports (psutil, asyncio loops, the lab engine) happen inside the commands so that
``--help`` starts fast. Every ``HandshakeLabError`` becomes one line on stderr and its exit code
(see ``handshake_lab.errors.ExitStatus``); a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from handshake_lab.errors import ExitStatus, HandshakeLabError, UsageError
from handshake_lab.i18n.lang import Lang, resolve
from handshake_lab.placement.topology import CLI_TOPOLOGIES, Topology

T = TypeVar("T")

command_line: list[str] | None = None
"""This process's arguments when started as the command (``main``); None when called in-process
(tests, library use). ``run`` reruns them in a user namespace to get namespaces without root."""


class LoopName(StrEnum):
    asyncio = "asyncio"
    uvloop = "uvloop"


TopologyName = StrEnum(  # type: ignore[misc]
    "TopologyName", {t.value.replace("-", "_"): t.value for t in CLI_TOPOLOGIES}
)
"""The ``--topology`` choices, from the one enum (``remote`` is chosen by ``--peer``)."""


app = typer.Typer(
    name="handshake-lab",
    help=(
        "Watch a real kernel's TCP states while a lab drives real sockets step by step: "
        "connect, send, half-close, close, abort."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _fail(exc: BaseException, status: ExitStatus, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"handshake-lab: {exc}\n")
    raise typer.Exit(int(status))


def guarded(debug: bool, fn: Callable[[], T]) -> T:
    """Run ``fn``; turn our errors and Ctrl-C into one stderr line and an exit code."""
    try:
        return fn()
    except HandshakeLabError as exc:
        _fail(exc, exc.exit_status, debug)
    except KeyboardInterrupt:
        sys.stderr.write("handshake-lab: interrupted; every socket was closed\n")
        raise typer.Exit(int(ExitStatus.INTERRUPTED)) from None


LangOpt = Annotated[
    Lang | None,
    typer.Option("--lang", "-l", help="Language of the explanations [default: from the locale]."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]


class IpVersion(StrEnum):
    v4 = "4"
    v6 = "6"


IpOpt = Annotated[
    IpVersion | None,
    typer.Option(
        "--ip",
        help="IP version of the lab's sockets: 4 (127.0.0.1; 198.18.0.0/24 in namespaces) or "
        "6 (::1; 2001:db8:198:18::/64 in namespaces) [default: 4].",
    ),
]
Ip6Opt = Annotated[bool, typer.Option("-6", help="Short for --ip 6.")]


def ip_version(ip: IpVersion | None, six: bool) -> int:
    """``--ip`` and its short form ``-6`` -> 4 or 6; both given and differing is a usage error."""
    if six and ip is IpVersion.v4:
        raise UsageError("-6 and --ip 4 contradict each other: give one")
    return 6 if six or ip is IpVersion.v6 else 4


@app.command("list")
def list_labs(
    lang: LangOpt = None,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="One JSON document for scripts (see docs/labs.md)."),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """List the built-in labs in course order, grouped by level: time, privileges, states."""
    from handshake_lab.cli.course import list_command  # noqa: PLC0415

    language = resolve(lang)
    guarded(debug, lambda: list_command(language, json_out))


def complete_lab(incomplete: str) -> list[str]:
    """Shell completion of a lab argument: the built-in names (a path falls back to files)."""
    from handshake_lab.spec.loader import builtin_names  # noqa: PLC0415

    return [name for name in builtin_names() if name.startswith(incomplete)]


def complete_topic(incomplete: str) -> list[str]:
    """Shell completion of explain's first word: the two kinds, the states, the labs."""
    from handshake_lab.tcp.states import TcpState  # noqa: PLC0415

    words = ["state", "lab", *(s.name for s in TcpState), "ABSENT", *complete_lab("")]
    return [w for w in words if w.startswith(incomplete)]


@app.command()
def explain(
    topic: Annotated[
        str,
        typer.Argument(
            help="A TCP state (FIN_WAIT2, TIME-WAIT, ...) or a lab; or 'state' or 'lab' "
            "followed by NAME, when a name is both (close).",
            autocompletion=complete_topic,
        ),
    ],
    name: Annotated[
        str | None, typer.Argument(help="With 'state' or 'lab': the name.", show_default=False)
    ] = None,
    lang: LangOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Print the explanation of a TCP state or of a lab, without running anything.

    explain NAME shows the state if NAME is one (any spelling), else the lab; a name that is
    both (close) shows the state, with a note on stderr. explain state NAME and explain lab
    NAME pick one. Exit codes: 0 shown; 2 bad kind; 4 invalid lab file; 5 no such state or lab.
    """
    from handshake_lab.cli.explain import explain_command  # noqa: PLC0415
    from handshake_lab.render.text import output_width  # noqa: PLC0415

    language = resolve(lang)
    guarded(debug, lambda: typer.echo(explain_command(topic, name, language, output_width())))


lab_app = typer.Typer(
    name="lab",
    help="Write and check lab files (TOML) without running them.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(lab_app, name="lab")


@lab_app.command("check")
def lab_check(
    files: Annotated[list[str], typer.Argument(help="Lab files (TOML) to validate.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON document: every file and its problems.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Validate lab files without running them: every problem, as FILE:LINE: step N (ID): what.

    Exit codes: 0 every file is a valid lab; 4 some file is invalid or unreadable; 5 some file
    does not exist (and none is invalid).
    """
    from handshake_lab.cli.authoring import lab_check_command  # noqa: PLC0415

    status = guarded(debug, lambda: lab_check_command(files, json_out))
    raise typer.Exit(int(status))


@lab_app.command("new")
def lab_new(
    name: Annotated[
        str, typer.Argument(help="The lab's name: writes NAME.toml (or NAME if it ends in .toml).")
    ],
    debug: DebugOpt = False,
) -> None:
    """Write a commented lab template that passes 'lab check' and runs on loopback.

    Exit codes: 0 written; 2 not a lab name; 9 the file exists (never overwritten) or cannot
    be written.
    """
    from handshake_lab.cli.authoring import lab_new_command  # noqa: PLC0415

    status = guarded(debug, lambda: lab_new_command(name))
    raise typer.Exit(int(status))


quiz_app = typer.Typer(
    name="quiz",
    help="Quizzes: the answers file a student fills in for 'run LAB --answers FILE'.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(quiz_app, name="quiz")


@quiz_app.command("template")
def quiz_template(
    lab: Annotated[
        str,
        typer.Argument(help="A built-in lab name or a lab file.", autocompletion=complete_lab),
    ],
    lang: LangOpt = None,
    topology: Annotated[
        str | None,
        typer.Option("--topology", help="Only the steps of this topology [default: every step]."),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Print the blank answers file for a lab: every step's questions as TOML comments.

    Fill it in, then grade it: handshake-lab run LAB --answers answers.toml. Exit codes: 0
    printed; 2 bad option; 4 invalid lab file; 5 unknown lab.
    """
    from handshake_lab.cli.quiz_cmd import quiz_template_command  # noqa: PLC0415

    language = resolve(lang)
    status = guarded(debug, lambda: quiz_template_command(lab, language, topology))
    raise typer.Exit(int(status))


@app.command()
def run(
    lab: Annotated[
        str,
        typer.Argument(
            help="A built-in lab name (see 'list') or a lab file.", autocompletion=complete_lab
        ),
    ],
    lang: LangOpt = None,
    loop: Annotated[
        LoopName, typer.Option("--loop", help="Event loop that runs the sockets.")
    ] = LoopName.asyncio,
    topology: Annotated[
        TopologyName | None,
        typer.Option(
            "--topology",
            help="Where the endpoints live: loopback; two network namespaces (as root, or "
            "without root in a private user namespace); or netns-agent, the server side run "
            "by an agent in its namespace [default: the lab's first].",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="NDJSON events on stdout instead of tables.")
    ] = False,
    step: Annotated[
        bool, typer.Option("--step", help="Wait for Enter before each step (only on a terminal).")
    ] = False,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=1, max=65535, help="Server port [default: a free port]."),
    ] = None,
    pcap: Annotated[
        Path | None,
        typer.Option(
            "--pcap",
            help="Write the captured segments to FILE (pcap; root, or --topology netns).",
            dir_okay=False,
        ),
    ] = None,
    capture: Annotated[
        bool | None,
        typer.Option("--capture/--no-capture", help="Capture segments [default: when permitted]."),
    ] = None,
    trace: Annotated[
        bool | None,
        typer.Option("--trace/--no-trace", help="Follow kernel transitions [default: when root]."),
    ] = None,
    quiz: Annotated[
        bool,
        typer.Option("--quiz", help="Predict each step's states before it runs; graded."),
    ] = False,
    answers: Annotated[
        Path | None,
        typer.Option(
            "--answers",
            help="Predictions from a TOML file ([STEP_ID] side = STATE ...; 'quiz template "
            "LAB' writes a blank one): implies --quiz.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    peer: Annotated[
        str | None,
        typer.Option("--peer", help="HOST[:PORT] of an agent that runs the server side."),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="The agent's token (0600) [default: $HSLAB_AGENT_TOKEN].",
            dir_okay=False,
        ),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save",
            help="Also write the run record (the --json lines) to FILE, for 'show' or a teacher.",
            dir_okay=False,
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the run as one self-contained HTML page (ladder, state diagram, "
            "steps) to FILE at the end.",
            dir_okay=False,
        ),
    ] = None,
    browser: Annotated[
        bool,
        typer.Option(
            "--browser",
            help="Serve the run's page on 127.0.0.1 (URL on stderr), updated after each step; "
            "with --step the page's button runs the next step.",
        ),
    ] = False,
    ip: IpOpt = None,
    six: Ip6Opt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a lab: each step's action, the kernel's states for both ends, and why.

    Exit codes: 0 every step agreed with the kernel; 3 the kernel disagreed; 4 invalid lab
    file; 5 unknown lab; 6 missing dependency; 7 network error; 8 quiz predictions wrong;
    9 output file refused; 11 the --answers file cannot be read (names the line); 130
    interrupted.
    """
    from handshake_lab.cli.runlab import run_lab_command  # noqa: PLC0415

    language = resolve(lang)
    status = guarded(
        debug,
        lambda: run_lab_command(
            lab,
            lang=language,
            loop=loop.value,
            topology=Topology(topology.value) if topology else None,
            save=save,
            html=html,
            browser=browser,
            json_out=json_out,
            step=step,
            port=port,
            pcap=pcap,
            capture=capture,
            trace=trace,
            quiz=quiz,
            answers=answers,
            peer=peer,
            token_file=token_file,
            argv=command_line,
            ip=ip_version(ip, six) if ip is not None or six else None,
        ),
    )
    raise typer.Exit(int(status))


class PlayTopology(StrEnum):
    loopback = "loopback"
    netns = "netns"


@app.command()
def play(
    topology: Annotated[
        PlayTopology,
        typer.Option(
            "--topology",
            help="loopback, or two network namespaces (holds and drops; as root, or without "
            "root in a private user namespace).",
        ),
    ] = PlayTopology.loopback,
    loop: Annotated[
        LoopName, typer.Option("--loop", help="Event loop that runs the sockets.")
    ] = LoopName.asyncio,
    lang: LangOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="NDJSON events on stdout; messages on stderr.")
    ] = False,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", help="Also write the run record to FILE (for 'show').", dir_okay=False
        ),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script", help="Read the commands from FILE instead of stdin.", dir_okay=False
        ),
    ] = None,
    idle: Annotated[
        float,
        typer.Option(
            "--idle", min=1, help="End the session after this many seconds without a command."
        ),
    ] = 600.0,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=1, max=65535, help="Server port [default: a free port]."),
    ] = None,
    browser: Annotated[
        bool,
        typer.Option(
            "--browser",
            help="Also drive the session from a live page on 127.0.0.1 (URL on stderr): "
            "buttons per end; commands typed here still work.",
        ),
    ] = False,
    ip: IpOpt = None,
    six: Ip6Opt = False,
    debug: DebugOpt = False,
) -> None:
    """Drive one real connection by hand: connect, send, shutdown, close... on either end.

    After each command: the kernel's states (ss and psutil), the segments, and what the RFC
    9293 model predicted ('kernel agrees/disagrees'). 'help' lists the commands; 'save
    FILE.toml' writes the session as a lab. --browser adds a live page with buttons per end.
    Ends on EOF, 'quit', Ctrl-C or --idle.
    Exit codes: 0 the session ended; 2 bad option; 6 missing dependency; 7 network error;
    9 --save cannot be written; 130 interrupted (every socket and namespace removed).
    """
    from handshake_lab.cli.play_cmd import play_command  # noqa: PLC0415

    language = resolve(lang)
    status = guarded(
        debug,
        lambda: play_command(
            topology=Topology(topology.value),
            loop=loop.value,
            lang=language,
            json_out=json_out,
            save=save,
            script=script,
            idle=idle,
            port=port,
            argv=command_line,
            browser=browser,
            ip=ip_version(ip, six),
        ),
    )
    raise typer.Exit(int(status))


@app.command()
def show(
    run_file: Annotated[
        Path, typer.Argument(help="A saved run: the output of 'run --json' or 'run --save'.")
    ],
    lang: LangOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Draw a saved run as 'run' drew it: every step, the verdict, the ladders.

    The texts are in the language the run was saved in (a --lang other than that shows the
    English text where the file has it). Exit codes: the saved run's own verdict (0, 3, 8;
    130 if it was interrupted); 10 the file is not a readable saved run.
    """
    from handshake_lab.cli.runlab import show_command  # noqa: PLC0415

    status = guarded(debug, lambda: show_command(run_file, lang.value if lang else None))
    raise typer.Exit(int(status))


@app.command()
def report(
    run_file: Annotated[
        Path, typer.Argument(help="A saved run: the output of 'run --json' or 'run --save'.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The HTML file to write ('-': stdout) [default: RUN_FILE with .html].",
            dir_okay=False,
        ),
    ] = None,
    lang: LangOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Draw a saved run as one self-contained HTML page, the same page 'run --html' writes.

    The texts are in the language the run was saved in. Exit codes: 0 written; 9 the output
    cannot be written; 10 the file is not a readable saved run.
    """
    from handshake_lab.cli.runlab import report_command  # noqa: PLC0415

    status = guarded(debug, lambda: report_command(run_file, output, lang.value if lang else None))
    raise typer.Exit(int(status))


@app.command()
def grade(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="The class directory: NAME.jsonl (a saved run) per student, and optionally "
            "NAME.answers.toml beside it.",
        ),
    ],
    outdir: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="OUTDIR",
            help="Where to write grades.csv and grades.html (made if missing).",
        ),
    ] = Path("."),
    json_out: Annotated[
        bool, typer.Option("--json", help="The class as one JSON object on stdout (for an LMS).")
    ] = False,
    lang: LangOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Grade a class: check each saved run is complete and consistent, classify it, and
    write a CSV (one row per student, a column per step) and an HTML page.

    Classes: ok, wrong-predictions, kernel-disagreed, truncated, inconsistent (edited),
    unreadable; docs/grading.md says what the checks can and cannot prove. Exit codes: 0 the
    class was graded (whatever the students scored); 12 DIR is not a directory of submissions;
    9 an output cannot be written.
    """
    from handshake_lab.cli.grade_cmd import grade_command  # noqa: PLC0415

    status = guarded(debug, lambda: grade_command(directory, outdir, json_out, resolve(lang)))
    raise typer.Exit(int(status))


@app.command()
def doctor(
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help="Remove leftovers this tool created (hslab- prefix) and nothing else.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --cleanup: list what would be removed.")
    ] = False,
    pid: Annotated[
        int | None,
        typer.Option(
            "--pid", min=1, help="With --cleanup: only the leftovers of the run with this pid."
        ),
    ] = None,
    lang: LangOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Report what this machine offers (ss, psutil, uvloop, root, netns, nft, tracefs, IPv6)."""
    from handshake_lab.cli.doctor import cleanup_command, doctor_report  # noqa: PLC0415

    if dry_run and not cleanup:
        raise typer.BadParameter("--dry-run goes with --cleanup", param_hint="--dry-run")
    if pid is not None and not cleanup:
        raise typer.BadParameter("--pid goes with --cleanup", param_hint="--pid")
    status = guarded(
        debug,
        (lambda: cleanup_command(dry_run, pid=pid))
        if cleanup
        else (lambda: doctor_report(resolve(lang))),
    )
    raise typer.Exit(int(status))


@app.command()
def watch(
    port: Annotated[
        int | None,
        typer.Option(
            "--port", "-p", min=1, max=65535, help="Only sockets with this local or remote port."
        ),
    ] = None,
    pid: Annotated[
        int | None,
        typer.Option("--pid", min=1, help="Only sockets this process owns."),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            "-s",
            help="Only sockets entering, in or leaving this state (FIN-WAIT-2...).",
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="NDJSON: transitions as they happen (--once: sockets).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.01, help="Seconds between refreshes.")
    ] = 0.5,
    count: Annotated[
        int | None,
        typer.Option("--count", min=1, help="Stop after this many refreshes [default: Ctrl-C]."),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Watch the TCP states of any program's sockets live, marking each transition.

    Exit codes: 0 stopped (Ctrl-C, --count or --once); 2 bad option (unknown state, no such
    pid); 6 the socket table cannot be read.
    """
    from handshake_lab.cli.watch_cmd import watch_command  # noqa: PLC0415

    status = guarded(
        debug, lambda: watch_command(port, pid, state, once, json_out, interval, count)
    )
    raise typer.Exit(int(status))


@app.command()
def agent(
    bind: Annotated[
        str,
        typer.Option(
            "--bind", help="IPv4 (or IPv6) address of the lab network to listen on (required)."
        ),
    ],
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Control port.")
    ] = 7878,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="Token file (0600), created if missing [default: $HSLAB_AGENT_TOKEN].",
            dir_okay=False,
        ),
    ] = None,
    netns: Annotated[
        str | None,
        typer.Option("--netns", help="Serve from inside this network namespace (root)."),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Serve the server side of labs for 'run --peer' on another machine.

    Binds only the address given (never a wildcard); clients prove the shared token.
    Exit codes: 0 stopped (Ctrl-C, SIGTERM); 2 bad option; 7 cannot listen.
    """
    from handshake_lab.cli.agent_cmd import agent_command  # noqa: PLC0415

    status = guarded(debug, lambda: agent_command(bind, port, token_file, netns, debug))
    raise typer.Exit(int(status))


def version_callback(value: bool) -> None:
    if value:
        from handshake_lab import __version__  # noqa: PLC0415

        typer.echo(f"handshake-lab {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """Watch a real kernel's TCP states while a lab drives real sockets."""


PROGRAMS = ("handshake-lab", "hslab")
"""The installed names. Shell completion is registered under the name the program was run
by; ``python -m handshake_lab`` is called ``handshake-lab`` (a completion script for
"python -m handshake_lab" could never match a command line)."""


def main() -> None:
    global command_line  # noqa: PLW0603 - one command line per process
    command_line = sys.argv[1:]
    name = Path(sys.argv[0]).name if sys.argv else ""
    app(prog_name=name if name in PROGRAMS else PROGRAMS[0])
