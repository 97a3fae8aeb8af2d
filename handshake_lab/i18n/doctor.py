"""The words of ``doctor``'s lines, in English and Chinese: the IPv6 findings (``topo.ipv6``
decides which) and the machine's basics (ss, uvloop, root, nft, capture, tracefs).

Each entry is a template filled with the finding's values (``{which}``, ``{error}``...). A
reason a lower layer gives (``{reason}``: a path, a kernel option) is quoted as it is."""

from __future__ import annotations

from collections.abc import Mapping

from handshake_lab.i18n.lang import pick

DOCTOR_TEXTS: dict[str, dict[str, str]] = {
    "ss_missing": {
        "en": "not found - labs cannot run: apt install iproute2",
        "zh": "未找到 - 实验无法运行：apt install iproute2",
    },
    "uvloop_missing": {
        "en": "missing - --loop uvloop unavailable: pip install uvloop",
        "zh": "缺少 - 无法使用 --loop uvloop：pip install uvloop",
    },
    "root_yes": {"en": "yes", "zh": "是"},
    "root_no": {
        "en": "no (uid {uid}): loopback labs still work",
        "zh": "否（uid {uid}）：环回上的实验照样能运行",
    },
    "nft_ok": {"en": "available", "zh": "可用"},
    "nft_missing": {
        "en": "not found - no packet holds: apt install nftables",
        "zh": "未找到 - 无法扣住报文段：apt install nftables",
    },
    "capture_root": {"en": "AF_PACKET available", "zh": "可以使用 AF_PACKET"},
    "capture_userns": {
        "en": "in --topology netns (user namespace); not on loopback (root)",
        "zh": "在 --topology netns 中可用（用户命名空间）；环回上不行（需要 root）",
    },
    "capture_none": {
        "en": "needs root: no packet lists or --pcap",
        "zh": "需要 root：没有报文段列表，也不能用 --pcap",
    },
    "trace_missing": {
        "en": "{reason} - no transition stream; polling only",
        "zh": "{reason} - 没有状态转换流；只能轮询",
    },
    # The netns line (topo.caps.NetnsRoute) and the tracefs line (observe.trace.trace_facts).
    "netns_root": {
        "en": "root with {detail}: network namespaces available",
        "zh": "root，使用 {detail}：可以使用网络命名空间",
    },
    "netns_userns": {
        "en": "not root: runs in a private user namespace ({detail}): namespaces, nft holds, "
        "sysctls and capture work; no transition stream (tracefs needs real root)",
        "zh": "不是 root：在私有的用户命名空间里运行（{detail}）：网络命名空间、nft 扣留、"
        "sysctl 和抓包都能用；没有状态转换流（tracefs 需要真正的 root）",
    },
    "netns_no_ip": {
        "en": "ip not found: install iproute2 (apt install iproute2); without it no "
        "--topology netns, no packet holds and no per-namespace sysctls",
        "zh": "未找到 ip：请安装 iproute2（apt install iproute2）；没有它就不能用 "
        "--topology netns，不能扣住报文段，也不能按命名空间设置 sysctl",
    },
    "netns_no_userns": {
        "en": "not root and unprivileged user namespaces are unavailable ({detail}; some "
        "distributions block them, e.g. Ubuntu >= 23.10): run as root (sudo) for "
        "--topology netns, the packet holds and per-namespace sysctls",
        "zh": "不是 root，而且无法使用非特权用户命名空间（{detail}；有些发行版会禁止，例如 "
        "Ubuntu >= 23.10）：要用 --topology netns、扣住报文段和按命名空间设置 sysctl，"
        "请以 root（sudo）运行",
    },
    "netns_nft_missing": {
        "en": " (nft missing: packet holds unavailable)",
        "zh": "（缺少 nft：无法扣住报文段）",
    },
    "trace_not_root": {
        "en": "the kernel transition stream needs root: tracefs is root-only (running as "
        "uid {uid})",
        "zh": "内核的状态转换流需要 root：tracefs 只对 root 开放（当前 uid {uid}）",
    },
    "trace_in_userns": {
        "en": "in a user namespace: tracefs needs real root (init user namespace)",
        "zh": "处于用户命名空间中：tracefs 需要真正的 root（初始用户命名空间）",
    },
    "trace_no_tracefs": {
        "en": "this kernel has no tracefs (CONFIG_TRACING is off)",
        "zh": "这个内核没有 tracefs（CONFIG_TRACING 未打开）",
    },
    "trace_no_dir": {
        "en": "{root} does not exist: cannot mount tracefs there",
        "zh": "{root} 不存在：无法在那里挂载 tracefs",
    },
    "trace_will_mount": {
        "en": "tracefs is not mounted; it will be mounted at {root} on first use",
        "zh": "tracefs 尚未挂载；第一次使用时会挂载到 {root}",
    },
    "trace_no_tracepoint": {
        "en": "the kernel has no tracepoint sock:inet_sock_set_state (Linux >= 4.16)",
        "zh": "内核没有跟踪点 sock:inet_sock_set_state（需要 Linux >= 4.16）",
    },
    "trace_no_instances": {
        "en": "cannot create trace instances in {path} (not real root?)",
        "zh": "无法在 {path} 中创建跟踪实例（不是真正的 root？）",
    },
    "trace_missing_events": {
        "en": "tracefs ready at {root}; missing optional events: {events}",
        "zh": "tracefs 已就绪（{root}）；缺少可选事件：{events}",
    },
    "trace_ready": {
        "en": "tracefs ready at {root}",
        "zh": "tracefs 已就绪（{root}）",
    },
    "kernel_ok": {
        "en": "IPv6 in the kernel (/proc/sys/net/ipv6)",
        "zh": "内核支持 IPv6（/proc/sys/net/ipv6 存在）",
    },
    "kernel_missing": {
        "en": "no IPv6 in this kernel (no /proc/sys/net/ipv6: booted with ipv6.disable=1, "
        "or built without it)",
        "zh": "这个内核没有 IPv6（没有 /proc/sys/net/ipv6：启动参数带了 "
        "ipv6.disable=1，或者编译时就没有）",
    },
    "lo_ok": {
        "en": "usable on loopback (a socket bound to it)",
        "zh": "环回上可用（套接字已成功绑定到它）",
    },
    "lo_disabled": {
        "en": "IPv6 is switched off here (net.ipv6.conf.{which}.disable_ipv6 = 1): no ::1",
        "zh": "这里关闭了 IPv6（net.ipv6.conf.{which}.disable_ipv6 = 1）：没有 ::1",
    },
    "lo_error": {
        "en": "cannot bind ::1 ({error})",
        "zh": "无法绑定 ::1（{error}）",
    },
    "v6only_0": {
        "en": "net.ipv6.bindv6only = 0, Linux's default: an IPv6 listener on :: takes "
        "IPv4 clients too, as ::ffff:a.b.c.d (lab dual-stack shows it)",
        "zh": "net.ipv6.bindv6only = 0，这是 Linux 的默认值：监听 :: 的 IPv6 "
        "套接字也接受 IPv4 客户端，对端显示为 ::ffff:a.b.c.d（见实验 dual-stack）",
    },
    "v6only_1": {
        "en": "net.ipv6.bindv6only = {value}: IPv6 listeners take IPv6 only unless a "
        "program turns IPV6_V6ONLY off; lab dual-stack sets the option itself and runs the same",
        "zh": "net.ipv6.bindv6only = {value}：除非程序自己关闭 IPV6_V6ONLY，"
        "IPv6 监听套接字只接 IPv6；实验 dual-stack 自己设置这个选项，结果不受影响",
    },
    "netns_ok": {
        "en": "a new network namespace has IPv6 (disable_ipv6 = 0 there, ::1 bound): the "
        "labs' namespaces get 2001:db8:198:18::1 and ::2",
        "zh": "新的网络命名空间有 IPv6（那里 disable_ipv6 = 0，::1 绑定成功）："
        "实验的命名空间可以使用 2001:db8:198:18::1 和 ::2",
    },
    "netns_disabled": {
        "en": "a new network namespace starts with IPv6 off "
        "(net.ipv6.conf.default.disable_ipv6 = 1 there, e.g. the boot option "
        "ipv6.disable_ipv6=1): no IPv6 in the labs' namespaces",
        "zh": "新的网络命名空间一开始就关闭了 IPv6（那里 "
        "net.ipv6.conf.default.disable_ipv6 = 1，例如启动参数 ipv6.disable_ipv6=1）："
        "实验的命名空间里没有 IPv6",
    },
    "netns_error": {
        "en": "a new network namespace cannot bind ::1 ({error}): no IPv6 in the labs' namespaces",
        "zh": "新的网络命名空间无法绑定 ::1（{error}）：实验的命名空间里没有 IPv6",
    },
    "netns_unknown": {
        "en": "IPv6 in a new namespace not checked: {why}",
        "zh": "没有检查新命名空间里的 IPv6：{why}",
    },
    "six_all": {
        "en": "-6 labs run on loopback and in namespaces; so does lab dual-stack",
        "zh": "-6 实验在环回和命名空间中都能运行；实验 dual-stack 也一样",
    },
    "six_loopback": {
        "en": "-6 labs and lab dual-stack run on loopback only, not in namespaces",
        "zh": "-6 实验和实验 dual-stack 只能在环回上运行，不能在命名空间中运行",
    },
    "six_loopback_unknown": {
        "en": "-6 labs and lab dual-stack run on loopback; namespaces: see netns6",
        "zh": "-6 实验和实验 dual-stack 能在环回上运行；命名空间：见 netns6 一行",
    },
    "six_netns": {
        "en": "-6 labs and lab dual-stack run in namespaces only (--topology netns), "
        "not on loopback",
        "zh": "-6 实验和实验 dual-stack 只能在命名空间中运行（--topology netns），"
        "不能在环回上运行",
    },
    "six_none": {
        "en": "-6 labs and lab dual-stack cannot run here (refused before step 1); IPv4 "
        "labs are not affected",
        "zh": "这里无法运行 -6 实验和实验 dual-stack（第 1 步之前就会被拒绝）；IPv4 实验不受影响",
    },
}


def doctor_text(key: str, lang: str, values: Mapping[str, str] | None = None) -> str:
    """The text of finding ``key`` in ``lang`` (English where the language lacks it)."""
    texts = DOCTOR_TEXTS[key]
    return texts.get(pick(lang), texts["en"]).format(**(values or {}))
