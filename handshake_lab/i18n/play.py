"""The words of ``handshake-lab play`` (the help, the model's lines, the saved lab's
placeholders), in English and Chinese. Explanations of the states themselves come from
``states.toml``; these only frame them."""

from __future__ import annotations

from handshake_lab.i18n.lang import pick

PLAY_TEXTS: dict[str, dict[str, str]] = {
    "help": {
        "en": """\
Drive one real connection by hand; after each command, the kernel's states.
  connect              the client connects (SYN, SYN-ACK, ACK); one a session
  send END TEXT        END sends TEXT (END: client or server)
  recv END             END reads what arrived (data, EOF or an error)
  shutdown END         shutdown(SHUT_WR): END sends a FIN, can still receive
  close END            close(): a FIN (close listener = unlisten)
  abort END            close with SO_LINGER 0: a RST
  listen [noaccept]    open the listener again (noaccept: never accept)
  unlisten             close the listener (not its connection)
  accept               start accepting on a listener opened with noaccept
  wait [SECONDS]       watch the states (default 1 s), e.g. after a release
netns only (holds are nftables rules in the session's namespaces):
  drop next fin|ack|synack|syn from END    drop the next such segment END sends
  hold KIND at END     drop KIND arriving at END until released; KIND is one of
  {kinds}
  release HOLD         remove a hold (its id: h1, h2, ...)
  help, history, save FILE.toml, quit
Ends: client, server (the server's end of the connection), listener.
There is no undo: the kernel has none. A FIN sent is sent.
The 'expected' column is the RFC 9293 model's prediction, not the kernel.""",
        "zh": """\
手动驱动一条真实的连接；每条命令之后显示内核报告的状态。
  connect              客户端发起连接（SYN、SYN-ACK、ACK）；每个会话一条
  send END TEXT        END 发送 TEXT（END：client 或 server）
  recv END             END 读取收到的内容（数据、EOF 或错误）
  shutdown END         shutdown(SHUT_WR)：END 发出 FIN，仍可接收
  close END            close()：发出 FIN（close listener 即 unlisten）
  abort END            以 SO_LINGER 0 关闭：发出 RST
  listen [noaccept]    重新打开监听套接字（noaccept：从不 accept）
  unlisten             关闭监听套接字（不关闭已建立的连接）
  accept               对以 noaccept 打开的监听套接字开始 accept
  wait [SECONDS]       只观察状态（默认 1 秒），例如在 release 之后
仅限 netns（保持规则是本会话网络命名空间里的 nftables 规则）：
  drop next fin|ack|synack|syn from END    丢弃 END 发出的下一个这种报文段
  hold KIND at END     丢弃到达 END 的 KIND 报文段，直到 release；KIND 可以是
  {kinds}
  release HOLD         删除一条保持规则（编号：h1、h2……）
  help、history、save FILE.toml、quit
端点：client、server（服务器一侧的连接端）、listener（监听套接字）。
没有撤销：内核本身就没有撤销。发出的 FIN 已经发出。
“预期”一列是 RFC 9293 模型的预测，不是内核的报告。""",
    },
    "model": {
        "en": "Model (RFC 9293 table, not the kernel):",
        "zh": "模型（RFC 9293 状态表，不是内核）：",
    },
    "model_quiet": {
        "en": "Model: no end changes state.",
        "zh": "模型：没有任何一端改变状态。",
    },
    "model_unknown": {
        "en": "Model: cannot predict this step ({reason}); the kernel's states are only observed.",
        "zh": "模型：无法预测这一步（{reason}），只观察内核的状态。",
    },
    "timer": {
        "en": "{end} resends its {segment} when a retransmission timer fires; the model has no "
        "clock",
        "zh": "{end} 的 {segment} 要等重传定时器到期才会重发，而模型没有时钟",
    },
    "dropped": {
        "en": "dropped by hold {hold}: {segment}",
        "zh": "被保持规则 {hold} 丢弃：{segment}",
    },
    "illegal": {
        "en": "{event} has no transition in {state} at {end}",
        "zh": "{end} 处于 {state} 时 {event} 在状态表中没有转换",
    },
    "agrees": {"en": "Kernel agrees with the model.", "zh": "内核与模型一致。"},
    "disagrees": {
        "en": "Kernel disagrees with the model: {what}. That is an observation of this kernel, "
        "not an error.",
        "zh": "内核与模型不一致：{what}。这是对本内核的观察结果，而不是错误。",
    },
    "now": {"en": "Now {state}: {end}. {body}", "zh": "现在处于 {state}：{end}。{body}"},
    "teacher": {
        "en": "TODO (teacher): say what this step shows and which segments cross.",
        "zh": "待补充（教师）：说明这一步展示了什么，以及哪些报文段经过线路。",
    },
    "title": {"en": "Recorded with handshake-lab play", "zh": "用 handshake-lab play 录制"},
    "summary": {
        "en": "TODO (teacher): one line for 'handshake-lab list'",
        "zh": "待补充（教师）：给 handshake-lab list 的一行说明",
    },
    "no_unconnected": {
        "en": "{end} has no socket yet: connect first",
        "zh": "{end} 还没有套接字：请先 connect",
    },
    "no_closed": {
        "en": "{end} is closed by the application: its socket is gone",
        "zh": "{end} 已被应用程序关闭：套接字已不存在",
    },
    "no_unaccepted": {
        "en": "the server has no connection: the listener has accepted none",
        "zh": "服务器一侧没有连接：监听套接字还没有 accept 任何连接",
    },
    "no_transition": {
        "en": "{end} is {state}: the RFC table has no transition for {event} there",
        "zh": "{end} 处于 {state}：RFC 状态表中该状态没有 {event} 的转换",
    },
    "no_connected": {
        "en": "the client has connected already: one connection a session",
        "zh": "客户端已经连接过：每个会话只有一条连接",
    },
    "no_send": {
        "en": "{end} is {state}: data goes out only in ESTABLISHED or CLOSE_WAIT",
        "zh": "{end} 处于 {state}：只有 ESTABLISHED 或 CLOSE_WAIT 才能发送数据",
    },
    "no_netns": {
        "en": "holds are nftables rules in namespaces: start play --topology netns",
        "zh": "保持规则是命名空间里的 nftables 规则：请用 play --topology netns 启动",
    },
    "no_handshake_done": {
        "en": "the handshake is over: no {segment} is coming",
        "zh": "握手已经结束：不会再有 {segment}",
    },
    "no_fin": {
        "en": "{end} is {state}: it sends no FIN from here",
        "zh": "{end} 处于 {state}：从这里不会再发出 FIN",
    },
    "no_not_listening": {
        "en": "the listener is not listening: listen first",
        "zh": "监听套接字没有在监听：请先 listen",
    },
    "no_accepting": {
        "en": "the listener accepts already",
        "zh": "监听套接字已经在 accept",
    },
    "panel": {"en": "Play: your commands", "zh": "操作：你的命令"},
    "panel_note": {
        "en": "Each button runs one command on the real sockets, as typed at the play> prompt; "
        "greyed buttons make no sense in that end's state (hover for why). No undo.",
        "zh": "每个按钮在真实的套接字上执行一条命令，与在 play> 提示符下输入相同；"
        "灰色按钮在该端当前状态下没有意义（悬停查看原因）。没有撤销。",
    },
    "text_field": {"en": "text to send", "zh": "要发送的文本"},
    "session": {"en": "session", "zh": "会话"},
    "download": {"en": "save as lab (.toml)", "zh": "保存为实验 (.toml)"},
    "messages": {"en": "messages", "zh": "消息"},
    "browser_note": {
        "en": "play: the browser drives this session too; commands typed here still work",
        "zh": "play：浏览器也在驱动这个会话；在这里输入的命令仍然有效",
    },
    "play_title": {"en": "Play: drive a connection by hand", "zh": "手动驱动一条连接"},
    "play_summary": {
        "en": "your commands, the kernel's states, the RFC model's prediction",
        "zh": "你的命令、内核的状态、RFC 模型的预测",
    },
}


def play_text(key: str, lang: str, **values: object) -> str:
    """The play text ``key`` in ``lang``, with ``{name}`` filled from ``values``."""
    text = PLAY_TEXTS[key][pick(lang)]
    return text.format(**values) if values else text


def play_texts(key: str, **values: object) -> dict[str, str]:
    """``key`` in every language (what a language-neutral record keeps)."""
    return {lang: play_text(key, lang, **values) for lang in ("en", "zh")}
