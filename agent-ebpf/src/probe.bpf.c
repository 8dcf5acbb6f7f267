// SPDX-License-Identifier: GPL-2.0
/* The agent's liveness probe: tells within a millisecond that mysqld died.
 *
 * - inet_sock_set_state: a socket in the agent's network namespace on mysql_port going
 *   to LISTEN names mysqld (the current task is the one calling listen()), but only a
 *   process of mysqld's uid named mysqld or mariadbd, and only while no mysqld is watched:
 *   another local user's listen on the port (say [::]:3306 with IPV6_V6ONLY beside
 *   mysqld's 0.0.0.0:3306) never replaces the watched process. LISTEN -> CLOSE on that
 *   port is reported only when the watched process itself closes it (after a SIGKILL the
 *   socket is closed in mysqld's own exit path). Sockets of other namespaces are ignored:
 *   the tracepoint is global. The agent checks every learned process again (/proc).
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
/* mysqld's uid; PROBE_ANY_UID when the agent could not tell. */
const volatile __u32 mysqld_uid = PROBE_ANY_UID;

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
	/* Gone: the next mysqld is learned from its LISTEN. */
	*w = 0;
	return 0;
}

/* Is the current task mysqld, as far as the kernel can tell here? */
static __always_inline int current_is_mysqld(void)
{
	char comm[16];
	__u32 uid = (__u32)bpf_get_current_uid_gid();

	if (mysqld_uid != PROBE_ANY_UID && uid != mysqld_uid)
		return 0;
	if (bpf_get_current_comm(comm, sizeof(comm)))
		return 0;
	/* "mysqld" or "mariadbd", NUL-terminated. */
	if (comm[0] == 'm' && comm[1] == 'y' && comm[2] == 's' && comm[3] == 'q' &&
	    comm[4] == 'l' && comm[5] == 'd' && comm[6] == 0)
		return 1;
	if (comm[0] == 'm' && comm[1] == 'a' && comm[2] == 'r' && comm[3] == 'i' &&
	    comm[4] == 'a' && comm[5] == 'd' && comm[6] == 'b' && comm[7] == 'd' && comm[8] == 0)
		return 1;
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
	tgid = bpf_get_current_pid_tgid() >> 32;
	w = bpf_map_lookup_elem(&watched, &key);
	if (!w)
		return 0;
	if (newstate == TCP_LISTEN) {
		if (*w == 0 && current_is_mysqld())
			*w = tgid;
		/* mysqld listening again (another address family) is still news. */
		if (*w == tgid)
			emit(PROBE_LISTEN_OPEN, tgid);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		if (*w != 0 && *w == tgid)
			emit(PROBE_LISTEN_CLOSE, tgid);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
