// SPDX-License-Identifier: GPL-2.0
/* The agent's liveness probe: tells within a millisecond that mysqld died.
 *
 * - inet_sock_set_state: a socket in the agent's network namespace on mysql_port going
 *   to LISTEN names mysqld (the current task is the one calling listen()); LISTEN ->
 *   CLOSE on that port is reported. Sockets of other namespaces are ignored: the
 *   tracepoint is global.
 * - sched_process_exit: the exit of the watched thread group (group_dead) is reported.
 *   After SIGKILL this fires ~0.3 ms after the kill, before the kernel has freed
 *   mysqld's memory (the listening socket closes only after that, ~0.1 ms per MB).
 *
 * tp_btf programs need neither tracefs nor debugfs. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "probe.h"

#define TCP_LISTEN 10
#define TCP_CLOSE 7

/* Set by the agent at load time. */
const volatile __u32 mysql_port = 3306;
const volatile __u32 netns_ino = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

/* The tgid of mysqld: learned from its LISTEN, or written by the agent at start. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} watched SEC(".maps");

static __always_inline void emit(__u16 kind, __u32 tgid)
{
	struct probe_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	e->ktime_ns = bpf_ktime_get_ns();
	e->tgid = tgid;
	e->kind = kind;
	e->port = (__u16)mysql_port;
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_process_exit, struct task_struct *p, bool group_dead)
{
	__u32 key = 0;
	__u32 *w;

	if (!group_dead)
		return 0;
	w = bpf_map_lookup_elem(&watched, &key);
	if (!w || *w == 0 || p->tgid != *w)
		return 0;
	emit(PROBE_PROCESS_EXIT, *w);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_sock_state, const struct sock *sk, int oldstate, int newstate)
{
	__u32 key = 0, tgid;
	__u32 *w;
	__u16 port;

	if (sk->__sk_common.skc_net.net->ns.inum != netns_ino)
		return 0;
	/* On close skc_num is already 0: the local port is still in inet_sport. */
	port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (port != mysql_port)
		return 0;
	if (newstate == TCP_LISTEN) {
		tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_map_update_elem(&watched, &key, &tgid, BPF_ANY);
		emit(PROBE_LISTEN_OPEN, tgid);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		w = bpf_map_lookup_elem(&watched, &key);
		emit(PROBE_LISTEN_CLOSE, w ? *w : 0);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
